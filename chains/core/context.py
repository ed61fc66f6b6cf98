"""Retrieved chunks as numbered, delimited context that text inside a chunk cannot break out of."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from langchain_core.documents import Document

PASSAGE_GAP = "\n...\n"  # between two chunks of one source: they need not be neighbours


@dataclass(frozen=True)
class Source:
    number: int
    source: str
    page: int | None
    chunks: tuple[Document, ...]

    @property
    def label(self) -> str:
        return self.source + (f" (page {self.page})" if self.page is not None else "")


def number_sources(documents: list[Document]) -> list[Source]:
    """One number per file and page, in order of first appearance (best match first)."""
    grouped: dict[tuple[str, int | None], list[Document]] = {}
    for doc in documents:
        key = (str(doc.metadata.get("source", "unknown")), doc.metadata.get("page"))
        grouped.setdefault(key, []).append(doc)
    return [
        Source(number, source, page, tuple(chunks))
        for number, ((source, page), chunks) in enumerate(grouped.items(), 1)
    ]


def format_context(documents: list[Document]) -> str:
    """Each source inside <source> tags. Chunk text is escaped (&, <, >), so a document that
    contains "</source>" or fake tags stays data inside its own block."""
    blocks = []
    for src in number_sources(documents):
        body = PASSAGE_GAP.join(escape(chunk.page_content, quote=False) for chunk in src.chunks)
        blocks.append(f'<source id="{src.number}" name="{escape(src.label)}">\n{body}\n</source>')
    return "\n\n".join(blocks)
