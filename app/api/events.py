"""What the HTTP API streams for one answer: typed events that the routes turn into SSE (native)
or OpenAI chunks. They are the answer stream's events (`chains.core.events`) plus what only a
server has: a place in the queue, numbered sources with scores, token usage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document

from chains.core.context import PASSAGE_GAP, number_sources


@dataclass(frozen=True)
class SourceRef:
    number: int
    file: str
    page: int | None
    score: float | None  # best cosine relevance among the source's chunks
    chunk_ids: tuple[str, ...] = ()  # its chunks in the answer's context, best first
    passage: str = ""  # those chunks' text as the model was given it (joined by PASSAGE_GAP)

    @property
    def label(self) -> str:
        return self.file + (f" (page {self.page})" if self.page is not None else "")

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "file": self.file,
            "page": self.page,
            "score": self.score,
            "chunk_ids": list(self.chunk_ids),
            "passage": self.passage,
        }


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class Queued:
    """Waiting for a turn; sent again each time the place moves."""

    ahead: int  # requests waiting before this one now
    wait_seconds: int  # expected wait for a turn, at the measured pace


@dataclass(frozen=True)
class Question:
    standalone: str  # the question as retrieval saw it (a follow-up rewritten)


@dataclass(frozen=True)
class Sources:
    sources: list[SourceRef]
    not_found: bool  # nothing reached the relevance threshold: these are only the nearest


@dataclass(frozen=True)
class Token:
    text: str  # already sanitized


@dataclass(frozen=True)
class Replaced:
    """The answer so far is withdrawn; `text` stands instead (already sanitized)."""

    text: str
    reason: str


@dataclass(frozen=True)
class Finished:
    answer: str
    usage: Usage  # summed over the model's calls; zeros when the model was not called


Event = Queued | Question | Sources | Token | Replaced | Finished


@dataclass(frozen=True)
class CompletedAnswer:
    answer: str
    sources: Sources
    usage: Usage
    replaced: str | None = None  # why the model's own answer was withdrawn (Replaced.reason)


def source_refs(context: list[Document]) -> list[SourceRef]:
    refs = []
    for src in number_sources(context):
        scores = [
            d.metadata["score"] for d in src.chunks if isinstance(d.metadata.get("score"), float)
        ]
        ids = tuple(str(d.id) for d in src.chunks if d.id)
        best = max(scores) if scores else None
        passage = PASSAGE_GAP.join(d.page_content for d in src.chunks)
        refs.append(SourceRef(src.number, src.source, src.page, best, ids, passage))
    return refs
