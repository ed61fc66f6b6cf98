"""Documents to chunks: settings-driven size and overlap, a token cap per model, stable ids."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from app.text.writing_systems import WIDE_CHARACTER

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
    chunks = [c for c in splitter.split_documents(documents) if c.page_content.strip()]
    chunks = _cap_tokens(chunks, policy)
    seen: Counter[tuple[str, str]] = Counter()
    for index, chunk in enumerate(chunks):
        source = chunk.metadata["source"]
        key = (source, chunk.page_content)
        chunk.id = chunk_id(source, chunk.page_content, seen[key])
        seen[key] += 1
        chunk.metadata["chunk_index"] = index
        chunk.metadata["chunk_count"] = len(chunks)
    return chunks


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
