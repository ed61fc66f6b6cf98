"""Chunking: size and overlap from settings, a token cap for the model, stable ids."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document

from app.indexing.splitter import ChunkPolicy, chunk_id, split_documents

pytestmark = pytest.mark.unit

TEXT = "\n\n".join(f"Paragraph {i}: the ferry leaves at {i}:15 from pier {i}." for i in range(40))


def doc(text: str = TEXT, **metadata: object) -> Document:
    return Document(text, metadata={"source": "ferry/notes.md", **metadata})


def test_chunks_respect_size_and_carry_index_count_and_source() -> None:
    chunks = split_documents([doc()], ChunkPolicy(chunk_size=200, chunk_overlap=40))
    assert len(chunks) > 5
    assert all(len(c.page_content) <= 200 for c in chunks)
    assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert {c.metadata["chunk_count"] for c in chunks} == {len(chunks)}
    assert {c.metadata["source"] for c in chunks} == {"ferry/notes.md"}


def test_ids_are_deterministic_and_unique_even_for_repeated_text() -> None:
    repeated = doc("Same line.\n\n" * 3 + TEXT)
    first = split_documents([repeated], ChunkPolicy(chunk_size=60, chunk_overlap=0))
    second = split_documents([repeated], ChunkPolicy(chunk_size=60, chunk_overlap=0))
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)


def test_id_depends_on_source_and_text() -> None:
    assert chunk_id("a.md", "x", 0) != chunk_id("b.md", "x", 0)
    assert chunk_id("a.md", "x", 0) != chunk_id("a.md", "y", 0)
    assert chunk_id("a.md", "x", 0) != chunk_id("a.md", "x", 1)


def test_page_metadata_survives_splitting() -> None:
    chunks = split_documents(
        [doc("alpha " * 50, page=2), doc("beta " * 50, page=3)],
        ChunkPolicy(chunk_size=100, chunk_overlap=0),
    )
    assert {c.metadata["page"] for c in chunks if "alpha" in c.page_content} == {2}
    assert {c.metadata["page"] for c in chunks if "beta" in c.page_content} == {3}


def test_token_cap_resplits_chunks_the_model_would_truncate() -> None:
    # Digits cost one "token" each here, like word pieces for numbers: 300 characters of
    # digits fit the character budget but not a 64-token model.
    def count(text: str) -> int:
        return sum(ch.isdigit() for ch in text) + len(text.split()) + 2

    digits = " ".join("1234567890" for _ in range(27))
    policy = ChunkPolicy(chunk_size=300, chunk_overlap=0, max_tokens=64, count_tokens=count)
    chunks = split_documents([doc(digits)], policy)
    assert len(chunks) > 1
    assert all(count(c.page_content) <= 64 for c in chunks)


def test_token_cap_leaves_room_for_the_task_prefix() -> None:
    def count(text: str) -> int:
        return len(text.split()) + 2

    words = " ".join(f"w{i}" for i in range(200))
    policy = ChunkPolicy(
        chunk_size=5000,
        chunk_overlap=0,
        max_tokens=50,
        count_tokens=count,
        prefix="search document please: ",
    )
    chunks = split_documents([doc(words)], policy)
    assert all(count(policy.prefix + c.page_content) <= 50 for c in chunks)


# --- Scripts without spaces between words --------------------------------------------------

CHINESE = "".join(
    f"第{i}段：岚溪镇的班车每天{i}点从汽车站出发，经过茶市广场，开往云岫县城。"
    f"车程大约五十五分钟，遇到暴雨会停开；乘客可以带自行车上车！"
    for i in range(1, 30)
)  # one long paragraph, no newline anywhere, as pasted text often is


def test_chinese_is_cut_at_sentence_ends_not_mid_sentence() -> None:
    chunks = split_documents([doc(CHINESE)], ChunkPolicy(chunk_size=300, chunk_overlap=0))
    assert len(chunks) > 3
    # Every chunk ends where a sentence or clause ends, never in the middle of a word.
    assert all(c.page_content[-1] in "。！？；，" for c in chunks), [
        c.page_content[-5:] for c in chunks
    ]


def test_a_chinese_character_counts_as_three_in_the_chunk_size() -> None:
    from app.indexing.splitter import chunk_length

    assert chunk_length("ferry timetable") == len("ferry timetable")  # English: unchanged
    assert chunk_length("班车时刻表") == 15
    chunks = split_documents([doc(CHINESE)], ChunkPolicy(chunk_size=300, chunk_overlap=0))
    # 300 "characters" hold about 100 Chinese characters, not 300 (which would be 3x the text
    # of an English chunk of the same size, and over MiniLM's 256 word pieces).
    assert max(len(c.page_content) for c in chunks) < 120  # digits count once
    assert all(chunk_length(c.page_content) <= 300 for c in chunks)


def test_english_splits_exactly_as_the_default_splitter_does() -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    text = TEXT + "\n" + " ".join(f"word{i}" for i in range(400))
    ours = split_documents([doc(text)], ChunkPolicy(chunk_size=200, chunk_overlap=40))
    default = RecursiveCharacterTextSplitter(chunk_size=200, chunk_overlap=40).split_text(text)
    assert [c.page_content for c in ours] == default


def test_a_table_split_over_chunks_repeats_its_header_and_keeps_page_and_ocr() -> None:
    header = "| ferry | leaves | pier |\n| --- | --- | --- |"
    rows = [f"| Gull {i} | {i:02d}:15 | 码头{i} |" for i in range(30)]
    table = header + "\n" + "\n".join(rows)
    text = f"Timetable, winter.\n\n{table}\n\nNo ferry on 25 December."
    chunks = split_documents(
        [doc(text, page=2, ocr=True)], ChunkPolicy(chunk_size=200, chunk_overlap=40)
    )
    tables = [c.page_content for c in chunks if c.page_content.startswith("|")]
    assert len(tables) > 2
    assert all(t.startswith(header + "\n| Gull") for t in tables)
    assert [r for t in tables for r in t.split("\n")[2:]] == rows  # every row once, in order
    assert chunks[0].page_content == "Timetable, winter."
    assert chunks[-1].page_content == "No ferry on 25 December."
    assert {(c.metadata["page"], c.metadata["ocr"]) for c in chunks} == {(2, True)}


def test_a_table_piece_over_the_token_cap_is_cut_between_rows_with_its_header() -> None:
    header = "| code | meaning |\n| --- | --- |"
    rows = [f"| 9A-{i} | berth {i} |" for i in range(12)]
    table = header + "\n" + "\n".join(rows)

    def words(text: str) -> int:  # a token counter for the test
        return len(text.split())

    policy = ChunkPolicy(chunk_size=2000, chunk_overlap=0, max_tokens=40, count_tokens=words)
    chunks = split_documents([doc(table)], policy)
    assert len(chunks) > 1
    assert all(c.page_content.startswith(header + "\n") for c in chunks)
    assert all(words(c.page_content) <= 40 for c in chunks)
