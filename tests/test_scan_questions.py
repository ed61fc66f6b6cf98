"""The scan questions (data/eval/scan-questions.jsonl over the library benchmarks/scan_set.py
makes) are well-formed: each names a file of the set, a page of it that is read by OCR, and
facts found on that page and on no other, half in English and half in Chinese; and
benchmarks/scan_answers.py runs the app on two of them, a photo in each language.

The OCR accuracy and the answers on the whole set are measured by the benchmark, not here."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from app.evaluation.answers import fact_key, load_questions
from app.paths import PROJECT_ROOT

# The set checks are unit tests (no models); the smoke of the benchmark runs the app.
pytestmark = pytest.mark.integration

BENCHMARKS = PROJECT_ROOT / "benchmarks"
QUESTIONS = PROJECT_ROOT / "data" / "eval" / "scan-questions.jsonl"
CJK = re.compile("[\u4e00-\u9fff]")


def scan_set() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))  # benchmark scripts import each other by name
    return importlib.import_module("scan_set")


def rows() -> list[dict[str, object]]:
    return [json.loads(line) for line in QUESTIONS.read_text("utf-8").splitlines()]


@pytest.mark.unit
def test_every_question_names_a_scanned_page_that_alone_holds_its_facts() -> None:
    documents = {d.file: d for d in scan_set().DOCUMENTS}
    pages = {
        (d.file, number): fact_key(" ".join(page.paragraphs))
        for d in documents.values()
        for number, page in enumerate(d.pages, 1)
    }
    questions = load_questions(QUESTIONS)  # as the answers evaluation reads it
    assert len(questions) == len(rows()) >= 20
    for question, row in zip(questions, rows(), strict=True):
        assert question.source in documents, question
        document = documents[question.source]
        assert question.page is not None
        assert 1 <= question.page <= len(document.pages)
        assert document.pages[question.page - 1].look != "text", "the answer must be in a scan"
        assert row["lang"] == document.lang
        assert bool(CJK.search(question.question)) == (document.lang == "zh"), question
        assert question.facts
        for fact in question.facts:
            holding = [key for key, text in pages.items() if fact_key(fact) in text]
            assert holding == [(question.source, question.page)], (fact, holding)


@pytest.mark.unit
def test_half_the_questions_are_chinese_and_none_repeats() -> None:
    langs = [row["lang"] for row in rows()]
    assert langs.count("en") == langs.count("zh")
    assert len({row["question"] for row in rows()}) == len(langs)
    # Every file of the set is asked about, every page read by OCR of a multi-page file too.
    asked = {(row["source"], row["page"]) for row in rows()}
    for document in scan_set().DOCUMENTS:
        scanned = [n for n, p in enumerate(document.pages, 1) if p.look != "text"]
        assert {(document.file, n) for n in scanned} <= asked, document.file


def test_the_benchmark_answers_two_photo_questions_with_file_and_page(tmp_path: Path) -> None:
    out = tmp_path / "scan-answers.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "scan_answers.py"),
            "--files",
            "en/notice-photo.jpg,zh/公告照片.jpg",
            "--limit",
            "1",
            "--set",
            str(tmp_path / "set"),
            "--json",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "LOCALRAG_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads(out.read_text("utf-8"))["engines"]["rapidocr"]
    # The script itself checks that its OCR log and the ingest count the same pages.
    assert entry["pages_ocr"] == 2
    for lang in ("en", "zh"):
        row = entry["by_language"][lang]
        assert row["questions"] == 1
        assert row["pages_ocr"] == 1
        assert row["page_listed"] == row["page_cited"] == 1, entry["evaluation"]["questions"]
        assert row["facts_in_answer"] == 1, entry["evaluation"]["questions"]
    assert "| rapidocr | zh | 1 | 1/1 | 1/1 |" in done.stdout
