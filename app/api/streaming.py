"""Server-sent events out of an async iterator, with a hook that runs however the response ends.

Both streaming routes decide their status (404, 413, 503...) before the first byte, and
`/v1/chat/completions` answers JSON or SSE depending on the body, so they return this response
rather than FastAPI's generator routes; the wire format is FastAPI's own `format_sse_event`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def sse(data: Any, event: str | None = None) -> bytes:
    """One event; `data` as compact JSON (non-ASCII text kept as is), or a raw string."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return format_sse_event(data_str=text, event=event)


def sse_comment(text: str) -> bytes:
    return format_sse_event(comment=text)


class EventStream(StreamingResponse):
    """`text/event-stream` that is never cached or buffered by a proxy.

    `on_close` runs when the response ends for any reason: finished, failed, the client gone
    (Starlette then cancels the iterator, which stops the chain), or never started at all.
    """

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(frames, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
