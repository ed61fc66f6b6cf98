"""Ways to run the embedded default (all-MiniLM-L6-v2) without torch, side by side.

    python benchmarks/torch_free_candidates.py [--docs 2000] [--check 3000] [--threads 0]
        [--candidates built,built-plain,numpy,export,st] [--candding-python PATH]

Candidates (each in its own fresh process, one after another):

- `built`: the graph `app/models/torch_free_encoder.py` builds from `model.safetensors` (written
  by `app/models/onnx_proto.py`), with onnxruntime's fused CPU operators (Attention,
  SkipLayerNormalization, BiasGelu), run by onnxruntime; opened from the model cache (built
  there first, not timed).
- `built-memory`: the same graph built in memory at start (weights read).
- `built-plain`: the same graph in standard opset-17 operators only, built in memory.
- `numpy`: a plain numpy forward pass over the same weights.
- `export`: the query path before the torch-free encoder, the graph `torch.onnx.export` made
  (`app/models/onnx_encoder.py`), exported first if the cache has none (needs torch; the export
  is not timed).
- `st`: sentence-transformers on torch, the ingest path before it; its vectors are the reference.
- `candding`: candding (a Rust/candle runtime that loads the safetensors itself), when
  `--candding-python` names an interpreter that has it (it is not a project dependency).

For each: cold start (process start to the first query vector: interpreter, imports, loading
or building, one question), throughput in chunks/s over the first `--docs` MS MARCO passages
(title, blank line, text, as `benchmarks/ingest_speed.py` writes them; batches of 32, each
runtime sorting by length as sentence-transformers does), and equality against
sentence-transformers over `--check` texts (the passages, plus long texts that are truncated
and a few edge cases): the smallest cosine and the largest absolute difference.

Writes benchmarks/results/torch-free-candidates.json (date, machine, load) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CORPUS = ROOT.parent / "shared" / "bench-data" / "msmarco-5k"
RESULTS = ROOT / "benchmarks" / "results" / "torch-free-candidates.json"
QUESTION = "Who founded the town of Brindlemoor?"
BATCH = 32
CANDIDATES = ("built", "built-memory", "built-plain", "numpy", "export", "st", "candding")


def read_texts(corpus: Path, count: int) -> list[str]:
    path = corpus / "corpus.jsonl" if corpus.is_dir() else corpus
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            title, text = (row.get("title") or "").strip(), row["text"]
            texts.append(f"{title}\n\n{text}" if title else text)
    edge = ["", " ", "a", "Ünïcödé — 東京 ☃", "\x00 nul", "word " * 400]
    longs = [" ".join(texts[i : i + 6]) for i in range(0, 600, 6)]  # past 256 word pieces
    return (texts[:count] + longs + edge)[: max(count, 1)]


def model_dir() -> Path:
    if os.environ.get("CANDIDATE_MODEL_DIR"):
        return Path(os.environ["CANDIDATE_MODEL_DIR"])
    from app.models.catalog import DEFAULT_LOCAL_MODEL, resolve_local_model

    return Path(resolve_local_model(DEFAULT_LOCAL_MODEL).path)


# --- candidates, run inside the worker process ------------------------------------------------


def numpy_encoder(folder: Path) -> Any:
    """all-MiniLM-L6-v2's forward pass in numpy (BERT, mean pooling, normalized)."""
    import numpy as np
    from tokenizers import Tokenizer

    from app.models.torch_free_encoder import read_folder

    spec = read_folder(folder)
    w, lay = spec.weights, spec.layers
    tokenizer = Tokenizer.from_file(str(spec.transformer_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=spec.max_seq_length)
    tokenizer.enable_padding(pad_id=spec.pad_id, pad_token=spec.pad_token)
    transposed = {k: np.ascontiguousarray(v.T) for k, v in w.items() if v.ndim == 2}

    def layer_norm(x: Any, name: str) -> Any:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + lay.eps) * w[name + ".weight"] + w[name + ".bias"]

    def linear(x: Any, name: str) -> Any:
        return x @ transposed[name + ".weight"] + w[name + ".bias"]

    def activate(x: Any) -> Any:
        """GELU with erf by Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7): numpy has no
        erf of its own."""
        z = np.abs(x) / np.float32(np.sqrt(2.0))
        t = 1.0 / (1.0 + 0.3275911 * z)
        poly = t * (
            0.254829592
            + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
        )
        erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
        return 0.5 * x * (1.0 + erf)

    heads, dim = lay.heads, lay.hidden // lay.heads

    def encode(texts: list[str]) -> Any:
        enc = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc])
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        types = np.array([e.type_ids for e in enc])
        b, s = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:s]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = layer_norm(x, "embeddings.LayerNorm")
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for i in range(lay.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (
                linear(x, p + f"attention.self.{n}").reshape(b, s, heads, dim).transpose(0, 2, 1, 3)
                for n in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(dim)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, lay.hidden)
            x = layer_norm(
                linear(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm"
            )
            inner = activate(linear(x, p + "intermediate.dense"))
            x = layer_norm(linear(inner, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1)[:, None], 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return encode


def load_candidate(name: str, threads: int | None) -> Any:
    """A function texts -> normalized vectors (numpy), model loaded."""
    import numpy as np

    folder = model_dir()
    if name == "built":
        from app.models.torch_free_encoder import load_encoder

        cache = Path(os.environ["CANDIDATE_CACHE"])
        built = load_encoder("all-MiniLM-L6-v2", folder, cache, threads=threads)
        if built.source != "cache":
            raise SystemExit("no build in the cache: run the parent, which builds first")
        return built.encode
    if name in ("built-memory", "built-plain"):
        from app.models.torch_free_encoder import TorchFreeEncoder, read_folder

        fused = name == "built-memory"
        return TorchFreeEncoder.from_spec(read_folder(folder), fused=fused, threads=threads).encode
    if name == "numpy":
        return numpy_encoder(folder)
    if name == "export":
        from app.models.catalog import resolve_local_model
        from app.models.onnx_encoder import load_export

        cache = Path(os.environ["CANDIDATE_CACHE"])
        encoder = load_export(resolve_local_model(str(folder)).name, folder, cache, normalize=True)
        if encoder is None:
            raise SystemExit("no export in the cache: run the parent, which exports first")
        if threads:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            encoder.session = onnxruntime.InferenceSession(
                str(encoder.session._model_path), options, providers=["CPUExecutionProvider"]
            )
        return encoder.encode
    if name == "st":
        if threads:
            import torch

            torch.set_num_threads(threads)
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)

        def encode_st(texts: list[str]) -> Any:
            return model.encode(
                texts,
                batch_size=BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                prompt="",
            )

        return encode_st
    if name == "candding":
        import candding

        model = candding.TextEmbedding(str(folder), device="cpu", batch_size=BATCH)

        def encode_candding(texts: list[str]) -> Any:
            return np.asarray(model.embed(texts, batch_size=BATCH), dtype=np.float32)

        return encode_candding
    raise SystemExit(f"unknown candidate {name}")


def worker(name: str, texts_file: Path, docs: int, out: Path, threads: int | None) -> None:
    import numpy as np

    encode = load_candidate(name, threads)
    encode([QUESTION])
    print("READY", flush=True)
    texts = json.loads(texts_file.read_text())

    def in_batches(chosen: list[str]) -> Any:
        order = sorted(range(len(chosen)), key=lambda i: -len(chosen[i]))
        vectors = [None] * len(chosen)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            for i, v in zip(batch, encode([chosen[i] for i in batch]), strict=True):
                vectors[i] = v
        return np.array(vectors, dtype=np.float32)

    in_batches(texts[:BATCH])  # warm-up
    started = time.perf_counter()
    timed = in_batches(texts[:docs])
    seconds = time.perf_counter() - started
    rest = in_batches(texts[docs:]) if len(texts) > docs else np.zeros((0, timed.shape[1]))
    np.save(out, np.concatenate([timed, rest]).astype(np.float32))
    print(json.dumps({"docs": docs, "seconds": seconds}), flush=True)


# --- the parent --------------------------------------------------------------------------------


def run(
    name: str,
    python: str,
    args: argparse.Namespace,
    texts_file: Path,
    scratch: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    out = scratch / f"{name}.npy"
    cmd = [
        python,
        __file__,
        "--worker",
        name,
        "--texts-file",
        str(texts_file),
        "--docs",
        str(args.docs),
        "--out",
        str(out),
        "--threads",
        str(args.threads),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert process.stdout is not None
    cold = None
    timing: dict[str, Any] = {}
    for line in process.stdout:
        if line.startswith("READY") and cold is None:
            cold = time.perf_counter() - started
        elif line.startswith("{"):
            timing = json.loads(line)
    if process.wait() != 0:
        return {"candidate": name, "error": f"exit {process.returncode}"}
    return {
        "candidate": name,
        "cold_start_s": round(cold or 0.0, 2),
        "chunks_per_s": round(timing["docs"] / timing["seconds"], 1),
        "vectors": out,
    }


def export_first(cache: Path) -> None:
    from app.models.catalog import resolve_local_model
    from app.models.onnx_encoder import export, load_export

    folder = model_dir()
    name = resolve_local_model(str(folder)).name
    if load_export(name, folder, cache, normalize=True) is None:
        print("Exporting with torch.onnx (once) ...", file=sys.stderr, flush=True)
        export(name, folder, cache)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[2:]),
    )
    parser.add_argument("--docs", type=int, default=2000, help="passages timed (default 2000)")
    parser.add_argument("--check", type=int, default=3000, help="texts compared (default 3000)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--candidates", default="built,built-memory,built-plain,numpy,export,st")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    parser.add_argument("--candding-python", default="", help="an interpreter with candding")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.texts_file, args.docs, args.out, args.threads or None)
        return 0

    import numpy as np

    from app.evaluation.report import load_average, write_results

    load = load_average()
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    if args.candding_python and "candding" not in names:
        names.append("candding")
    if "st" in names:  # the reference runs first
        names.remove("st")
        names.insert(0, "st")
    with tempfile.TemporaryDirectory(prefix="torch-free-") as tmp:
        scratch = Path(tmp)
        texts_file = scratch / "texts.json"
        texts_file.write_text(json.dumps(read_texts(args.corpus, max(args.check, args.docs))))
        env = os.environ | {
            "CANDIDATE_CACHE": str(scratch / "cache"),
            "CANDIDATE_MODEL_DIR": str(model_dir()),
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        if "export" in names:
            export_first(scratch / "cache")
        if "built" in names:
            from app.models.torch_free_encoder import load_encoder

            load_encoder("all-MiniLM-L6-v2", model_dir(), scratch / "cache")
        rows = []
        reference = None
        for name in names:
            python = args.candding_python if name == "candding" else sys.executable
            print(f"{name} ...", file=sys.stderr, flush=True)
            row = run(name, python, args, texts_file, scratch, env)
            vectors_file = row.pop("vectors", None)
            if vectors_file is not None:
                vectors = np.load(vectors_file)
                if name == "st":
                    reference = vectors
                if reference is not None:
                    cosine = (vectors * reference).sum(axis=1)
                    row["min_cosine"] = float(cosine.min())
                    row["max_abs_diff"] = float(np.abs(vectors - reference).max())
                    row["texts_compared"] = len(vectors)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    write_results(
        args.json, load, docs=args.docs, threads=args.threads or "default", candidates=rows
    )
    print(
        f"{'candidate':12} {'cold start s':>12} {'chunks/s':>9} {'min cosine':>12} "
        f"{'max |diff|':>10}"
    )
    for row in rows:
        if "error" in row:
            print(f"{row['candidate']:12} {row['error']}")
            continue
        print(
            f"{row['candidate']:12} {row['cold_start_s']:12.2f} {row['chunks_per_s']:9.1f} "
            f"{row.get('min_cosine', float('nan')):12.7f} "
            f"{row.get('max_abs_diff', float('nan')):10.2e}"
        )
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
