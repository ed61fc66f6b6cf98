"""The first thing every request meets, as soon as its headers are in: the Host check (on a
loopback bind), the token, and the body: at most `body_limit` bytes, UTF-8, JSON of a sane
depth. Each refusal is a JSON error in the API's format (OpenAI's under /v1), and nothing of an
unauthenticated request's body is read.

How long a client may take to send its headers and body, and how many connections are open at
once, is bounded below this, in the connection itself (`app/api/connection.py`)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.api.security import TOKEN_MISSING, foreign_host, token_accepted
from app.api.validation import body_problem

UNGUARDED = {"/"}  # the page: it holds no data, and it is where a person types the token


class RequestGuard:
    def __init__(
        self, app: ASGIApp, *, body_limit: int, loopback: bool, token: SecretStr | None
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.loopback = loopback
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)

        async def refuse(
            status: int,
            message: str,
            param: str | None = None,
            extra: Mapping[str, str] | None = None,
        ) -> None:
            response = error_response(path, status, message, param, extra)
            await response(scope, receive, send)

        # A refused request's body is never read: the connection ends with the refusal.
        close = {"Connection": "close"}
        if self.loopback and (problem := foreign_host(headers.get("host", ""))):
            await refuse(400, problem, extra=close)
            return
        if path not in UNGUARDED and not token_accepted(
            self.token, headers.get("authorization", "")
        ):
            await refuse(401, TOKEN_MISSING, extra=close | {"WWW-Authenticate": "Bearer"})
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return

        too_large = (
            f"The request body is larger than this server takes ({self.body_limit:,} bytes: "
            "room for the longest question and history SERVE_MAX_QUESTION_CHARS and "
            "SERVE_MAX_HISTORY_CHARS allow)."
        )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_limit:
            await refuse(413, too_large, extra=close)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its request was complete
            body = message.get("body", b"")
            size += len(body)
            if size > self.body_limit:
                await refuse(413, too_large, extra=close)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        if problem := body_problem(whole):
            await refuse(422, problem, "body")
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()  # after the body: only the disconnect is left to hear

        await self.app(scope, replay, send)
