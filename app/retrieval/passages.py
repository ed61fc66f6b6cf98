"""Passages by chunk id, with the text around them, and a file's text as the library holds it:
what a citation resolves to (the MCP server's `get_passage` and file resources).

Neighbouring chunks of one file share up to CHUNK_OVERLAP characters; joined here, the shared
text is shown once. A chunk id that is gone (the file changed since the answer) is `None`,
never another chunk's text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.store.base import ChunkCollection, Selection, StoredChunk

MAX_CONTEXT = 5  # neighbouring chunks on each side a caller may ask for
# Shorter shared ends are chance ("e", ". "), not the splitter's overlap.
MIN_OVERLAP = 8


@dataclass(frozen=True)
class Passage:
    chunk_id: str
    source: str
    page: int | None
    text: str
    before: str  # the file's text just before it: `context` chunks, overlap removed
    after: str
    chunk_index: int | None
    chunk_count: int | None
    score: float | None = None  # relevance to a query, when one was given (else None)

    def as_json(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "source": self.source,
            "page": self.page,
            "text": self.text,
            "before": self.before,
            "after": self.after,
            "chunk_index": self.chunk_index,
            "chunk_count": self.chunk_count,
            "score": self.score,
        }


def find_passage(collection: ChunkCollection, chunk_id: str, context: int = 1) -> Passage | None:
    """The chunk and `context` chunks of the same file on each side; None when it is gone."""
    found = collection.get([chunk_id])
    if not found:
        return None
    chunk = found[0]
    source = str(chunk.metadata.get("source", "unknown"))
    index = chunk.metadata.get("chunk_index")
    before: list[StoredChunk] = []
    after: list[StoredChunk] = []
    if context > 0 and isinstance(index, int):
        wanted = {
            chunk_id: position
            for chunk_id, metadata in collection.rows(Selection(sources=[source]))
            if isinstance(position := metadata.get("chunk_index"), int)
            and 0 < abs(position - index) <= context
        }
        neighbours = sorted(collection.get(list(wanted)), key=lambda c: wanted[c.id])
        before = [c for c in neighbours if wanted[c.id] < index]
        after = [c for c in neighbours if wanted[c.id] > index]
    return Passage(
        chunk_id=chunk.id,
        source=source,
        page=_page(chunk),
        text=chunk.text,
        before=_before(before, chunk.text),
        after=_after(chunk.text, after),
        chunk_index=index if isinstance(index, int) else None,
        chunk_count=_int(chunk.metadata.get("chunk_count")),
    )


def file_chunks(collection: ChunkCollection, source: str) -> list[StoredChunk]:
    """A stored file's chunks in their order in the file; [] when the library has no such file."""
    order = {
        chunk_id: _int(metadata.get("chunk_index")) or 0
        for chunk_id, metadata in collection.rows(Selection(sources=[source]))
    }
    return sorted(collection.get(list(order)), key=lambda c: order[c.id])


def file_text(chunks: list[StoredChunk], page: int | None = None) -> str:
    """The text of the chunks (of one page, when `page` is given), overlaps shown once."""
    text = ""
    for chunk in chunks:
        if page is not None and _page(chunk) != page:
            continue
        text = join(text, chunk.text)
    return text


def pages(chunks: list[StoredChunk]) -> list[int]:
    return sorted({p for c in chunks if (p := _page(c)) is not None})


def join(first: str, second: str) -> str:
    """Two neighbouring chunks as one text: the longest end of `first` that `second` starts
    with (the splitter's overlap) appears once."""
    if not first:
        return second
    for size in range(min(len(first), len(second)), MIN_OVERLAP - 1, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return first + "\n" + second


def _before(chunks: list[StoredChunk], text: str) -> str:
    joined = ""
    for chunk in chunks:
        joined = join(joined, chunk.text)
    whole = join(joined, text)
    return whole[: len(whole) - len(text)] if whole.endswith(text) else joined


def _after(text: str, chunks: list[StoredChunk]) -> str:
    whole = text
    for chunk in chunks:
        whole = join(whole, chunk.text)
    return whole[len(text) :]


def _page(chunk: StoredChunk) -> int | None:
    return _int(chunk.metadata.get("page"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
