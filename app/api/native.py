"""The native API: `POST /api/chat` streams typed events, `GET /api/chains`, `GET /api/health`,
`GET /api/passages/{chunk_id}?context=N&query=Q` (a cited passage with the text around it, and
its relevance to Q), `GET /api/passages/{chunk_id}/page.png?width=W` (the page it was cited from,
as a picture: PDFs and images), `GET /api/files` (every file's status: `python -m app.ingest
--files --json`, a page at a time), `GET /api/library` (sources with their files per status,
OCR totals, the skipped and failed files with reasons, and the running sync's live progress).

Events of `/api/chat`, in order (each `data:` is JSON):

    queued    {"ahead": n, "wait_seconds": s}    only while it waits for a turn: at once, then
                                                 each time its place moves; `ahead` is its
                                                 place now, `wait_seconds` the expected wait
                                                 at the pace answers have had here
    question  {"standalone_question": "..."}     what retrieval searched for
    sources   {"not_found": bool, "sources": [{"number", "file", "page", "score",
                                               "chunk_ids", "passage"}]}
                                                 passage: the text of its chunks the model
                                                 was given, joined by "\n...\n"
    token     {"text": "..."}                    answer text, already sanitized
    replaced  {"text": "...", "reason": "..."}   the answer so far is withdrawn (it stated what
                                                 the sources do not hold): `text`, the sources'
                                                 own sentences, stands instead; show `reason`
    done      {"answer": "...", "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}
                                                 usage: zeros when the model was not called
    error     {"message": "...", "status": n}    instead of done, when the answer broke off

While nothing else is sent (waiting in the queue, or for the model's first token), an SSE
comment (`: keep-alive`) goes out every few seconds, so proxies do not cut the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import get_service
from app.api.errors import AnswerFailed
from app.api.events import Finished, Question, Queued, Replaced, Sources, Token
from app.api.lookup import LibraryLookup
from app.api.service import AnswerRequest, AnswerService, PreparedAnswer, Turn
from app.api.streaming import EventStream, sse
from app.api.validation import Text
from app.retrieval.page_images import DEFAULT_WIDTH, MAX_WIDTH, MIN_WIDTH
from app.retrieval.passages import MAX_CONTEXT
from app.store.catalog import Status

router = APIRouter(prefix="/api", tags=["native"])


class HistoryMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: Text


class ChatRequest(BaseModel):
    """Unknown fields are refused, so a misspelt one is named in the 422 instead of ignored."""

    model_config = ConfigDict(extra="forbid")
    question: Text = Field(min_length=1)
    history: list[HistoryMessage] = Field(default_factory=list)
    chain: Text | None = None
    where: list[Text] = Field(
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


@router.get("/passages/{chunk_id}")
async def passage(
    chunk_id: str,
    service: Annotated[AnswerService, Depends(get_service)],
    context: Annotated[int, Query(ge=0, le=MAX_CONTEXT)] = 1,
    query: Annotated[
        Text | None,
        Query(description="the question searched for: `score` is the passage's relevance to it"),
    ] = None,
) -> dict[str, Any]:
    """A cited chunk (a source's `chunk_ids`) with `context` chunks of its file on each side:
    `text`, `before`, `after`, `source`, `page`, and `score` (its relevance to `query`, made as
    retrieval makes it; null without one). 404 naming `chunk_id` when it is gone (its file
    changed since the answer): never another chunk's text."""
    found = await asyncio.to_thread(LibraryLookup(service).passage, chunk_id, context, query)
    return found.as_json()


@router.get(
    "/passages/{chunk_id}/page.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the page as PNG"}},
)
async def passage_page(
    chunk_id: str,
    service: Annotated[AnswerService, Depends(get_service)],
    width: Annotated[int, Query(ge=MIN_WIDTH, le=MAX_WIDTH)] = DEFAULT_WIDTH,
) -> Response:
    """The page a cited chunk comes from, as PNG at most `width` pixels wide: a PDF page drawn
    from the file on disk, the passage marked on it when its text layer holds it
    (`X-Passage-Marked`; `X-Passage-Box`: left,top,right,bottom in pixels), or an image file
    (a TIFF's frame) scaled down. 404 for a chunk that is gone, a file that is not a PDF or
    image or not on disk; 409 when the file changed since it was indexed. Never another page."""
    image = await asyncio.to_thread(LibraryLookup(service).page_image, chunk_id, width)
    return Response(
        image.png,
        media_type="image/png",
        headers={
            "Cache-Control": "private, no-cache",
            "X-Content-Type-Options": "nosniff",
            "X-Pages": str(image.pages),
            "X-Passage-Marked": "true" if image.marked else "false",
        }
        | ({"X-Passage-Box": ",".join(map(str, image.mark_box))} if image.mark_box else {}),
    )


@router.get("/files")
def files(
    service: Annotated[AnswerService, Depends(get_service)],
    status: Annotated[list[Status] | None, Query(description="only files with this status")] = None,
    source: Annotated[
        list[Text] | None,
        Query(description="only this source, folder or file (LABEL or LABEL/PATH, as listed)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return service.files(source, status, limit, offset)


@router.get("/library")
def library(
    service: Annotated[AnswerService, Depends(get_service)],
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="skipped/failed files per page")
    ] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    return service.library(limit, offset)


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
                yield sse({"ahead": event.ahead, "wait_seconds": event.wait_seconds}, "queued")
            elif isinstance(event, Question):
                yield sse({"standalone_question": event.standalone}, "question")
            elif isinstance(event, Sources):
                sources = [s.as_json() for s in event.sources]
                yield sse({"not_found": event.not_found, "sources": sources}, "sources")
            elif isinstance(event, Token):
                yield sse({"text": event.text}, "token")
            elif isinstance(event, Replaced):
                yield sse({"text": event.text, "reason": event.reason}, "replaced")
            elif isinstance(event, Finished):
                yield sse({"answer": event.answer, "usage": event.usage.as_json()}, "done")
    except AnswerFailed as exc:
        yield sse({"message": exc.message, "status": exc.status}, "error")
