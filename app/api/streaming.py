"""Server-sent events out of an async iterator: made apart from the sending, kept alive while
nothing is said, and with a hook that runs however the response ends.

Both streaming routes decide their status (404, 413, 503...) before the first byte, and
`/v1/chat/completions` answers JSON or SSE depending on the body, so they return this response
rather than FastAPI's generator routes; the wire format is FastAPI's own `format_sse_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

HEARTBEAT_SECONDS = 5.0  # a comment after this long without a frame (proxies cut at 30-60 s)


def sse(data: Any, event: str | None = None) -> bytes:
    """One event; `data` as compact JSON (non-ASCII text kept as is), or a raw string."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return format_sse_event(data_str=text, event=event)


def sse_comment(text: str) -> bytes:
    return format_sse_event(comment=text)


KEEP_ALIVE = sse_comment("keep-alive")


class EventStream(StreamingResponse):
    """`text/event-stream` that is never cached or buffered by a proxy, and never waits for
    its reader.

    The frames are made by a task of their own and buffered here, so the answer goes on at the
    model's pace whatever the client does: a client that reads slowly, or not at all, holds the
    model's turn only as long as the answer takes, not as long as it takes to read it. (The
    buffer holds at most one answer, which MAX_ANSWER_TOKENS bounds; a connection whose client
    takes nothing for a while is dropped by the server, see `app/api/connection.py`.)

    While no frame comes for `heartbeat` seconds (waiting in the queue, or for the model's
    first token), a comment goes out: clients skip comments, proxies see a live stream.

    `on_close` runs when the response ends for any reason: finished, failed, the client gone
    (Starlette then cancels the response, and with it the frames' task, which stops the chain),
    or never started at all.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        on_close: Callable[[], None],
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(
            self._relay(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.frames = frames
        self.on_close = on_close
        self.heartbeat = heartbeat
        self.producer: asyncio.Task[None] | None = None

    async def _produce(self, buffer: asyncio.Queue[bytes | None]) -> None:
        try:
            async for frame in self.frames:
                buffer.put_nowait(frame)
        finally:
            buffer.put_nowait(None)  # the end

    async def _relay(self) -> AsyncIterator[bytes]:
        buffer: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.producer = asyncio.create_task(self._produce(buffer))
        while True:
            try:
                frame = await asyncio.wait_for(buffer.get(), self.heartbeat)
            except TimeoutError:
                yield KEEP_ALIVE
                continue
            if frame is None:
                break
            yield frame
        await self.producer  # a failure in the frames is the response's failure

    async def _stop_producer(self) -> None:
        task = self.producer
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._stop_producer()
            finally:
                self.on_close()
