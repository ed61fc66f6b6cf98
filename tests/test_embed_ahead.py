"""The embedding thread of a sync (app/indexing/embed_ahead.py): batches come back in the
order given, no more than `limit` chunks are embedded ahead of the writes, and after a
failure nothing more is sent to the model."""

from __future__ import annotations

import threading

import pytest
from langchain_core.documents import Document

from app.indexing.embed_ahead import EmbedAhead

pytestmark = pytest.mark.unit


def docs(*texts: str) -> list[Document]:
    return [Document(t) for t in texts]


def test_batches_come_back_in_order_and_run_outside_the_callers_thread() -> None:
    threads: set[int] = set()

    def embed(texts: list[str]) -> list[list[float]]:
        threads.add(threading.get_ident())
        return [[float(len(t))] for t in texts]

    ahead: EmbedAhead[str] = EmbedAhead(embed, limit=100)
    for tag in "abc":
        assert ahead.submit(docs(tag * 2, tag * 3), tag) == []
    written = list(ahead.drain())
    ahead.close()
    assert [b.tag for b in written] == ["a", "b", "c"]
    assert [b.vectors for b in written] == [[[2.0], [3.0]]] * 3
    assert threading.get_ident() not in threads


def test_no_more_than_the_limit_is_embedded_ahead_of_the_writes() -> None:
    gate = threading.Event()

    def embed(texts: list[str]) -> list[list[float]]:
        gate.wait(10)
        return [[1.0] for _ in texts]

    ahead: EmbedAhead[int] = EmbedAhead(embed, limit=4)
    assert ahead.submit(docs("a", "b"), 1) == []
    assert ahead.submit(docs("c", "d"), 2) == []
    gate.set()
    due = ahead.submit(docs("e", "f"), 3)  # 6 > 4: the first batch must be written now
    assert [b.tag for b in due] == [1]
    assert ahead.chunks_ahead == 4
    ahead.close()


def test_after_a_failure_no_later_batch_reaches_the_model() -> None:
    calls: list[list[str]] = []
    started = threading.Event()
    release = threading.Event()

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        started.set()
        release.wait(10)
        raise TimeoutError("the model server timed out")

    ahead: EmbedAhead[int] = EmbedAhead(embed, limit=100)
    ahead.submit(docs("a"), 1)
    ahead.submit(docs("b"), 2)
    started.wait(10)
    release.set()
    with pytest.raises(TimeoutError):
        list(ahead.drain())
    ahead.close()
    assert calls == [["a"]]


def test_requests_are_cut_from_the_stream_and_vectors_go_back_to_their_batches() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        return [[float(len(t))] for t in texts]

    ahead: EmbedAhead[str] = EmbedAhead(embed, limit=100, request_size=4)
    ahead.submit(docs("a", "bb", "ccc"), "first")
    ahead.submit(docs("dddd", "eeeee", "f"), "second")
    ahead.submit(docs("gg", "hhh", "i"), "third")
    written = list(ahead.drain())
    ahead.close()
    assert [len(c) for c in calls] == [4, 4, 1]  # as many requests as 9 texts need
    # A batch split between two requests may come in two parts: in order, with its tag.
    tags = [b.tag for b in written]
    assert tags == sorted(tags, key=["first", "second", "third"].index)
    by_tag: dict[str, list[list[float]]] = {}
    for b in written:
        assert len(b.vectors) == len(b.chunks)
        by_tag.setdefault(b.tag, []).extend(b.vectors)
    assert by_tag == {
        "first": [[1.0], [2.0], [3.0]],
        "second": [[4.0], [5.0], [1.0]],
        "third": [[2.0], [3.0], [1.0]],
    }


def test_a_short_request_goes_when_the_writes_wait_for_it() -> None:
    ahead: EmbedAhead[int] = EmbedAhead(lambda t: [[1.0] for _ in t], limit=2, request_size=64)
    assert ahead.idle
    assert ahead.submit(docs("a", "b"), 1) == []
    assert ahead.idle  # 2 chunks held for a fuller request: the model still waits for more
    due = ahead.submit(docs("c"), 2)  # over the limit: batch 1 is needed now
    assert [b.tag for b in due] == [1]
    assert [b.tag for b in ahead.drain()] == [2]
    ahead.close()
