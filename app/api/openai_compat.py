"""OpenAI-compatible routes: `GET /v1/models` lists the chains, `POST /v1/chat/completions`
answers with one (`model` = chain name), streamed as `chat.completion.chunk` events or whole.

Clients that only show text get the sources as a numbered block at the end of the answer;
programs get them as `sources` (file, page, score) in the last chunk and in a whole response.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_service
from app.api.errors import AnswerFailed, RequestRejected
from app.api.events import Finished, Sources, Token
from app.api.service import AnswerRequest, AnswerService, PreparedAnswer, Turn
from app.api.streaming import EventStream, sse, sse_comment

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
STARTED = int(time.time())
T = TypeVar("T")

SOURCES_TITLE = "Sources:"
NEAREST_TITLE = "Nearest sources:"
# The block this module appends; clients send it back in the history, where it is dropped.
SOURCES_BLOCK = re.compile(r"\n\n(?:Sources|Nearest sources):\n(?:- \[\d+\] [^\n]*(?:\n|$))+\s*$")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; parameters that steer a model (temperature, max_tokens, tools...) are
    accepted and ignored: the server's settings and the chain decide them."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(description="A chain name, as GET /v1/models lists them.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    where: list[str] = Field(
        default_factory=list,
        description="localrag: only search some files (file=PATH, folder=PATH, type=EXT).",
    )


def answer_request(body: ChatCompletionRequest) -> AnswerRequest:
    """The last message is the question; earlier user and assistant messages are the history.
    System messages are ignored: the chain's own system prompt is what keeps answers grounded."""
    turns: list[Turn] = []
    for index, message in enumerate(body.messages):
        if message.role not in ("user", "assistant"):
            continue
        text = _text(message, index)
        if message.role == "assistant":
            text = SOURCES_BLOCK.sub("", text)
        turns.append(Turn(message.role, text))
    if not turns or turns[-1].role != "user" or body.messages[-1].role != "user":
        raise RequestRejected(
            400,
            "The last message must come from the user: it is the question to answer.",
            "messages",
        )
    return AnswerRequest(turns[-1].content, turns[:-1], body.model, body.where)


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise RequestRejected(
                400,
                f"Only text content is supported, not {part.type!r}.",
                f"messages[{index}].content",
            )
        parts.append(part.text)
    return "\n".join(parts)


def sources_block(sources: Sources) -> str:
    if not sources.sources:
        return ""
    title = NEAREST_TITLE if sources.not_found else SOURCES_TITLE
    lines = [f"- [{s.number}] {s.label}" for s in sources.sources]
    return "\n\n" + title + "\n" + "\n".join(lines)


class Completion:
    """The fields every chunk (and a whole response) of one completion share."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self.head("chat.completion.chunk") | {
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ]
        }


@router.get("/models")
def list_models(service: Annotated[AnswerService, Depends(get_service)]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": spec.name, "object": "model", "created": STARTED, "owned_by": "localrag"}
            for spec in service.chains()
        ],
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    service: Annotated[AnswerService, Depends(get_service)],
) -> Response:
    prepared = service.prepare(answer_request(body))
    completion = Completion(prepared.chain_name)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventStream(_chunks(prepared, completion, include_usage), prepared.release)
    try:
        answer = await _unless_client_leaves(request, prepared.collect())
    except ClientGone:
        return Response(status_code=499)  # nobody reads it; the generation has stopped
    finally:
        prepared.release()
    content = answer.answer + sources_block(answer.sources)
    return JSONResponse(
        completion.head("chat.completion")
        | {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": answer.usage.as_json() if answer.usage else None,
            "sources": [s.as_json() for s in answer.sources.sources],
        }
    )


async def _chunks(
    prepared: PreparedAnswer, completion: Completion, include_usage: bool
) -> AsyncIterator[bytes]:
    yield sse(completion.chunk({"role": "assistant", "content": ""}))
    sources = Sources([], True)
    try:
        async for event in prepared.events():
            if isinstance(event, Token):
                yield sse(completion.chunk({"content": event.text}))
            elif isinstance(event, Sources):
                sources = event
            elif isinstance(event, Finished):
                block = sources_block(sources)
                if block:
                    yield sse(completion.chunk({"content": block}))
                last = completion.chunk({}, finish_reason="stop")
                yield sse(last | {"sources": [s.as_json() for s in sources.sources]})
                if include_usage and event.usage:
                    yield sse(
                        completion.head("chat.completion.chunk")
                        | {"choices": [], "usage": event.usage.as_json()}
                    )
            else:
                yield sse_comment(type(event).__name__.lower())  # clients skip comments
    except AnswerFailed as exc:
        # OpenAI's own mid-stream error shape: the openai client raises APIError with it.
        yield sse({"error": error_body(exc.status, exc.message)})
    yield sse("[DONE]")


class ClientGone(Exception):
    pass


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (checked 4 times a second)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


ERROR_TYPES = {
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    503: ("server_error", "server_busy"),
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind, code = ERROR_TYPES.get(
        status, ("invalid_request_error" if status < 500 else "server_error", None)
    )
    return {"message": message, "type": kind, "param": param, "code": code}
