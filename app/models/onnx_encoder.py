"""Query embeddings without torch: a sentence-transformers folder exported once to ONNX and run
by onnxruntime with the folder's own `tokenizer.json`.

The export (`torch.onnx.export`, which needs `onnx` and `onnxscript`) happens where torch is
loaded anyway, at the end of an ingest, or once on a chat that finds none. It is the whole
pipeline the folder's `modules.json` lists (Transformer, then Pooling as `1_Pooling/config.json`
sets it, Dense, Normalize), so it returns what sentence-transformers returns. It is checked
against sentence-transformers before it is kept, and kept in the model cache directory (beside
the store) under a key made from the folder's files, written to a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

EXPORT_FORMAT = 1  # bump when the export or its manifest changes: old exports are then redone
# What the exported graph may contain; anything else (a router, a static embedding, an image
# tower) is not exported and queries go through sentence-transformers as before.
EXPORTABLE_MODULES = {"Transformer", "Pooling", "Dense", "Normalize"}
# Tokenizer outputs by the input names sentence-transformers gives the transformer.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}
MIN_COSINE = 0.9999  # an export whose vectors differ more than this from torch's is not kept
PROBE_TEXTS = [
    "Who founded the town?",
    "The ferry leaves the harbour at 07:15 on weekdays, and at 09:00 on Sundays and holidays.",
    "tidal",
]
BATCH_SIZE = 32
STALE_PARTIAL_SECONDS = 3600  # a temporary file older than this was left by a killed export


class ExportUnsupported(Exception):
    """The folder holds something this exporter does not handle; the message says what."""


@dataclass(frozen=True)
class ExportPaths:
    graph: Path
    manifest: Path


def folder_key(model_dir: Path) -> str:
    """Changes when any file of the model folder changes (size or modification time), or when
    the export format does; cheap enough to compute on every start."""
    digest = hashlib.sha256(f"format {EXPORT_FORMAT}".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        rel = path.relative_to(model_dir).as_posix()
        digest.update(f"\n{rel}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export_paths(name: str, model_dir: Path, cache_dir: Path) -> ExportPaths:
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "model"
    stem = f"{slug}-{folder_key(model_dir)}"
    return ExportPaths(cache_dir / f"{stem}.onnx", cache_dir / f"{stem}.onnx.json")


def exportable_modules(model_dir: Path) -> list[str]:
    """The module types `modules.json` lists, refused with the reason if one cannot be
    exported; a folder without `modules.json` is a plain transformer with mean pooling."""
    if not (model_dir / "tokenizer.json").is_file():
        raise ExportUnsupported(f"{model_dir} has no tokenizer.json for the tokenizers library")
    listing = model_dir / "modules.json"
    if not listing.is_file():
        return ["Transformer", "Pooling"]
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in json.loads(listing.read_text())]
    unsupported = [k for k in kinds if k not in EXPORTABLE_MODULES]
    if unsupported:
        raise ExportUnsupported(f"{model_dir} uses {', '.join(unsupported)}")
    return kinds


class OnnxEncoder(Embeddings):
    """Embeds texts with an exported graph: tokenizers in, onnxruntime through, numpy out."""

    def __init__(self, paths: ExportPaths, model_dir: Path, *, normalize: bool) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        manifest = json.loads(paths.manifest.read_text())
        self.manifest = manifest
        self.normalize = normalize
        self.inputs: list[str] = manifest["inputs"]
        self.lower_case: bool = manifest["do_lower_case"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(manifest["max_seq_length"]))
        # Pad to the longest text of a batch: tokenizer.json may ask for a fixed length.
        self.tokenizer.enable_padding(pad_id=manifest["pad_id"], pad_token=manifest["pad_token"])
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: no notices on the user's terminal
        self.session = onnxruntime.InferenceSession(
            str(paths.graph), options, providers=["CPUExecutionProvider"]
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            vectors.extend(self.encode(texts[start : start + BATCH_SIZE]).tolist())
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if self.lower_case:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            name: np.array([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in self.inputs
        }
        vectors: np.ndarray = self.session.run(None, feeds)[0]
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


def load_export(
    name: str, model_dir: Path, cache_dir: Path, *, normalize: bool
) -> OnnxEncoder | None:
    """The cached export of this folder, or None when there is none (or only a stale one)."""
    paths = export_paths(name, model_dir, cache_dir)
    try:
        manifest = json.loads(paths.manifest.read_text())
        if manifest.get("graph_bytes") != paths.graph.stat().st_size:
            return None
    except (OSError, ValueError):
        return None
    return OnnxEncoder(paths, model_dir, normalize=normalize)


def query_encoder(
    name: str,
    model_dir: Path,
    cache_dir: Path,
    *,
    loaded: Callable[[], Embeddings | None],
    fallback: Callable[[], Embeddings],
    notify: Callable[[str], None],
) -> Embeddings:
    """The cached ONNX export; else export it now (once, torch loaded for it); else, if the
    folder cannot be exported, `fallback` (sentence-transformers), saying why."""
    encoder = load_export(name, model_dir, cache_dir, normalize=True)
    if encoder is not None:
        return encoder
    notify(f"Preparing {name} for questions without torch (once, about 10 s): {cache_dir}")
    try:
        # An ingest that just ran has the model in memory already: export that one.
        client = getattr(loaded(), "_client", None)
        model = client if _is_sentence_transformer(client) else None
        export(name, model_dir, cache_dir, model=model)
        encoder = load_export(name, model_dir, cache_dir, normalize=True)
    except Exception as exc:  # the exporter raises many types; every one means "not exported"
        notify(f"{name} stays on sentence-transformers for questions: {exc}")
        return fallback()
    if encoder is None:
        notify(f"{name} stays on sentence-transformers for questions: the export vanished")
        return fallback()
    return encoder


def _is_sentence_transformer(model: object) -> bool:
    return type(model).__name__ == "SentenceTransformer"


def export(
    name: str, model_dir: Path, cache_dir: Path, model: SentenceTransformer | None = None
) -> ExportPaths:
    """Export the folder's pipeline to ONNX, check it against sentence-transformers, and keep
    it under `cache_dir`. Needs torch, sentence-transformers, onnx and onnxscript."""
    kinds = exportable_modules(model_dir)
    paths = export_paths(name, model_dir, cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(cache_dir)
    import torch

    if model is None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.eval()
    # The transformer's own inputs, by name (`tokenize` before sentence-transformers 6).
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = preprocess(PROBE_TEXTS)
    tensors = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    unknown = set(tensors) - set(ENCODING_FIELDS)
    if unknown:
        raise ExportUnsupported(f"{model_dir} takes inputs {sorted(unknown)}")
    constants = {k: v for k, v in features.items() if k not in tensors}
    names = list(tensors)
    pipeline_modules = model

    class Pipeline(torch.nn.Module):
        """The sentence-transformers modules, called with keyword tensors, giving one vector
        per text."""

        def __init__(self) -> None:
            super().__init__()
            self.model = pipeline_modules

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor | None = None,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            given = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            inputs = {k: v for k, v in given.items() if v is not None}
            return self.model({**inputs, **constants})["sentence_embedding"]

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with partial_file(paths.graph) as graph_tmp:
        # The exporter prints progress on stdout and warns; neither is the user's business.
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            _quiet_logger("torch.onnx"),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pipeline().eval(),
                (),
                str(graph_tmp),
                kwargs=tensors,
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                dynamo=True,  # torch 2.13's default, said aloud: it is what was checked
                external_data=False,  # one file: a rename then publishes it whole
            )
        manifest = _manifest(model, model_dir, names, kinds, graph_tmp.stat().st_size)
        _check_against_torch(model, graph_tmp, manifest, model_dir)
        os.replace(graph_tmp, paths.graph)
    with partial_file(paths.manifest) as manifest_tmp:
        manifest_tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(manifest_tmp, paths.manifest)  # last: the export counts from here on
    return paths


def _manifest(
    model: SentenceTransformer, model_dir: Path, names: list[str], kinds: list[str], size: int
) -> dict[str, Any]:
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    padding = tokenizer.get("padding") or {}
    hf_tokenizer: Any = model.tokenizer
    pad_token = padding.get("pad_token") or getattr(hf_tokenizer, "pad_token", None) or "[PAD]"
    pad_id = padding.get("pad_id")
    if pad_id is None:
        pad_id = getattr(hf_tokenizer, "pad_token_id", None) or 0
    # Renamed in sentence-transformers 6; the old name warns there.
    dimension = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    pooling: dict[str, Any] = {}
    pooling_config = model_dir / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        pooling = json.loads(pooling_config.read_text())
    return {
        "format": EXPORT_FORMAT,
        "model": model_dir.name,
        "modules": kinds,
        "pooling": {k: v for k, v in pooling.items() if k.startswith("pooling_mode") and v},
        "inputs": names,
        "max_seq_length": int(model.max_seq_length or hf_tokenizer.model_max_length),
        "do_lower_case": bool(getattr(model[0], "do_lower_case", False)),
        "pad_id": int(pad_id),
        "pad_token": str(pad_token),
        "dimension": int(dimension() or 0),
        "graph_bytes": size,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _check_against_torch(
    model: SentenceTransformer, graph: Path, manifest: dict[str, Any], model_dir: Path
) -> None:
    import numpy as np

    # prompt="": a folder's default prompt is not part of the graph (the app adds prefixes).
    expected = model.encode(
        PROBE_TEXTS, normalize_embeddings=True, convert_to_numpy=True, prompt=""
    )
    with tempfile.TemporaryDirectory() as scratch:
        manifest_path = Path(scratch) / "manifest.json"
        manifest_path.write_text(json.dumps(manifest))
        encoder = OnnxEncoder(ExportPaths(graph, manifest_path), model_dir, normalize=True)
        got = encoder.encode(PROBE_TEXTS)
    cosine = float(np.min(np.sum(got * expected, axis=1)))
    if cosine < MIN_COSINE:
        raise ExportUnsupported(
            f"the ONNX export of {model_dir.name} differs from sentence-transformers "
            f"(cosine {cosine:.5f})"
        )


@contextlib.contextmanager
def partial_file(target: Path) -> Iterator[Path]:
    """A temporary file beside `target`, removed unless it was renamed onto it."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
    os.close(handle)
    path = Path(name)
    path.chmod(0o644)  # mkstemp's 0600 would hide a shared store's cache from its other users
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def remove_stale_partials(cache_dir: Path) -> None:
    """Delete temporary files a killed build left in the model cache."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for path in cache_dir.glob("*.partial"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
