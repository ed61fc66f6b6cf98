"""The FastAPI application: routers, the web page, safety middleware and error shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException

from app.api import native, openai_compat
from app.api.errors import AnswerFailed, Busy, RequestRejected, error_body, error_response
from app.api.guard import RequestGuard
from app.api.mcp import mount_mcp
from app.api.security import page_headers
from app.api.service import AnswerService
from app.api.validation import SURROGATE
from app.config import Settings

# FastAPI (0.165+) makes a span for every request once a tracer provider is installed: the
# page's health polls would each be a trace, a passage request's `url.query` would carry the
# question's text, and `question` would sit under `POST /api/chat`, which Phoenix lists as an
# "unknown" step with no input or output. Off: a question is the root of its trace, as in the
# terminal chat and MCP (docs/tracing.md).
REQUEST_TELEMETRY: TelemetryConfig = {"tracing": False}


def create_app(service: AnswerService, settings: Settings, *, loopback: bool) -> FastAPI:
    """`loopback`: the server is bound to a loopback address, so requests must name one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.use_loop(asyncio.get_running_loop())
        service.start_following()
        async with mcp_sessions():
            yield
        service.close()

    # Room for the longest question and history the limits allow, JSON-escaped.
    body_limit = max(
        1 << 20, 8 * (settings.serve_max_question_chars + settings.serve_max_history_chars)
    )
    app = FastAPI(
        title="localrag",
        summary="Chat with your documents: OpenAI-compatible and native streaming APIs.",
        # The interactive docs load their scripts from a CDN: not offline, so off.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        telemetry=REQUEST_TELEMETRY,
    )
    app.state.service = service
    app.state.settings = settings
    # Host, token and body checks, before any route reads anything (CORS, added after it, runs
    # before it: a browser's preflight carries no token).
    app.add_middleware(
        RequestGuard, body_limit=body_limit, loopback=loopback, token=settings.api_token
    )
    if settings.serve_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serve_cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            # What a cited page's picture says about itself (native.passage_page).
            expose_headers=["X-Pages", "X-Passage-Marked", "X-Passage-Box"],
        )
    app.include_router(openai_compat.router)
    app.include_router(native.router)
    # The MCP server at /mcp (Streamable HTTP), behind the same guard as every other route.
    mcp_sessions = mount_mcp(app, service, body_limit)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    page = resources.files("app.api").joinpath("static/index.html").read_text("utf-8")
    headers = page_headers(page)

    # The page holds no data and must load before anyone can type a token into it, so it is
    # the one route served without the token (`guard.UNGUARDED`); everything it shows comes
    # from guarded routes.
    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Errors under /v1 in OpenAI's shape (its clients show `error.message`); elsewhere
    FastAPI's `{"detail": ...}`. Validation errors never echo the input back."""

    def respond(
        request: Request, status: int, message: str, param: str | None, headers: Any = None
    ) -> JSONResponse:
        return error_response(request.url.path, status, message, param, headers)

    @app.exception_handler(RequestRejected)
    async def rejected(request: Request, exc: RequestRejected) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return respond(request, exc.status, exc.message, exc.param, headers)

    @app.exception_handler(AnswerFailed)
    async def failed(request: Request, exc: AnswerFailed) -> JSONResponse:
        return respond(request, exc.status, exc.message, None)  # a whole answer that broke off

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return respond(request, exc.status_code, str(exc.detail), None, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                # Bad JSON is located by character offset: the body as a whole is what to fix.
                "loc": ["body"] if error["type"] == "json_invalid" else list(error["loc"]),
                # pydantic's own words for a str holding a lone surrogate, made ours
                # (`validation.Text` says it of the fields pydantic lets through).
                "msg": SURROGATE if error["type"] == "string_unicode" else error["msg"],
                "type": error["type"],
            }
            for error in exc.errors()
        ]
        message = "; ".join(f"{_field(p['loc'])}: {p['msg']}" for p in problems)
        if request.url.path.startswith("/v1/"):
            first = _field(problems[0]["loc"]) if problems else None
            body: dict[str, Any] = {"error": error_body(422, message, first)}
        else:
            body = {"detail": problems, "message": message}
        return JSONResponse(body, status_code=422)


def _field(loc: list[Any]) -> str:
    """("body", "messages", 0, "content") -> "messages[0].content"; bad JSON -> "body"."""
    parts = [p for p in loc if p != "body"] or ["body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
