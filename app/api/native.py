"""The native API: `POST /api/chat` streams typed events, `GET /api/chains`, `GET /api/health`.

Events of `/api/chat`, in order (each `data:` is JSON):

    queued    {"ahead": n}                       only when it has to wait for a turn
    question  {"standalone_question": "..."}     what retrieval searched for
    sources   {"not_found": bool, "sources": [{"number", "file", "page", "score"}]}
    token     {"text": "..."}                    answer text, already sanitized
    done      {"answer": "...", "usage": {...} or null when the model reports no counts}
    error     {"message": "...", "status": n}    instead of done, when the answer broke off
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_service
from app.api.errors import AnswerFailed
from app.api.events import Finished, Question, Queued, Sources, Token
from app.api.service import AnswerRequest, AnswerService, PreparedAnswer, Turn
from app.api.streaming import EventStream, sse

router = APIRouter(prefix="/api", tags=["native"])


class HistoryMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """Unknown fields are refused, so a misspelt one is named in the 422 instead of ignored."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    history: list[HistoryMessage] = Field(default_factory=list)
    chain: str | None = None
    where: list[str] = Field(
        default_factory=list, description="file=PATH (wildcards allowed), folder=PATH or type=EXT"
    )


@router.get("/health")
def health(service: Annotated[AnswerService, Depends(get_service)]) -> dict[str, Any]:
    return service.health()


@router.get("/chains")
def chains(service: Annotated[AnswerService, Depends(get_service)]) -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "default": spec.name == service.default_chain,
        }
        for spec in service.chains()
    ]


@router.post("/chat", response_class=EventStream, status_code=200)
async def chat(
    body: ChatRequest, service: Annotated[AnswerService, Depends(get_service)]
) -> EventStream:
    prepared = service.prepare(
        AnswerRequest(
            body.question,
            [Turn(m.role, m.content) for m in body.history],
            body.chain,
            body.where,
        )
    )
    return EventStream(_events(prepared), prepared.release)


async def _events(prepared: PreparedAnswer) -> AsyncIterator[bytes]:
    try:
        async for event in prepared.events():
            if isinstance(event, Queued):
                yield sse({"ahead": event.ahead}, "queued")
            elif isinstance(event, Question):
                yield sse({"standalone_question": event.standalone}, "question")
            elif isinstance(event, Sources):
                sources = [s.as_json() for s in event.sources]
                yield sse({"not_found": event.not_found, "sources": sources}, "sources")
            elif isinstance(event, Token):
                yield sse({"text": event.text}, "token")
            elif isinstance(event, Finished):
                usage = event.usage.as_json() if event.usage else None
                yield sse({"answer": event.answer, "usage": usage}, "done")
    except AnswerFailed as exc:
        yield sse({"message": exc.message, "status": exc.status}, "error")
