"""`python -m app.eval`: metrics by hand, the BEIR reader, the corpus as files, and the command
end to end on a tiny handmade BEIR folder and a three-question file."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_ollama import ChatOllama

from app.errors import ConfigError
from app.eval import parse_args
from app.evaluation.answers import (
    Question,
    check,
    cited_numbers,
    fact_key,
    load_questions,
    over_seeds,
    tally,
    with_fields,
    with_seed,
)
from app.evaluation.beir import CorpusDoc, load_beir
from app.evaluation.corpus import doc_source, write_corpus
from app.evaluation.metrics import (
    dedupe,
    evaluate,
    judged_queries,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    recall_at_k,
)
from chains.core.wording import NOT_FOUND, says_unknown
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding

# Unit tests carry their own mark; the module's default is the integration layer (the command
# end to end, with real models).
pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "beir-tiny"
SYSTEMS = {"similarity", "mmr", "hybrid", "bm25", "exact"}

# --- metrics -------------------------------------------------------------------------------

JUDGED = {"a": 1, "c": 2, "d": 3, "z": 0}


@pytest.mark.unit
def test_ndcg_uses_graded_gains_and_a_log2_discount() -> None:
    # DCG: a (2^1-1)/log2(2) + b 0 + c (2^2-1)/log2(4) = 1 + 1.5
    # ideal: d, c, a = 7/1 + 3/log2(3) + 1/log2(4)
    ideal = 7 + 3 / math.log2(3) + 0.5
    assert ndcg_at_k(["a", "b", "c"], JUDGED) == pytest.approx(2.5 / ideal)
    assert ndcg_at_k(["d", "c", "a"], JUDGED) == pytest.approx(1.0)
    # a grade-0 judgement is no gain
    assert ndcg_at_k(["z", "d", "c", "a"], JUDGED) == pytest.approx(
        (7 / math.log2(3) + 3 / 2 + 1 / math.log2(5)) / ideal
    )


@pytest.mark.unit
def test_recall_and_mrr() -> None:
    assert recall_at_k(["a", "b", "c"], JUDGED) == pytest.approx(2 / 3)
    assert mrr_at_k(["a", "b", "c"], JUDGED) == 1.0
    assert mrr_at_k(["b", "z", "c"], JUDGED) == pytest.approx(1 / 3)  # z is judged 0


@pytest.mark.unit
def test_relevant_documents_below_rank_10_count_for_nothing() -> None:
    ranked = [f"x{i}" for i in range(10)] + ["d", "c", "a"]
    assert ndcg_at_k(ranked, JUDGED) == 0.0
    assert recall_at_k(ranked, JUDGED) == 0.0
    assert mrr_at_k(ranked, JUDGED) == 0.0
    assert ndcg_at_k(ranked, JUDGED, k=11) > 0


@pytest.mark.unit
def test_queries_without_a_relevant_judgement_are_skipped_and_counted() -> None:
    qrels = {"q1": {"a": 2}, "q2": {"b": 0}}
    runs = {"q1": ["b", "a"], "q2": ["b"], "q3": ["a"]}
    scores = evaluate(runs, qrels)
    assert (scores.evaluated, scores.skipped) == (1, 2)
    assert set(scores.per_query) == {"q1"}
    assert scores.means["ndcg@10"] == pytest.approx(3 / math.log2(3) / 3)
    assert scores.means["mrr@10"] == 0.5
    assert judged_queries(qrels, ["q1", "q2", "q3"]) == ["q1"]
    assert evaluate({}, qrels).means == {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0}


@pytest.mark.unit
def test_chunks_become_documents_at_their_best_rank() -> None:
    assert dedupe(["a", "b", "a", None, "c", "b", "d"], k=3) == ["a", "b", "c"]
    assert dedupe(["a", "a"], k=10) == ["a"]


@pytest.mark.unit
def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0


# --- the BEIR reader and the corpus as files ----------------------------------------------


@pytest.mark.unit
def test_beir_reader_reads_the_tiny_fixture() -> None:
    data = load_beir(TINY)
    assert len(data.corpus) == 15
    assert data.corpus["Bread/Rye 5"].title == "Rye bread"  # an id with a slash and a space
    assert data.qrels["q1"] == {"bread-1": 2, "Bread/Rye 5": 2, "bread-3": 1}
    assert "q6" in data.queries
    assert "q6" not in data.qrels
    assert data.notes == []


@pytest.mark.unit
def test_beir_reader_names_what_is_missing_or_broken(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    shutil.copytree(TINY, folder)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(ConfigError, match=r"missing qrels/test\.tsv"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\tbread-1\n")
    with pytest.raises(ConfigError, match=r"test\.tsv:1"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1 bread-1 1\nq1 nowhere 2\n")
    assert any("not in corpus.jsonl" in note for note in load_beir(folder).notes)
    with (folder / "corpus.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(ConfigError, match=r"corpus\.jsonl:16"):
        load_beir(folder)


@pytest.mark.unit
def test_any_id_gets_a_file_name_of_its_own() -> None:
    ids = ["123", "med-10", "MED-10", "med/10", "med 10", "../../etc", ".hidden", "é", "x" * 300]
    sources = [doc_source(i) for i in ids]
    assert len(set(sources)) == len(ids)
    assert sources[0].endswith("/123.txt")
    for source in sources:
        shard, name = source.split("/")
        assert len(shard) == 2
        assert len(name) < 80
        assert not name.startswith(".")
        assert "/" not in name
        assert " " not in name
    assert doc_source("MED-10") == doc_source("MED-10")  # stable across runs


@pytest.mark.unit
def test_corpus_files_are_rewritten_only_when_their_text_changed(tmp_path: Path) -> None:
    docs = [CorpusDoc("a", "Title", "Text of a."), CorpusDoc("B/2", "", "Text of b.")]
    first = write_corpus(docs, tmp_path)
    assert (first.written, first.removed) == (2, 0)
    path_a = tmp_path / doc_source("a")
    assert path_a.read_text() == "Title\n\nText of a."
    assert (tmp_path / doc_source("B/2")).read_text() == "Text of b."
    assert first.source_to_id == {doc_source("a"): "a", doc_source("B/2"): "B/2"}
    before = path_a.stat().st_mtime_ns
    again = write_corpus([docs[0], CorpusDoc("B/2", "", "New text.")], tmp_path)
    assert (again.written, again.removed) == (1, 0)
    assert path_a.stat().st_mtime_ns == before
    fewer = write_corpus(docs[:1], tmp_path)
    assert (fewer.written, fewer.removed) == (0, 1)
    assert sorted(p.name for p in tmp_path.rglob("*.txt")) == ["a.txt"]


# --- answer checks -------------------------------------------------------------------------


@pytest.mark.unit
def test_answers_that_say_they_do_not_know() -> None:
    assert says_unknown(NOT_FOUND)
    assert says_unknown("I don't know based on your documents.")
    assert says_unknown("I don\u2019t know.")
    assert says_unknown("The answer was not found in the sources.")
    assert not says_unknown("Ottoline Vesk founded the town [1].")


@pytest.mark.unit
def test_citations_are_read_from_the_answer() -> None:
    assert cited_numbers("Vesk [1] founded it, see [2, 3] and [4][5].") == {1, 2, 3, 4, 5}
    assert cited_numbers("no citations, [a] or [ ]") == set()


@pytest.mark.unit
def test_a_question_with_a_page_and_facts_is_checked_for_file_page_and_every_fact() -> None:
    invoice = Question("合计金额是多少？", "docs/发票.pdf", page=2, facts=("4,716元", "LX-58213"))
    pdf = "docs/发票.pdf"
    context = [
        Document("兰溪青石印务有限公司", metadata={"source": pdf, "page": 1}),
        Document("合计金额：4716 元 发票号码：LX-58213", metadata={"source": pdf, "page": 2}),
    ]
    # Full-width digits and commas (as OCR may read them), spaces, case and thousands
    # separators do not matter.
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "4,716")
    right = check(invoice, f"合计金额：{full_width} 元，发票号码 lx-58213 [2]", context, 1.0)
    assert (right["page_rank"], right["page_listed"], right["page_cited"]) == (2, True, True)
    assert right["facts_found"] == [True, True]
    assert right["facts_in_answer"]
    assert right["facts_in_sources"]
    # The file cited, but its other page; one fact missing.
    wrong_page = check(invoice, "兰溪青石印务有限公司，4716元 [1]", context, 1.0)
    assert (wrong_page["source_cited"], wrong_page["page_cited"]) == (True, False)
    assert wrong_page["facts_found"] == [True, False]
    assert not wrong_page["facts_in_answer"]
    # The page not among the sources: neither it nor its facts reached the answer.
    not_listed = check(invoice, "兰溪青石印务有限公司 [1]", context[:1], 1.0)
    assert (not_listed["page_rank"], not_listed["page_listed"]) == (None, False)
    assert not not_listed["facts_in_sources"]
    counts = tally([right, wrong_page, not_listed])["inside"]
    assert {k: counts[k] for k in ("with_page", "page_first", "page_listed", "page_cited")} == {
        "with_page": 3,
        "page_first": 0,
        "page_listed": 2,
        "page_cited": 1,
    }
    assert (counts["with_facts"], counts["facts_in_sources"], counts["facts_in_answer"]) == (
        3,
        2,
        1,
    )
    # A question without a page or facts is not counted for them.
    plain = check(Question("Who?", "docs/a.md", "Vesk"), "Vesk [1]", context, 1.0)
    assert "page_listed" not in plain
    assert "facts_in_answer" not in plain


@pytest.mark.unit
def test_fact_keys_and_the_facts_field_of_a_question_file(tmp_path: Path) -> None:
    assert fact_key("£3,842.60") == fact_key("£3842.60") == "£3842.60"
    assert fact_key("16 March\n2025") == "16march2025"
    assert fact_key("1,2345") == "1,2345"  # not a thousands separator
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"question": "Total?", "source": "a.pdf", "page": 2, "facts": ["3,842.60"]}\n'
        '{"question": "Who?", "source": "a.pdf", "facts": "Oriel Fenwick"}\n'
    )
    with pytest.raises(ConfigError, match=r"q\.jsonl:2: 'facts' must be a list"):
        load_questions(questions)
    questions.write_text(questions.read_text().splitlines()[0])
    assert load_questions(questions) == [Question("Total?", "a.pdf", None, 2, ("3,842.60",))]


FOUNDER = Question("Who founded Brindlemoor?", "docs/a.md", "Ottoline Vesk")
HARBOUR = Question("How long is the harbour wall?", "docs/b.md", "612 metres")
OUTSIDE = Question("What is the capital of Australia?", None)


def answered(question: Question, answer: str) -> dict[str, object]:
    """One question's record as `check` makes it, its expected file listed as source [1]."""
    context = [Document("text", metadata={"source": question.source or "docs/a.md"})]
    return check(question, answer, context, seconds=1.0)


