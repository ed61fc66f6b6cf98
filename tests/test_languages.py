"""Documents and questions in scripts without spaces: keyword terms, which questions the
embedding model covers, a fusion that a weak leg cannot drag down, and Chinese retrieval on the
embedded default (English-only MiniLM) as reliable as English."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.indexing.sync import sync_collection
from app.models.local import local_embeddings
from app.paths import SAMPLE_DOCS_ZH_DIR, SAMPLE_QUESTIONS_ZH
from app.retrieval.retriever import DocumentRetriever
from app.store import open_store
from app.store.keyword_index import KeywordIndex, index_terms, open_keyword_index, query_terms
from app.store.library import find_library
from app.text.writing_systems import covers
from tests.fakes import BagOfWords, MemoryStore

# Unit tests below carry their own mark; the module's default is the integration layer (the
# embedded model, Chroma).
pytestmark = pytest.mark.integration

QUESTIONS = [json.loads(line) for line in SAMPLE_QUESTIONS_ZH.read_text("utf-8").splitlines()]
# Expected sources are relative to the folder; stored names start with its label, `docs-zh`.
for q in QUESTIONS:
    q["source"] = q["source"] and f"docs-zh/{q['source']}"
ANSWERABLE = [q for q in QUESTIONS if q["source"]]
OUTSIDE = [q for q in QUESTIONS if not q["source"]]


# --- Terms -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_chinese_becomes_characters_and_pairs_english_stays_words() -> None:
    assert query_terms("听雨桥有多长？") == [
        *["听", "雨", "桥", "有", "多", "长"],
        *["听雨", "雨桥", "桥有", "有多", "多长"],
    ]
    assert query_terms("When does the Ferry leave?") == ["when", "does", "the", "ferry", "leave"]
    assert index_terms("The ferries leave at 07:15.") == "The ferries leave at 07:15."
    # Digits and Latin words next to Han characters are terms of their own.
    assert query_terms("2024年 Lamplighter号") == ["2024", "年", "lamplighter", "号"]


@pytest.mark.unit
def test_a_pdf_line_break_inside_a_chinese_word_does_not_split_it() -> None:
    assert "竹编" in query_terms("一件竹\n编作品")
    assert "作品" in query_terms("一件竹\n编作品")


@pytest.mark.unit
def test_an_index_written_with_older_terms_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:  # the index as the first version wrote it
        old.execute(
            "CREATE VIRTUAL TABLE chunks USING fts5(text, chunk_id UNINDEXED, source UNINDEXED, "
            "type UNINDEXED, tokenize='porter unicode61')"
        )
        old.execute("INSERT INTO chunks VALUES ('听雨桥全长86米', 'c1', 'a.md', 'md')")
    index = KeywordIndex(path)
    assert index.ids() == set()  # so every source is caught up again, with the new terms
    index.close()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "covered"),
    [
        ("How long is the Long Mole?", True),
        ("Café crème brûlée", True),
        ("听雨桥有多长？", False),
        ("休館日はいつですか", False),
        ("How long is 听雨桥?", True),  # mostly English
        ("2024", True),  # nothing says the model cannot read digits
    ],
)
def test_which_questions_an_english_model_covers(text: str, covered: bool) -> None:
    assert covers(frozenset({"LATIN"}), text) is covered
    assert covers(None, text)  # a multilingual model covers everything


# --- Fusion ------------------------------------------------------------------------------------


class Constant(Embeddings):
    """A model that cannot tell texts apart: every vector is the same."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * 15 for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0] + [0.0] * 15


