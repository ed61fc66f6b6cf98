"""The retriever against LangChain's standard retriever tests in every mode, plus what the
standard tests do not cover: search parameters per call, the true cosine relevance of hybrid
keyword-only hits, and one threshold for every mode. A small collection with bag-of-words
vectors (texts sharing words are similar), so relevance is known in advance, opened through the
store seam: in Chroma and in the in-memory store (`tests.fakes.MemoryStore`), with the same
results."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests
from pydantic import ValidationError

from app.config import Settings
from app.retrieval.retriever import DocumentRetriever
from app.store import open_store
from app.store.base import ChunkStore
from app.store.keyword_index import KeywordIndex
from tests.fakes import BagOfWords, MemoryStore, bag_of_words_vector

pytestmark = pytest.mark.integration

DIM = 64
TEXTS = {
    "harbour": "The harbour wall, the Long Mole, is 612 metres long and shelters the ferry quay.",
    "ferry": "The first ferry leaves the quay at seven; the ferry crosses the estuary hourly.",
    "fares": "Ferry fares: adults pay four crowns, children two, bicycles travel free.",
    "observatory": "The observatory on Corvane Hill opened in 1911 with a 610 mm mirror.",
    "library": "The town library lends books, maps and telescopes to residents.",
    "market": "The market fills the square every Saturday with fish, bread and cheese.",
    "lighthouse": "The lighthouse keeper lights the lamp at dusk and logs every passing ship.",
    "school": "The school by the church teaches two hundred children in six classes.",
    "festival": "The kite festival fills the beach with colour on the first Sunday of May.",
    "kittiwake": (
        "Moorings, nets, ropes, buoys, tides, gulls, anchors, sails and oars; "
        "berth nine belongs to the Kittiwake."
    ),
}


def cosine(a: str, b: str) -> float:
    u, v = bag_of_words_vector(a, DIM), bag_of_words_vector(b, DIM)
    return sum(x * y for x, y in zip(u, v, strict=True)) / math.sqrt(
        sum(x * x for x in u) * sum(y * y for y in v)
    )


def open_test_store(kind: str, directory: Path) -> ChunkStore:
    """The store the retriever reads through the seam: Chroma as the app opens it, or the
    in-memory one (any store must give the retriever the same answers)."""
    if kind == "memory":
        return MemoryStore()
    return open_store(Settings(chroma_dir=directory))


@pytest.fixture(scope="module", params=["memory", "chroma"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    directory: Path = tmp_path_factory.mktemp("standard")
    chunk_store = open_test_store(request.param, directory)
    collection = chunk_store.create_collection("standard", "test/bag-of-words", DIM)
    embeddings = BagOfWords(DIM)
    collection.upsert(
        [
            Document(id=name, page_content=text, metadata={"source": f"{name}.txt"})
            for name, text in TEXTS.items()
        ],
        embeddings.embed_documents(list(TEXTS.values())),
    )
    index = KeywordIndex(directory / "keywords.sqlite3")
    index.add(
        Document(id=name, page_content=text, metadata={"source": f"{name}.txt", "root": "test"})
        for name, text in TEXTS.items()
    )
    yield {"collection": collection, "embeddings": embeddings, "keyword_index": index}
    index.close()
    chunk_store.close()


class StandardTests(RetrieversIntegrationTests):
    mode = "similarity"

    @pytest.fixture(autouse=True)
    def _store(self, store: dict[str, Any]) -> None:
        self.store = store

    @property
    def retriever_constructor(self) -> type[DocumentRetriever]:
        return DocumentRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return self.store | {"mode": self.mode, "k": 2, "fetch_k": 6}

    @property
    def retriever_query_example(self) -> str:
        return "When does the ferry leave the quay?"


class TestStandardSimilarity(StandardTests):
    mode = "similarity"


class TestStandardMMR(StandardTests):
    mode = "mmr"


class TestStandardHybrid(StandardTests):
    mode = "hybrid"


def make(store: dict[str, Any], **fields: Any) -> DocumentRetriever:
    return DocumentRetriever(**store, **fields)


@pytest.mark.parametrize("mode", ["similarity", "mmr", "hybrid"])
def test_every_search_parameter_can_be_given_per_call(store: dict[str, Any], mode: str) -> None:
    retriever = make(store, mode=mode, k=4, fetch_k=10)
    question = "ferry quay"
    assert len(retriever.invoke(question, k=1)) == 1
    assert len(retriever.invoke(question)) == 4  # the call did not change the retriever
    only = retriever.invoke(question, allowed_sources=frozenset({"fares.txt"}))
    assert [d.metadata["source"] for d in only] == ["fares.txt"]
    strict = retriever.invoke(question, score_threshold=0.99)
    assert strict
    assert all(d.metadata["below_threshold"] for d in strict)
    as_mmr = retriever.invoke(question, mode="mmr", mmr_lambda=0.0, k=2)
    assert len(as_mmr) == 2


def test_bad_search_parameters_are_refused_with_their_names(store: dict[str, Any]) -> None:
    retriever = make(store)
    with pytest.raises(ValueError, match="Unknown search parameter top_n: the retriever takes k"):
        retriever.invoke("ferry", top_n=2)
    with pytest.raises(ValidationError, match="k"):
        retriever.invoke("ferry", k=0)
    with pytest.raises(ValidationError, match="mode"):
        retriever.invoke("ferry", mode="fuzzy")


def test_hybrid_keyword_only_hits_carry_their_true_cosine_relevance(store: dict[str, Any]) -> None:
    question = "Kittiwake ferry"
    # fetch_k 2: the vector search alone stops before the Kittiwake chunk, BM25 finds it.
    vector_only = make(store, mode="similarity", k=2, fetch_k=2).invoke(question)
    assert "kittiwake" not in {d.id for d in vector_only}
    hybrid = make(store, mode="hybrid", k=3, fetch_k=2, score_threshold=-1.0).invoke(question)
    by_id = {d.id: d for d in hybrid}
    assert "kittiwake" in by_id
    for chunk_id, doc in by_id.items():
        assert doc.metadata["score"] == pytest.approx(cosine(question, TEXTS[chunk_id]), abs=2e-4)
    assert by_id["kittiwake"].metadata["score"] != 0.0


def test_the_threshold_means_the_same_in_every_mode(store: dict[str, Any]) -> None:
    question = "Kittiwake ferry"
    kittiwake = cosine(question, TEXTS["kittiwake"])
    best = max(cosine(question, text) for text in TEXTS.values())
    assert kittiwake < best  # the keyword hit is a weak vector match
    above, below = kittiwake + 0.01, kittiwake - 0.01
    for mode in ("similarity", "mmr", "hybrid"):
        strict = make(store, mode=mode, k=10, fetch_k=10, score_threshold=above).invoke(question)
        assert strict, mode
        assert all(d.metadata["score"] >= above for d in strict), mode
        assert "kittiwake" not in {d.id for d in strict}, mode
        loose = make(store, mode=mode, k=10, fetch_k=10, score_threshold=below).invoke(question)
        assert "kittiwake" in {d.id for d in loose}, mode
        assert all(d.metadata["score"] >= below for d in loose), mode
