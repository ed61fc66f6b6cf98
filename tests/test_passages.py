"""A citation resolves to its passage: the chunk, the text around it in its file with the
splitter's overlaps shown once, and nothing (never another chunk's text) once it is gone."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

from app.indexing.splitter import ChunkPolicy, split_documents
from app.retrieval.passages import file_chunks, file_text, find_passage, join
from tests.fakes import MemoryCollection

pytestmark = pytest.mark.unit

SENTENCES = [
    f"Sentence number {i} of the harbour log says the tide was {i} metres." for i in range(40)
]
TEXT = " ".join(SENTENCES)


def stored(text: str = TEXT, source: str = "docs/log.txt") -> MemoryCollection:
    chunks = split_documents(
        [Document(page_content=text, metadata={"source": source})], ChunkPolicy(200, 60)
    )
    collection = MemoryCollection("c", "m", 2)
    collection.upsert(chunks, [[1.0, 0.0]] * len(chunks))
    return collection


def test_a_passage_sits_in_its_files_text() -> None:
    collection = stored()
    chunks = file_chunks(collection, "docs/log.txt")
    assert len(chunks) > 5
    assert file_text(chunks) == TEXT  # overlaps shown once: the file's text again
    middle = chunks[3]
    passage = find_passage(collection, middle.id, context=2)
    assert passage is not None
    assert passage.text == middle.text
    assert passage.chunk_index == 3
    assert passage.before + passage.text + passage.after in TEXT
    assert len(passage.before) > 100
    assert len(passage.after) > 100


def test_the_first_chunk_has_nothing_before_and_context_zero_nothing_around() -> None:
    collection = stored()
    first = file_chunks(collection, "docs/log.txt")[0]
    passage = find_passage(collection, first.id, context=1)
    assert passage is not None
    assert passage.before == ""
    assert passage.after
    alone = find_passage(collection, first.id, context=0)
    assert alone is not None
    assert (alone.before, alone.after) == ("", "")


def test_a_gone_chunk_is_none_and_other_files_never_join() -> None:
    collection = stored()
    other = stored("Bakery prices. Rye bread costs three crowns.", "docs/bakery.txt")
    collection.upsert(list(_documents(other)), [[1.0, 0.0]])
    assert find_passage(collection, "0" * 40) is None
    bakery = file_chunks(collection, "docs/bakery.txt")
    passage = find_passage(collection, bakery[0].id, context=5)
    assert passage is not None
    assert (passage.before, passage.after) == ("", "")


def test_join_needs_a_real_overlap() -> None:
    assert join("the tide was high at noon", "high at noon the ferry left") == (
        "the tide was high at noon the ferry left"
    )
    assert join("ends with e", "e starts") == "ends with e\ne starts"  # one letter is chance


def _documents(collection: MemoryCollection) -> list[Document]:
    return [chunk.document() for chunk in collection.chunks.values()]