@pytest.fixture(params=["memory", "chroma"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Fusion is the retriever's, whatever store holds the vectors: run on both."""
    return str(request.param)


def small_store(
    tmp_path: Path, kind: str, texts: dict[str, str], embeddings: Embeddings
) -> dict[str, Any]:
    store = MemoryStore() if kind == "memory" else open_store(Settings(chroma_dir=tmp_path))
    collection = store.create_collection("fusion", "test/fusion", 16)
    collection.upsert(
        [
            Document(id=name, page_content=text, metadata={"source": f"{name}.txt"})
            for name, text in texts.items()
        ],
        embeddings.embed_documents(list(texts.values())),
    )
    index = KeywordIndex(tmp_path / "keywords.sqlite3")
    index.add(
        Document(id=name, page_content=text, metadata={"source": f"{name}.txt", "root": "test"})
        for name, text in texts.items()
    )
    return {"collection": collection, "embeddings": embeddings, "keyword_index": index}


@pytest.mark.integration
def test_a_leg_with_flat_scores_does_not_reorder_the_other(tmp_path: Path, store_kind: str) -> None:
    # Vectors that cannot tell the chunks apart: hybrid must keep BM25's order exactly.
    texts = {
        "one": "lantern lantern lantern tide festival",
        "two": "lantern tide festival in october evening",
        "three": "tide tables for the harbour and the quay",
        "four": "the quay cafe sells tea and cake",
    }
    store = small_store(tmp_path / "flat-vectors", store_kind, texts, Constant())
    question = "lantern tide"
    keyword_order = [i for i, _ in store["keyword_index"].search(question, 10)]
    hybrid = DocumentRetriever(**store, mode="hybrid", k=3, fetch_k=4).invoke(question)
    assert [d.id for d in hybrid] == keyword_order[:3]


@pytest.mark.integration
def test_hybrid_keeps_the_vector_order_when_keywords_match_everything_alike(
    tmp_path: Path, store_kind: str
) -> None:
    # Every chunk holds the query's keyword once and has the same length: BM25 is flat.
    texts = {
        "a": "quay alpha beta gamma",
        "b": "quay delta epsilon zeta",
        "c": "quay alpha beta theta",
        "d": "quay iota kappa lambda",
    }
    store = small_store(tmp_path / "flat-keywords", store_kind, texts, BagOfWords(16))
    question = "quay alpha beta gamma"
    similarity = DocumentRetriever(**store, mode="similarity", k=4, fetch_k=4).invoke(question)
    hybrid = DocumentRetriever(**store, mode="hybrid", k=4, fetch_k=4).invoke("quay")
    flat = [s for _, s in store["keyword_index"].search("quay", 10)]
    assert max(flat) - min(flat) < 1e-6
    # The keyword leg adds the same share to every chunk: the vector order decides.
    vector_for_quay = DocumentRetriever(**store, mode="similarity", k=4, fetch_k=4).invoke("quay")
    assert [d.id for d in hybrid] == [d.id for d in vector_for_quay]
    assert similarity[0].id == "a"


# --- Chinese retrieval on the embedded default ---------------------------------------------------


@pytest.fixture(scope="module")
def chinese(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = Settings(chroma_dir=tmp_path_factory.mktemp("zh"), _env_file=None)  # type: ignore[call-arg]
    embeddings = local_embeddings(settings, lambda line: None)
    store = open_store(settings)
    report = sync_collection(settings, [SAMPLE_DOCS_ZH_DIR], embeddings, store=store)
    assert not report.failed
    library = find_library(store, settings, embeddings.info.key)
    assert library is not None
    collection = library.collection()
    assert collection is not None
    index = open_keyword_index(settings, store, collection)  # the sync wrote it
    yield {
        "collection": collection,
        "embeddings": embeddings,
        "keyword_index": index,
        "model_scripts": embeddings.info.scripts,
        "settings": settings,
    }
    index.close()
    store.close()


def chinese_retriever(chinese: dict[str, Any], **fields: Any) -> DocumentRetriever:
    parts = {k: v for k, v in chinese.items() if k != "settings"}
    return DocumentRetriever(**parts, **fields)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["similarity", "mmr", "hybrid"])
def test_each_mode_finds_the_file_that_answers_a_chinese_question(
    chinese: dict[str, Any], mode: str
) -> None:
    assert chinese["model_scripts"] == frozenset({"LATIN"})  # the embedded default is English
    r = chinese_retriever(chinese, mode=mode, k=4, fetch_k=20, score_threshold=0.3)
    misses = [
        q["question"]
        for q in ANSWERABLE
        if q["source"] not in {d.metadata["source"] for d in r.invoke(q["question"])}
    ]
    # The same bar as the English questions: 35 questions, at most 2 misses.
    assert len(misses) <= 2, misses


@pytest.mark.integration
def test_default_thresholds_find_every_answerable_chinese_question(chinese: dict[str, Any]) -> None:
    settings: Settings = chinese["settings"]
    r = chinese_retriever(
        chinese,
        k=2,
        score_threshold=chinese["embeddings"].info.default_threshold,  # 0.3, for English
        keyword_threshold=settings.keyword_threshold,
    )
    not_found = [
        q["question"]
        for q in ANSWERABLE
        if all(d.metadata.get("below_threshold") for d in r.invoke(q["question"]))
    ]
    assert not not_found  # the English 0.3 would have called every one of them "not found"
    stopped = [
        q["question"]
        for q in OUTSIDE
        if all(d.metadata.get("below_threshold") for d in r.invoke(q["question"]))
    ]
    assert len(stopped) == len(OUTSIDE), stopped
    found = r.invoke(ANSWERABLE[0]["question"])
    assert all(d.metadata["matched_by"] == "keywords" for d in found)
    assert all(0 <= d.metadata["score"] <= 1 for d in found)


# --- Answers in the question's language ----------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("听雨桥有多长？", "在你的文档中没有找到答案"),
        ("聽雨橋有多長？", "在你的文档中没有找到答案"),
        ("休館日はいつですか", "ドキュメントの中に答えが見つかりません"),
        ("휴관일은 언제입니까?", "문서에서 답을 찾지 못했습니다"),
        ("How long is the Long Mole?", "I could not find this in your documents"),
        ("pandas 怎么读取 CSV 文件？", "在你的文档中没有找到答案"),
    ],
)
def test_the_not_found_message_speaks_the_questions_language(question: str, expected: str) -> None:
    from chains.core.wording import not_found_message, says_unknown

    message = not_found_message(question)
    assert message.startswith(expected)
    assert says_unknown(message)  # the evaluation counts it as "does not know"


