"""The offline default, end to end: real embedded models, real subprocesses, the sample corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.paths import SAMPLE_QUESTIONS

pytestmark = pytest.mark.integration


def questions() -> list[dict]:
    return [json.loads(line) for line in SAMPLE_QUESTIONS.read_text().splitlines() if line]


def cited_files(stdout: str) -> list[str]:
    """The `[n] path (page p)` lines printed under Sources:."""
    block = stdout.split("Sources:", 1)[1]
    return re.findall(r"^\[\d+\] (\S+)", block, flags=re.MULTILINE)


def test_ingest_then_chat_cites_the_file_that_holds_the_answer(
    run_module, sample_docs: Path
) -> None:
    ingest = run_module("app.ingest", str(sample_docs), "--json")
    assert ingest.returncode == 0, ingest.stderr
    report = json.loads(ingest.stdout)
    assert report["embedding_model"] == "local/all-MiniLM-L6-v2"
    assert report["files"]["new"] == len([p for p in sample_docs.rglob("*") if p.is_file()])
    assert "Ollama is not answering" in ingest.stderr  # auto said why it chose local

    chosen = [questions()[0], next(q for q in questions() if q["source"].endswith(".pdf"))]
    for question in chosen:
        chat = run_module("app.chat", "-q", question["question"], DOCS_DIR=str(sample_docs))
        assert chat.returncode == 0, chat.stderr
        assert "Traceback" not in chat.stderr
        assert f"docs/{question['source']}" in cited_files(chat.stdout)
        assert "Chat model: local/SmolLM2-135M-Instruct" in chat.stderr


def test_chat_on_an_empty_store_ingests_the_sample_docs_first(
    run_module, sample_docs: Path
) -> None:
    question = questions()[0]
    chat = run_module("app.chat", "-q", question["question"], DOCS_DIR=str(sample_docs))
    assert chat.returncode == 0, chat.stderr
    assert "No library yet: ingesting the sample documents" in chat.stderr
    # Stored names start with the source's label: the folder's name, `docs`.
    assert f"docs/{question['source']}" in cited_files(chat.stdout)
    # the page is printed where it is known
    pdf = run_module(
        "app.chat",
        "-q",
        "Who is the director of the Corvane Hill observatory?",
        DOCS_DIR=str(sample_docs),
    )
    assert re.search(
        r"^\[\d+\] docs/observatory/annual-report-2024\.pdf \(page \d\)$",
        pdf.stdout,
        flags=re.MULTILINE,
    ), pdf.stdout


def test_local_models_are_read_from_packages_with_no_network(monkeypatch) -> None:
    """The embedded embedding model loads from site-packages with the hub offline, and the
    splitter's token counter is the model's own tokenizer."""
    from app.config import Settings
    from app.models.local import local_embeddings

    embeddings = local_embeddings(Settings(), lambda line: None)
    assert embeddings.count_tokens is not None
    assert embeddings.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    vector = embeddings.embed_query("tidal ferry")
    assert len(vector) == 384
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-3  # normalised, for cosine


def test_the_offline_default_runs_where_torch_cannot_be_imported(
    run_module, sample_docs: Path, tmp_path: Path
) -> None:
    """What `.[local]` alone gives (this venv has torch for the comparison tests): torch,
    transformers and sentence-transformers made unimportable, ingest and a question still work
    on the embedded models, offline."""
    blocked = tmp_path / "no-torch"
    for name in ("torch", "transformers", "sentence_transformers"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed (test_end_to_end)')\n"
        )
    env = {"PYTHONPATH": str(blocked), "DOCS_DIR": str(sample_docs), "HF_HUB_OFFLINE": "1"}
    ingest = run_module("app.ingest", str(sample_docs), "--json", **env)
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["embedding_model"] == "local/all-MiniLM-L6-v2"
    question = questions()[0]
    chat = run_module("app.chat", "-q", question["question"], **env)
    assert chat.returncode == 0, chat.stderr
    assert "Traceback" not in chat.stderr
    assert f"docs/{question['source']}" in cited_files(chat.stdout)
