"""Documents to chunks: settings-driven size and overlap, a token cap per model, stable ids.
A Markdown table is cut between rows only, and every piece starts with its header row."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.text.writing_systems import WIDE_CHARACTER
from loaders.tables import split_markdown_table, table_segments

# Paragraphs, lines, then the sentence and clause ends of scripts that put no space between
# words (Chinese, Japanese), then spaces. The CJK ones are zero-width look-behinds, so "。" stays
# at the end of its sentence; text without them (English) splits exactly as it did before.
SEPARATORS = ["\n\n", "\n", "(?<=[。！？｡])", "(?<=[；])", "(?<=[，、])", " ", ""]
# A wide character (Han, kana, Hangul, full-width) counts as 3, so a chunk of CHUNK_SIZE
# "characters" holds about the same amount of text in either script.
WIDE_WEIGHT = 3


def chunk_length(text: str) -> int:
    """Length in Latin-character equivalents: plain `len` for text without wide characters."""
    return len(text) + (WIDE_WEIGHT - 1) * len(WIDE_CHARACTER.findall(text))


@dataclass(frozen=True)
class ChunkPolicy:
    chunk_size: int  # characters
    chunk_overlap: int  # characters
    max_tokens: int | None = None  # the embedding model's input limit, when it is known
    count_tokens: Callable[[str], int] | None = None  # the embedding model's own tokenizer
    prefix: str = ""  # the task prefix the model sees before every chunk


def chunk_id(source: str, text: str, occurrence: int) -> str:
    """The same chunk of the same file gets the same id on every run; identical passages in one
    file are told apart by their occurrence number."""
    digest = hashlib.sha256(f"{source}\x1f{occurrence}\x1f{text}".encode()).hexdigest()
    return digest[:40]


def split_documents(documents: list[Document], policy: ChunkPolicy) -> list[Document]:
    """Split one file's Documents; every chunk gets `chunk_index`, `chunk_count` and an id."""
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=policy.chunk_size,
        chunk_overlap=policy.chunk_overlap,
        length_function=chunk_length,
        separators=SEPARATORS,
        is_separator_regex=True,
    )
    chunks: list[Document] = []
    for document in documents:
        for text, is_table in _segments(document.page_content, policy.chunk_size):
            piece = Document(page_content=text, metadata=dict(document.metadata))
            if is_table:
                chunks += _cap_table_tokens(piece, policy)
            else:
                chunks += _cap_tokens(splitter.split_documents([piece]), policy)
    chunks = [c for c in chunks if c.page_content.strip()]
    seen: Counter[tuple[str, str]] = Counter()
    for index, chunk in enumerate(chunks):
        source = chunk.metadata["source"]
        key = (source, chunk.page_content)
        chunk.id = chunk_id(source, chunk.page_content, seen[key])
        seen[key] += 1
        chunk.metadata["chunk_index"] = index
        chunk.metadata["chunk_count"] = len(chunks)
    return chunks


def _segments(text: str, chunk_size: int) -> list[tuple[str, bool]]:
    """Prose and table pieces of one Document's text (a table over `chunk_size` in pieces
    that each repeat its header); text without a table line is one prose piece, as before."""
    if "|" not in text:
        return [(text, False)]
    return table_segments(text, chunk_size, chunk_length)


def _cap_table_tokens(piece: Document, policy: ChunkPolicy) -> list[Document]:
    """A table piece the embedding model would truncate, cut again between rows by its
    tokens, each part with the header; a single row still over the limit stays whole."""
    count, limit = policy.count_tokens, policy.max_tokens
    if count is None or limit is None:
        return [piece]
    budget = limit - (count(policy.prefix) - count(""))  # count() includes [CLS] and [SEP]
    if count(piece.page_content) <= budget:
        return [piece]
    return [
        Document(page_content=part, metadata=dict(piece.metadata))
        for part in split_markdown_table(piece.page_content, budget, count)
    ]


def _cap_tokens(chunks: list[Document], policy: ChunkPolicy) -> list[Document]:
    """Re-split any chunk the embedding model would truncate (MiniLM reads 256 word pieces;
    digits and code need many more pieces per character than prose)."""
    count, limit = policy.count_tokens, policy.max_tokens
    if count is None or limit is None:
        return chunks
    budget = limit - (count(policy.prefix) - count(""))  # count() includes [CLS] and [SEP]
    fine = RecursiveCharacterTextSplitter(
        chunk_size=budget,
        chunk_overlap=min(32, budget // 8),
        length_function=count,
        separators=SEPARATORS,
        is_separator_regex=True,
    )
    capped: list[Document] = []
    for chunk in chunks:
        if count(chunk.page_content) <= budget:
            capped.append(chunk)
        else:
            capped.extend(fine.split_documents([chunk]))
    return capped