@pytest.mark.unit
def test_a_chinese_question_below_the_threshold_gets_the_chinese_message_without_the_model() -> (
    None
):
    from langchain_core.documents import Document
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.retrievers import BaseRetriever

    from chains import rag

    class Nothing(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document("无关", metadata={"source": "a.md", "below_threshold": True})]

    model = GenericFakeChatModel(messages=iter([]))  # would fail if it were called
    chain = rag.build_chain(Settings(chat_context_tokens=4096), Nothing(), model)
    result = chain.invoke({"question": "澳大利亚的首都是哪个城市？", "history": []})
    assert result["answer"].startswith("在你的文档中没有找到答案")


@pytest.mark.unit
@pytest.mark.parametrize(
    "answer",
    [
        "根据你的文档，我不知道。",
        "文档中没有提到这个问题。",
        "資料中沒有找到相關內容。",
        "ドキュメントからはわかりません。",
        "문서에 근거해서는 모르겠습니다.",
    ],
)
def test_the_evaluation_reads_i_do_not_know_in_chinese_japanese_korean(answer: str) -> None:
    from chains.core.wording import says_unknown

    assert says_unknown(answer)


@pytest.mark.unit
def test_answers_that_know_are_not_read_as_not_knowing() -> None:
    from chains.core.wording import says_unknown

    assert not says_unknown("听雨桥全长86米[1]。")
    assert not says_unknown("The Long Mole is 612 metres long [1].")


@pytest.mark.unit
def test_every_shipped_prompt_asks_for_the_questions_language() -> None:
    from chains import rag, research, support

    for module in (rag, support, research):
        assert "language of the question" in module.SYSTEM_PROMPT, module.__name__