@pytest.mark.unit
def test_passes_over_seeds_report_mean_range_and_which_questions_flip() -> None:
    runs = [
        (1, [answered(FOUNDER, "Ottoline Vesk [1]."), answered(HARBOUR, "612 metres."),
             answered(OUTSIDE, "I don't know based on your documents.")]),
        (2, [answered(FOUNDER, "Ottoline Vesk."), answered(HARBOUR, "About a mile."),
             answered(OUTSIDE, "Canberra.")]),
        (3, [answered(FOUNDER, "ottoline  vesk"), answered(HARBOUR, "I don't know."),
             answered(OUTSIDE, "I do not know.")]),
    ]  # fmt: skip
    result = over_seeds(runs)
    assert result["seeds"] == [1, 2, 3]
    assert [r["inside"]["expected_text_in_answer"] for r in result["runs"]] == [2, 1, 1]
    inside, outside = result["over_seeds"]["inside"], result["over_seeds"]["outside"]
    assert inside["questions"] == 2
    assert inside["expected_text_in_answer"] == {"mean": 1.33, "min": 1, "max": 2}
    assert inside["source_listed"] == {"mean": 2.0, "min": 2, "max": 2}
    assert inside["source_cited"] == {"mean": 0.33, "min": 0, "max": 1}
    assert inside["answered"] == {"mean": 1.67, "min": 1, "max": 2}
    assert outside["says_unknown"] == {"mean": 0.67, "min": 0, "max": 1}
    founder, harbour, australia = result["questions"]
    assert (founder["expected_text_in_answer"], harbour["expected_text_in_answer"]) == (3, 1)
    assert founder["source_cited"] == 1
    assert australia["says_unknown"] == 2
    assert "expected_text_in_answer" not in australia
    assert [a["answer"] for a in harbour["answers"]] == ["612 metres.", "About a mile.",
                                                         "I don't know."]  # fmt: skip
    assert [a["expected_text_in_answer"] for a in harbour["answers"]] == [True, False, False]
    assert result["stability"]["expected_text_in_answer"] == {
        "always": 1,
        "never": 0,
        "sometimes": 1,
    }


