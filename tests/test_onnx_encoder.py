"""Questions without torch (app/models/onnx_encoder.py): the exported query model gives the vectors
ingest stored, the chat and eval paths import no torch, and the export is generic over
sentence-transformers folders and safe to interrupt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.models.catalog import DEFAULT_LOCAL_MODEL, resolve_local_model
from app.models.local import local_embeddings
from app.models.onnx_encoder import (
    ExportUnsupported,
    OnnxEncoder,
    export,
    export_paths,
    load_export,
    query_encoder,
)
from app.models.torch_free_encoder import TorchFreeEncoder, build_paths
from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR, SAMPLE_QUESTIONS

# Unit tests carry their own mark; the module's default is the integration layer (the embedded
# model, exported and run; entry points as processes).
pytestmark = pytest.mark.integration

QUESTIONS = [json.loads(line) for line in SAMPLE_QUESTIONS.read_text().splitlines() if line]
HEAVY = ("torch", "transformers", "sentence_transformers")
# Runs an entry point as `python -m` does, then reports which heavy modules it imported.
DRIVER = f"""
import runpy, sys
module, *args = sys.argv[1:]
sys.argv = [module, *args]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(f"\\nIMPORTED heavy={{heavy}} onnxruntime={{'onnxruntime' in sys.modules}}", file=sys.stderr)
sys.exit(code)
"""


LOCAL_EMBEDDING_MODEL = resolve_local_model(DEFAULT_LOCAL_MODEL).name  # as exports are named


def model_dir() -> Path:
    return Path(resolve_local_model(DEFAULT_LOCAL_MODEL).path)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, shared_model_cache: Path) -> Path:
    """The sample corpus ingested by `python -m app.ingest`, which ends by exporting the
    query model (into the shared cache, if no test did before)."""
    store = tmp_path_factory.mktemp("store")
    result = subprocess.run(
        [sys.executable, "-m", "app.ingest", str(SAMPLE_DOCS_DIR), "--json"],
        cwd=PROJECT_ROOT,
        env=_env(store, shared_model_cache),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the exporter's progress lines did not end up in the JSON
    # The default model is built torch-free (app/models/torch_free_encoder.py), not exported.
    assert build_paths(LOCAL_EMBEDDING_MODEL, model_dir(), shared_model_cache).manifest.is_file()
    return store


def _env(store: Path, cache: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "CHROMA_DIR": str(store),
        "MODEL_CACHE_DIR": str(cache),
        "EMBEDDING_PROVIDER": "local",
        "CHAT_PROVIDER": "local",
    }


def run_entry_point(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, module, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.integration
def test_chat_answers_without_importing_torch(ingested: Path, shared_model_cache: Path) -> None:
    env = _env(ingested, shared_model_cache) | {"MAX_ANSWER_TOKENS": "32"}
    chat = run_entry_point("app.chat", "-q", QUESTIONS[0]["question"], env=env)
    assert chat.returncode == 0, chat.stderr
    assert QUESTIONS[0]["source"] in chat.stdout.split("Sources:")[1]
    assert "IMPORTED heavy=[] onnxruntime=True" in chat.stderr
    assert "Preparing" not in chat.stderr  # the ingest prepared everything the chat needs


@pytest.mark.integration
def test_eval_answers_without_importing_torch(
    ingested: Path, shared_model_cache: Path, tmp_path: Path
) -> None:
    """One question from outside the documents: the session opens as for any question (both
    models loaded), and no answer needs generating."""
    questions = tmp_path / "questions.jsonl"
    outside = next(q for q in QUESTIONS if q["source"] is None)
    questions.write_text(json.dumps(outside) + "\n")
    report = tmp_path / "answers.json"
    run = run_entry_point(
        "app.eval",
        "--questions",
        str(questions),
        "--json",
        str(report),
        env=_env(ingested, shared_model_cache),
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(report.read_text())["outside"]["says_unknown"] == 1
    assert "IMPORTED heavy=[] onnxruntime=True" in run.stderr


@pytest.mark.integration
def test_query_vectors_match_what_ingest_stored(ingested: Path, shared_model_cache: Path) -> None:
    """Chunks as stored by ingest against the same texts through the query model, and every
    sample question through it and through sentence-transformers (what embedded libraries
    made before the torch-free encoder): cosine >= 0.9999."""
    from app.config import Settings
    from app.store import open_store
    from app.store.library import find_library

    settings = Settings(chroma_dir=ingested, model_cache_dir=shared_model_cache)
    embeddings = local_embeddings(settings, lambda line: None)
    library = find_library(open_store(settings), settings, embeddings.info.key)
    assert library is not None
    collection = library.collection()
    assert collection is not None
    ids = [chunk_id for chunk_id, _ in collection.rows()][:64]
    stored = collection.get(ids, vectors=True)
    assert stored
    assert len(stored) == len(ids)
    assert isinstance(embeddings.query_model, TorchFreeEncoder)
    onnx_chunks = np.array(embeddings.query_model.embed_documents([c.text for c in stored]))
    assert min_cosine(onnx_chunks, np.array([c.vector for c in stored])) >= 0.9999

    questions = [q["question"] for q in QUESTIONS]
    st = pytest.importorskip("sentence_transformers", reason="needs torch (the dev extra)")
    reference = st.SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    torch_questions = reference.encode(questions, normalize_embeddings=True, prompt="")
    onnx_questions = np.array([embeddings.embed_query(q) for q in questions])
    assert min_cosine(onnx_questions, torch_questions) >= 0.9999


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.mark.integration
def test_export_follows_the_folders_pooling_and_normalisation(tmp_path: Path) -> None:
    """A folder that pools with [CLS] and does not normalise gets the same from the graph as
    from sentence-transformers: the export reads modules.json and 1_Pooling/config.json."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "minilm-cls"
    shutil.copytree(model_dir(), folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps([m for m in modules if m["idx"] != 2]))

    paths = export("minilm-cls", folder, tmp_path / "cache")
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["modules"] == ["Transformer", "Pooling"]
    assert manifest["pooling"] == {"pooling_mode_cls_token": True}
    texts = [q["question"] for q in QUESTIONS[:8]]
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts)
    got = OnnxEncoder(paths, folder, normalize=False).encode(texts)
    assert min_cosine(got, reference) >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(reference, axis=1), rtol=1e-4)
    assert np.linalg.norm(reference, axis=1).min() > 1.5  # really not normalised


