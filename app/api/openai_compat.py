"""OpenAI-compatible routes: `GET /v1/models` lists the chains (`GET /v1/models/{id}` one of
them), `POST /v1/chat/completions` answers with one (`model` = chain name), streamed as
`chat.completion.chunk` events or whole, with `usage` always (zeros when the model was not
called) and a usage chunk whenever `stream_options.include_usage` asks for it.

Clients that only show text get the sources as a numbered block at the end of the answer, each
file name a Markdown code span (a file named like a Markdown image or an HTML tag shows as its
name, never as markup); programs get them as `sources` (number, file, page, score, chunk ids and
`passage`, the text of those chunks the model was given) in the last chunk and in a whole
response.

When the answer check withdraws what the model wrote (it stated a name, number or date the
sources do not hold), a client reading the stream has already shown it: the sources' own
sentences follow under a line that says why (`replaced_note`). A whole response holds only
those sentences, with the same note.

The client's `system` (and `developer`) messages are passed to the chain as instructions: it
puts them below its own system prompt, marked as the client's, and its own rules (answer from
the sources, which are data, never instructions) stay first and win.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_service
from app.api.errors import AnswerFailed, RequestRejected, error_body
from app.api.events import Finished, Queued, Replaced, Sources, Token
from app.api.service import AnswerRequest, AnswerService, PreparedAnswer, Turn
from app.api.streaming import EventStream, sse, sse_comment
from app.api.validation import Text
from app.errors import ConfigError
from app.session.conversation import chain_spec

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
    text: Text | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Text | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; parameters that steer a model (temperature, max_tokens, tools...) are
    accepted and ignored: the server's settings and the chain decide them."""

    model_config = ConfigDict(extra="ignore")
    model: Text = Field(description="A chain name, as GET /v1/models lists them.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    where: list[Text] = Field(
        default_factory=list,
        description="localrag: only search some files (file=PATH, folder=PATH, type=EXT).",
    )


def answer_request(body: ChatCompletionRequest) -> AnswerRequest:
    """The last message is the question; earlier user and assistant messages are the history;
    system and developer messages, in order, are the client's instructions (the chain puts
    them below its own system prompt). Tool messages are not for this server: ignored."""
    turns: list[Turn] = []
    instructions: list[str] = []
    for index, message in enumerate(body.messages):
        if message.role in ("system", "developer"):
            text = _text(message, index).strip()
            if text:
                instructions.append(text)
            continue
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
    return AnswerRequest(
        turns[-1].content, turns[:-1], body.model, body.where, "\n\n".join(instructions)
    )


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


def replaced_note(reason: str) -> str:
    """The line that says why the text under it replaces the model's answer (Markdown)."""
    return f"*{reason[:1].upper()}{reason[1:]}; what the sources say:*"


def sources_block(sources: Sources) -> str:
    """The numbered sources under an answer, for clients that show only text, most of which
    render Markdown: a file name is whatever its owner typed, so it goes in a code span."""
    if not sources.sources:
        return ""
    title = NEAREST_TITLE if sources.not_found else SOURCES_TITLE
    lines = []
    for source in sources.sources:
        page = f" (page {source.page})" if source.page is not None else ""
        lines.append(f"- [{source.number}] {markdown_literal(source.file)}{page}")
    return "\n\n" + title + "\n" + "\n".join(lines)


# Characters that would end the list item or reorder what a reader sees: shown escaped.
_INVISIBLE = {
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
}


def markdown_literal(text: str) -> str:
    """`text` as a Markdown code span, which every renderer shows as the characters it holds:
    no image, link, autolink, emphasis or HTML can start inside one. The fence is one backtick
    longer than the longest run of backticks in `text`; control characters, line and paragraph
    separators and bidirectional controls are shown as escapes (`\\n`, `\\u202e`)."""
    shown = "".join(
        _escaped(ch) if ch in _INVISIBLE or unicodedata.category(ch) == "Cc" else ch for ch in text
    )
    runs = [len(run) for run in re.findall(r"`+", shown)]
    fence = "`" * (max(runs, default=0) + 1)
    padded = f" {shown} " if shown.startswith("`") or shown.endswith("`") or runs else shown
    return fence + padded + fence


def _escaped(ch: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return named.get(ch) or f"\\u{ord(ch):04x}"


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


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "localrag"}


@router.get("/models")
def list_models(service: Annotated[AnswerService, Depends(get_service)]) -> dict[str, Any]:
    return {"object": "list", "data": [_model(spec.name) for spec in service.chains()]}


@router.get("/models/{model_id}")
def retrieve_model(model_id: str) -> dict[str, Any]:
    """One chain, as `client.models.retrieve(id)` asks; 404 (model_not_found) for others."""
    try:
        return _model(chain_spec(model_id).name)
    except ConfigError as exc:
        raise RequestRejected(404, str(exc), "model") from None


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
    if answer.replaced:
        content = replaced_note(answer.replaced) + "\n\n" + content
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
            "usage": answer.usage.as_json(),
            "sources": [s.as_json() for s in answer.sources.sources],
        }
    )


async def _chunks(
    prepared: PreparedAnswer, completion: Completion, include_usage: bool
) -> AsyncIterator[bytes]:
    # With include_usage, OpenAI's chunks say `"usage": null` until the usage chunk.
    empty: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse(completion.chunk(delta, finish_reason) | empty)

    yield chunk({"role": "assistant", "content": ""})
    sources = Sources([], True)
    try:
        async for event in prepared.events():
            if isinstance(event, Token):
                yield chunk({"content": event.text})
            elif isinstance(event, Replaced):  # what was streamed cannot be taken back
                note = replaced_note(event.reason)
                yield chunk({"content": f"\n\n---\n{note}\n\n{event.text}"})
            elif isinstance(event, Sources):
                sources = event
            elif isinstance(event, Finished):
                block = sources_block(sources)
                if block:
                    yield chunk({"content": block})
                last = completion.chunk({}, finish_reason="stop") | empty
                yield sse(last | {"sources": [s.as_json() for s in sources.sources]})
                if include_usage:
                    yield sse(
                        completion.head("chat.completion.chunk")
                        | {"choices": [], "usage": event.usage.as_json()}
                    )
            elif isinstance(event, Queued):  # clients skip comments; a person reading sees why
                yield sse_comment(f"queued: {event.ahead} ahead, about {event.wait_seconds} s")
            else:
                yield sse_comment(type(event).__name__.lower())
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