@pytest.mark.unit
def test_a_seed_or_other_fields_go_to_a_copy_of_any_chat_model_that_has_them() -> None:
    model = ChatOllama(model="llama3.2", base_url="http://127.0.0.1:9", temperature=0.1)
    seeded = with_seed(model, 7)
    assert (seeded.seed, seeded.temperature, seeded.model) == (7, 0.1, "llama3.2")
    assert model.seed is None  # the session's own model is left as it was
    with pytest.raises(ConfigError, match="no `seed` field"):
        with_seed(GenericFakeChatModel(messages=iter(["x"])), 1)
    changed = with_fields(model, {"repeat_penalty": 1.0, "temperature": 0.0})
    assert (changed.repeat_penalty, changed.temperature, model.repeat_penalty) == (1.0, 0.0, None)
    with pytest.raises(ConfigError, match="no field repeat_pen"):
        with_fields(model, {"repeat_pen": 1.0})


@pytest.mark.unit
def test_seeds_need_questions_and_a_positive_count() -> None:
    assert parse_args(["--questions", "q.jsonl", "--seeds", "5"]).seeds == 5
    assert parse_args(["--questions", "q.jsonl"]).seeds is None
    for argv in (["--questions", "q.jsonl", "--seeds", "0"], ["--dataset", "d", "--seeds", "2"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2


# --- the command ---------------------------------------------------------------------------


@pytest.mark.integration
def test_eval_on_a_beir_folder_reports_every_mode_and_baseline(run_module, tmp_path: Path) -> None:
    out_path, plot_path = tmp_path / "result.json", tmp_path / "result.png"
    first = run_module(
        "app.eval",
        "--dataset",
        str(TINY),
        "--json",
        str(out_path),
        "--plot",
        str(plot_path),
        EMBEDDING_PROVIDER="local",
    )
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    result = json.loads(out_path.read_text())
    assert set(result["systems"]) == SYSTEMS
    for entry in result["systems"].values():
        for metric in ("ndcg@10", "recall@10", "mrr@10"):
            assert 0.0 <= entry[metric] <= 1.0
        assert entry["latency_ms"]["p95"] >= entry["latency_ms"]["p50"] > 0
    assert {r["kind"] for r in result["systems"].values()} == {"mode", "baseline"}
    assert result["dataset"]["evaluated_queries"] == 5
    assert result["dataset"]["skipped_queries"] == 1  # q6 has no judgement
    assert result["ingest"]["files"]["new"] == 15
    assert result["collection"].startswith("eval-beir-tiny-")
    # three clearly separate topics: every system finds something relevant for every query
    assert all(entry["mrr@10"] > 0.5 for entry in result["systems"].values())
    ceiling = result["ceiling"]
    gap = result["systems"]["exact"]["ndcg@10"] - result["systems"]["similarity"]["ndcg@10"]
    assert ceiling["gap"] == pytest.approx(gap, abs=1e-4)
    if gap <= 0.005:
        assert ceiling["met"]
        assert "within 0.005 nDCG@10 of exact search" in first.stdout
    else:
        assert not ceiling["met"]
        assert "below exact search" in first.stdout
    for name in SYSTEMS:
        assert name in first.stdout
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_path.stat().st_size > 10_000

    second = run_module(
        "app.eval", "--dataset", str(TINY), "--json", str(out_path), EMBEDDING_PROVIDER="local"
    )
    assert second.returncode == 0, second.stderr
    again = json.loads(out_path.read_text())
    assert again["collection"] == result["collection"]
    assert again["ingest"]["files"] == {
        "new": 0,
        "changed": 0,
        "unchanged": 15,
        "deleted": 0,
        "failed": 0,
    }
    assert again["ingest"]["chunks"]["added"] == 0
    assert again["ingest"]["corpus_files_written"] == 0
    assert "0 new, 0 changed, 15 unchanged" in second.stderr
    assert again["systems"]["exact"]["ndcg@10"] == result["systems"]["exact"]["ndcg@10"]


@pytest.mark.integration
def test_eval_without_qrels_exits_2_naming_the_file(run_module, tmp_path: Path) -> None:
    folder = tmp_path / "no-qrels"
    shutil.copytree(TINY, folder)
    shutil.rmtree(folder / "qrels")
    result = run_module("app.eval", "--dataset", str(folder), EMBEDDING_PROVIDER="local")
    assert result.returncode == 2
    assert "qrels/test.tsv" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_eval_answers_on_a_small_question_file(
    run_module, sample_docs: Path, tmp_path: Path
) -> None:
    out_path = tmp_path / "answers.json"
    result = run_module(
        "app.eval",
        "--questions",
        str(FIXTURES / "questions-small.jsonl"),
        "--json",
        str(out_path),
        DOCS_DIR=str(sample_docs),
        EMBEDDING_PROVIDER="local",
        CHAT_PROVIDER="local",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(out_path.read_text())
    assert report["inside"]["questions"] == 2
    assert report["outside"]["questions"] == 1
    # retrieval finds both files; whether the 135M model cites them is what is measured
    assert report["inside"]["source_listed"] == 2
    assert 0 <= report["inside"]["source_cited"] <= 2
    # "capital of Australia" is far below the relevance threshold: no model call at all
    assert report["outside"]["says_unknown"] == 1
    assert report["outside"]["not_found_without_model"] == 1
    assert "expected file cited with [n]" in result.stdout
    assert "says it does not know" in result.stdout


@pytest.mark.integration
def test_eval_answers_over_seeds_sends_each_seed_to_the_model(run_module, tmp_path: Path) -> None:
    """Any chat model with a seed: an Ollama-compatible server whose reply depends on the seed
    it is sent, so the report's spread is known in advance."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Brindlemoor was founded by Ottoline Vesk, a salt merchant.\n")
    (docs / "b.md").write_text("The harbour wall of Brindlemoor is 612 metres long.\n")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps({"question": q.question, "source": q.source[5:], "answer": q.answer})
            for q in (FOUNDER, HARBOUR)
        )
    )

    def reply(body: dict[str, object]) -> str:
        seed = body["options"]["seed"]  # type: ignore[index]
        return "Ottoline Vesk; the wall is 612 metres." if seed == 1 else "Ottoline Vesk."

    out_path = tmp_path / "answers.json"
    with OllamaTestServer(reply=reply, embedder=bag_of_words_embedding) as server:
        result = run_module(
            "app.eval",
            "--questions",
            str(questions),
            "--seeds",
            "2",
            "--json",
            str(out_path),
            DOCS_DIR=str(docs),
            OLLAMA_BASE_URL=server.base_url,
            EMBEDDING_PROVIDER="ollama",
            CHAT_PROVIDER="ollama",
            SCORE_THRESHOLD="-1",
        )
        sent = [r.json["options"]["seed"] for r in server.requests_to("/api/chat")]
    assert result.returncode == 0, result.stderr
    assert sorted(sent) == [1, 1, 2, 2]
    report = json.loads(out_path.read_text())
    assert report["seeds"] == [1, 2]
    assert report["over_seeds"]["inside"]["expected_text_in_answer"] == {
        "mean": 1.5,
        "min": 1,
        "max": 2,
    }
    assert report["stability"]["expected_text_in_answer"]["sometimes"] == 1
    assert "mean over seeds" in result.stdout
    assert "varies (1/2 seeds): How long is the harbour wall?" in result.stdout
