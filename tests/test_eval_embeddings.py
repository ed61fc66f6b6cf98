"""`python -m app.eval --dataset DIR --embeddings ...`: several embedding models, one corpus, one
table; the embedded MiniLM and an Ollama model (the test server) on the tiny BEIR fixture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.errors import ConfigError, ExitCode
from app.evaluation.compare import EmbeddingSpec, parse_specs, settings_for
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding

# Unit tests carry their own mark; the module's default is the integration layer (the command
# with real models and the Ollama test server).
pytestmark = pytest.mark.integration

TINY = Path(__file__).parent / "fixtures" / "beir-tiny"
DIM = 64


@pytest.mark.unit
def test_specs_name_a_provider_and_optionally_a_model() -> None:
    assert parse_specs("local, local:/models/e5 ,ollama,ollama:bge-m3:567m") == [
        EmbeddingSpec("local", "local", ""),
        EmbeddingSpec("local:/models/e5", "local", "/models/e5"),
        EmbeddingSpec("ollama", "ollama", ""),
        EmbeddingSpec("ollama:bge-m3:567m", "ollama", "bge-m3:567m"),  # the tag stays
    ]
    # Every registered provider names a model (openai since the provider registry).
    assert parse_specs("openai:text-embedding-3-small") == [
        EmbeddingSpec("openai:text-embedding-3-small", "openai", "text-embedding-3-small")
    ]
    for bad in ("", "cohere:embed-v3", "local,local"):
        with pytest.raises(ConfigError, match="--embeddings"):
            parse_specs(bad)
    with pytest.raises(ConfigError, match=r"\(ollama, openai, local; "):
        parse_specs("cohere")  # the message lists the providers there are


@pytest.mark.unit
def test_a_spec_sets_the_provider_explicitly_so_nothing_falls_back(make_settings: Any) -> None:
    settings = make_settings(local_embedding_model="/models/mine")
    ollama = settings_for(settings, EmbeddingSpec("ollama:bge-m3", "ollama", "bge-m3"))
    assert (ollama.embedding_provider, ollama.ollama_embedding_model) == ("ollama", "bge-m3")
    local = settings_for(settings, EmbeddingSpec("local", "local", ""))
    assert (local.embedding_provider, local.local_embedding_model) == ("local", "/models/mine")
    spec = EmbeddingSpec("openai:text-embedding-3-small", "openai", "text-embedding-3-small")
    openai = settings_for(settings, spec)
    assert (openai.embedding_provider, openai.openai_embedding_model) == (
        "openai",
        "text-embedding-3-small",
    )


@pytest.fixture
def bge_m3_server() -> Any:
    with OllamaTestServer(
        models=("bge-m3:latest",),
        embedding_dim=DIM,
        context_length=8192,
        embedder=bag_of_words_embedding,  # texts sharing words are near: retrieval works
    ) as server:
        yield server


@pytest.mark.integration
def test_two_models_on_one_corpus_give_one_table_plot_and_json(
    run_module: Any, tmp_path: Path, bge_m3_server: OllamaTestServer
) -> None:
    out_path, plot_path = tmp_path / "models.json", tmp_path / "models.png"
    result = run_module(
        "app.eval",
        "--dataset",
        str(TINY),
        "--embeddings",
        "local,ollama:bge-m3",
        "--repeats",
        "1",
        "--json",
        str(out_path),
        "--plot",
        str(plot_path),
        "--markdown",
        OLLAMA_BASE_URL=bge_m3_server.base_url,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(out_path.read_text())
    assert report["kind"] == "embedding-comparison"
    rows = {row["model"]: row for row in report["models"]}
    assert list(rows) == ["local/all-MiniLM-L6-v2", "ollama/bge-m3"]  # in the order asked

    minilm, bge = rows["local/all-MiniLM-L6-v2"], rows["ollama/bge-m3"]
    assert (minilm["dimension"], minilm["max_tokens"]) == (384, 256)  # from the model folder
    assert (bge["dimension"], bge["max_tokens"]) == (DIM, 2048)  # /api/show; num_ctx 2048
    assert minilm["collection"] != bge["collection"]
    for row in (minilm, bge):
        assert row["chunks"] >= 15
        # Three clearly separate topics: both models find something relevant for every query.
        assert row["mrr@10"] > 0.5
        assert 0 < row["ndcg@10"] <= 1
        assert row["latency_ms"]["p95"] >= row["latency_ms"]["p50"] > 0
        assert row["ingest_chunks_per_s"] > 0
        assert row["ingest"]["files"]["new"] == 15
    # The Ollama model embedded the whole corpus and the questions itself, without prefixes.
    sent = [t for r in bge_m3_server.requests_to("/api/embed") if r.json for t in r.json["input"]]
    assert any("sourdough starter" in text for text in sent)
    assert not any(text.startswith(("passage: ", "search_document: ")) for text in sent)

    table = result.stdout
    for column in ("nDCG@10", "p95 ms", "ingest chunks/s", "dim", "max tokens", "index MB"):
        assert column in table
    markdown_rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in markdown_rows] == list(rows)
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_a_model_ollama_lacks_stops_the_run_before_any_model_ingests(
    run_module: Any, tmp_path: Path, bge_m3_server: OllamaTestServer
) -> None:
    result = run_module(
        "app.eval",
        "--dataset",
        str(TINY),
        "--embeddings",
        "local,ollama:qwen3-embedding",
        OLLAMA_BASE_URL=bge_m3_server.base_url,
    )
    assert result.returncode == ExitCode.PROVIDER, result.stderr
    assert "ollama pull qwen3-embedding" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "chroma" / "eval").exists()  # the local model ingested nothing
    assert bge_m3_server.requests_to("/api/embed") == []