@pytest.mark.unit
def test_a_folder_the_exporter_cannot_handle_stays_on_sentence_transformers(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    (folder / "modules.json").write_text(
        json.dumps([{"idx": 0, "type": "sentence_transformers.models.StaticEmbedding"}])
    )
    with pytest.raises(ExportUnsupported, match="StaticEmbedding"):
        export("static", folder, tmp_path / "cache")
    said: list[str] = []
    fallback = object()
    chosen = query_encoder(
        "static",
        folder,
        tmp_path / "cache",
        loaded=lambda: None,
        fallback=lambda: fallback,  # type: ignore[arg-type,return-value]
        notify=said.append,
    )
    assert chosen is fallback
    assert "stays on sentence-transformers" in said[-1]
    assert "StaticEmbedding" in said[-1]


@pytest.mark.integration
def test_an_interrupted_export_leaves_nothing_that_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    def crash(model: Any, args: Any, f: str, **kwargs: Any) -> None:
        Path(f).write_bytes(b"half a graph")
        raise RuntimeError("killed mid-export")

    monkeypatch.setattr(torch.onnx, "export", crash)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="killed"):
        export(LOCAL_EMBEDDING_MODEL, model_dir(), cache)
    assert list(cache.iterdir()) == []
    assert load_export(LOCAL_EMBEDDING_MODEL, model_dir(), cache, normalize=True) is None


@pytest.mark.unit
def test_a_graph_that_does_not_match_its_manifest_is_not_used(tmp_path: Path) -> None:
    """E.g. a cache copied while it was being written: the size recorded last must match."""
    paths = export_paths(LOCAL_EMBEDDING_MODEL, model_dir(), tmp_path)
    paths.graph.write_bytes(b"truncated")
    paths.manifest.write_text(json.dumps({"graph_bytes": 91_000_000}))
    assert load_export(LOCAL_EMBEDDING_MODEL, model_dir(), tmp_path, normalize=True) is None
