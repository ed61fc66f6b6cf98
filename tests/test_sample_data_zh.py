"""The Chinese sample set agrees with itself: every question's file exists, every judged passage
is in the BEIR corpus and holds the expected answer, and the BEIR folder loads."""

from __future__ import annotations

import json

import pytest

from app.evaluation.beir import load_beir
from app.paths import SAMPLE_BEIR_ZH, SAMPLE_DOCS_ZH_DIR, SAMPLE_QUESTIONS_ZH

pytestmark = pytest.mark.unit

QUESTIONS = [json.loads(line) for line in SAMPLE_QUESTIONS_ZH.read_text("utf-8").splitlines()]


def test_every_question_names_a_file_that_exists() -> None:
    inside = [q for q in QUESTIONS if q["source"]]
    assert len(inside) >= 30
    assert len(QUESTIONS) - len(inside) >= 3  # questions the documents cannot answer
    missing = [q["source"] for q in inside if not (SAMPLE_DOCS_ZH_DIR / q["source"]).is_file()]
    assert not missing
    # Eight formats, like the English set, so every loader meets Chinese text.
    suffixes = {p.suffix for p in SAMPLE_DOCS_ZH_DIR.rglob("*") if p.is_file()}
    assert suffixes == {".md", ".txt", ".html", ".csv", ".docx", ".pptx", ".pdf", ".eml"}


def test_beir_form_judges_the_passage_that_holds_each_answer() -> None:
    dataset = load_beir(SAMPLE_BEIR_ZH)
    assert not dataset.notes  # no unknown ids, no duplicates
    answers = {q["question"]: q["answer"] for q in QUESTIONS if q["source"]}
    assert sorted(dataset.queries.values()) == sorted(answers)
    for query_id, judged in dataset.qrels.items():
        question = dataset.queries[query_id]
        texts = [dataset.corpus[doc_id].text for doc_id, grade in judged.items() if grade > 0]
        assert any(answers[question] in text for text in texts), question


def test_the_notice_is_gbk_as_an_old_office_pc_saves_it() -> None:
    data = (SAMPLE_DOCS_ZH_DIR / "镇务" / "水库停水通告.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert "翠屏水库" in data.decode("gbk")
    assert b"\r\n" in data
