"""Retrieval on the sample corpus with the real embedded model: every mode finds the file that
answers, the threshold separates answerable questions, filters and the keyword index work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document

from app.config import Settings
from app.indexing.sync import sync_collection
from app.models.embeddings import ModelEmbeddings, build_embeddings
from app.models.providers import ProviderChoice
from app.paths import SAMPLE_QUESTIONS
from app.retrieval.retriever import DocumentRetriever, SourceFilter, allowed_sources
from app.store.chroma import collection_name, connect
from app.store.keyword_index import open_keyword_index
from app.store.library import Library, open_collection

pytestmark = pytest.mark.integration

QUESTIONS = [json.loads(line) for line in SAMPLE_QUESTIONS.read_text().splitlines() if line]
# Expected sources are relative to DOCS_DIR; stored names start with its label, `docs`.
for q in QUESTIONS:
    q["source"] = q["source"] and f"docs/{q['source']}"
ANSWERABLE = [q for q in QUESTIONS if q["source"]]
OUTSIDE = [q for q in QUESTIONS if not q["source"]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_model_cache: Path) -> Iterator[tuple]:
    store = tmp_path_factory.mktemp("store")
    settings = Settings(
        chroma_dir=store,
        model_cache_dir=shared_model_cache,
        _env_file=None,  # type: ignore[call-arg]
    )
    embeddings = build_embeddings(settings, ProviderChoice("local", "", "test"))
    from app.paths import SAMPLE_DOCS_DIR

    sync_collection(settings, [SAMPLE_DOCS_DIR], embeddings)
    collection = open_collection(connect(settings), settings, embeddings.info)
    index = open_keyword_index(settings, collection)  # the sync wrote it
    yield settings, embeddings, collection, index
    index.close()


def retriever(corpus: tuple, **fields) -> DocumentRetriever:
    _, embeddings, collection, index = corpus
    return DocumentRetriever(
        collection=collection, embeddings=embeddings, keyword_index=index, **fields
    )


@pytest.mark.parametrize("mode", ["similarity", "mmr", "hybrid"])
def test_each_mode_puts_the_answering_file_in_the_top_k(corpus: tuple, mode: str) -> None:
    threshold = corpus[1].info.default_threshold
    r = retriever(corpus, mode=mode, k=4, fetch_k=20, score_threshold=threshold)
    misses = [
        q["question"]
        for q in ANSWERABLE
        if q["source"] not in {d.metadata["source"] for d in r.invoke(q["question"])}
    ]
    # 35 questions; a miss or two is the model's limit, more is a broken mode.
    assert len(misses) <= 2, misses


def test_every_document_carries_its_relevance_score(corpus: tuple) -> None:
    docs = retriever(corpus, k=3).invoke(ANSWERABLE[0]["question"])
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1 for s in scores)


def test_threshold_marks_questions_outside_the_corpus_as_not_found(corpus: tuple) -> None:
    r = retriever(corpus, k=3, score_threshold=corpus[1].info.default_threshold)
    for q in OUTSIDE:
        docs = r.invoke(q["question"])
        assert docs, "the nearest passages are still returned"
        assert all(d.metadata.get("below_threshold") for d in docs), q["question"]
    found = r.invoke(ANSWERABLE[0]["question"])
    assert not any(d.metadata.get("below_threshold") for d in found)


def test_hybrid_finds_an_exact_rare_term_by_keyword(corpus: tuple) -> None:
    _, _, _, index = corpus
    hits = index.search("Kittiwake Dawn", limit=3)
    assert hits
    sources = {
        d.metadata["source"] for d in retriever(corpus, mode="hybrid", k=3).invoke("Kittiwake Dawn")
    }
    assert "docs/ferry/timetable.csv" in sources or "docs/ferry/agm-minutes-2024.docx" in sources


def test_filters_restrict_retrieval_to_a_folder_a_file_or_a_type(corpus: tuple) -> None:
    _, _, _, index = corpus
    known = index.sources()
    question = "When was the observatory built?"
    # Paths count from inside the source (`ferry`, as before there were several sources) or
    # from the library (`docs/ferry`).
    for text, check in [
        ("folder=ferry", lambda s: s.startswith("docs/ferry/")),
        ("folder=docs/observatory", lambda s: s.startswith("docs/observatory/")),
        ("type=pdf", lambda s: s.endswith(".pdf")),
        ("file=town/harbour-notice.txt", lambda s: s == "docs/town/harbour-notice.txt"),
        ("file=*.md", lambda s: s.endswith(".md")),
    ]:
        sources = allowed_sources([SourceFilter.parse(text)], known)
        for mode in ("similarity", "hybrid"):
            docs = retriever(corpus, mode=mode, k=4, allowed_sources=sources).invoke(question)
            assert docs, text
            assert all(check(d.metadata["source"]) for d in docs), (text, mode)


def test_a_filter_that_matches_nothing_returns_nothing(corpus: tuple) -> None:
    sources = allowed_sources([SourceFilter.parse("type=xlsx")], corpus[3].sources())
    assert retriever(corpus, allowed_sources=sources).invoke("anything") == []


def test_bad_filter_syntax_says_what_to_type() -> None:
    with pytest.raises(ValueError, match="folder=PATH"):
        SourceFilter.parse("colour=blue")


def test_sync_keeps_the_keyword_index_in_step_with_the_vectors(tmp_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from app.models.embeddings import EmbeddingModelInfo
    from app.store.chroma import ids_where

    settings = Settings(chroma_dir=tmp_path / "s", _env_file=None)  # type: ignore[call-arg]
    fake = ModelEmbeddings(
        EmbeddingModelInfo("fake", "fake-16"),
        lambda: DeterministicFakeEmbedding(size=16),
        batch_size=8,
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper feeds the gulls.")
    (docs / "b.txt").write_text("Ferries cross the estuary twice an hour.")
    sync_collection(settings, [docs], fake)
    library = Library.find(connect(settings), collection_name(settings, fake.info))
    assert library is not None
    collection = library.collection()
    assert collection is not None
    index = open_keyword_index(settings, collection)
    assert index.ids() == set(collection.get()["ids"])
    assert len(index.ids()) == 2
    assert index.behind(library.record) == []  # chat finds it current: nothing to scan

    (docs / "b.txt").unlink()
    (docs / "c.txt").write_text("The observatory opens on clear Fridays.")
    sync_collection(settings, [docs], fake)
    library.reload()
    assert index.ids() == set(collection.get()["ids"])
    assert len(index.ids()) == 2
    assert index.behind(library.record) == []
    assert index.search("ferries estuary", 5) == []
    assert index.search("observatory Fridays", 5)

    # Writing a chunk twice changes nothing: ids are unique.
    again = collection.get(include=["documents", "metadatas"])
    chunks = [
        Document(id=i, page_content=t, metadata=m)
        for i, t, m in zip(again["ids"], again["documents"], again["metadatas"], strict=True)
    ]
    assert index.add(chunks) == 0
    assert index.db.execute("SELECT count(*) FROM entries").fetchone() == (2,)

    # An index that is behind (lost here; in server mode, written on another machine) catches
    # up by chunk id on the sources that changed, and only those.
    index.close()
    for path in index.path.parent.glob(index.path.name + "*"):
        path.unlink()
    lost = open_keyword_index(settings, collection)
    assert lost.behind(library.record) == ["docs"]
    assert lost.catch_up(collection, library.record) == 1
    assert lost.ids() == set(ids_where(collection, {"root": "docs"}))
    assert lost.behind(library.record) == []
    assert lost.search("observatory Fridays", 5)
    lost.close()
