"""Threads for the embedded model, chosen by measurement: chunks/s of all-MiniLM-L6-v2 on the
MS MARCO passage set for onnxruntime's intra-op threads (1, 2, its default: one per physical
core) and for today's sentence-transformers path (torch, when installed), directly and inside
a full ingest, where INGEST_WORKERS parser processes share the cores with the model.

    python benchmarks/embed_threads.py --docs 2000 [--repeat 2] [--threads 1,2,0]

Direct: `embed_documents` over every passage (title, blank line, text, as
benchmarks/ingest_speed.py writes them), model loaded and warmed up first. Ingest: a full
`sync_collection` of the same passages as files into a fresh store (ingest_workers from the
settings), the model's threads set as given. Rounds alternate the order. Writes
benchmarks/results/embed-threads.json (date, machine, load) and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ingest_speed import DEFAULT_CORPUS, read_corpus, write_folder  # noqa: E402

from app.evaluation.report import load_average, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "embed-threads.json"


def onnx_model(threads: int, batch_size: int) -> Any:
    from app.config import load_settings
    from app.models.catalog import resolve_local_model
    from app.models.torch_free_encoder import load_encoder

    settings = load_settings()
    model = resolve_local_model(settings.local_embedding_model)
    return load_encoder(
        model.name,
        model.path,
        settings.model_cache_path,
        threads=threads or None,
        batch_size=batch_size,
    )


def st_model(batch_size: int) -> Any:
    from langchain_huggingface import HuggingFaceEmbeddings

    from app.config import load_settings
    from app.models.catalog import resolve_local_model

    settings = load_settings()
    path = str(resolve_local_model(settings.local_embedding_model).path)
    return HuggingFaceEmbeddings(
        model_name=path,
        model_kwargs={"device": "cpu", "local_files_only": True},
        encode_kwargs={"normalize_embeddings": True, "batch_size": batch_size, "prompt": ""},
    )


def direct(model: Any, texts: list[str]) -> float:
    gc.collect()
    start = time.perf_counter()
    model.embed_documents(texts)
    return len(texts) / (time.perf_counter() - start)


def ingest(model: Any, folder: Path, store: Path) -> dict[str, Any]:
    from app.config import load_settings
    from app.console import status
    from app.indexing.sync import sync_collection
    from app.models.local import local_embeddings

    settings = load_settings(chroma_dir=store, embedding_provider="local")
    embeddings = local_embeddings(settings, status)
    embeddings._model = model  # the model as configured here, already loaded
    gc.collect()
    start = time.perf_counter()
    report = sync_collection(settings, [folder], embeddings)
    seconds = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"ingest failed: {report.as_dict()}")
    return {
        "chunks_per_s": report.chunks_added / seconds,
        "seconds": seconds,
        "stages_s": report.as_dict()["seconds"],
        "ingest_workers": settings.ingest_workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", default="1,2,0", help="onnxruntime intra-op; 0: default")
    parser.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    parser.add_argument("--no-ingest", action="store_true", help="direct embedding only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ["LOCALRAG_ENV_FILE"] = os.devnull
    from app.config import load_settings
    from app.models.local import use_offline_hub

    use_offline_hub()
    load_at_start = load_average()
    batch_size = load_settings().embedding_batch_size
    texts = [text for _, text in read_corpus(args.corpus, args.docs)]

    models: dict[str, Any] = {}
    for threads in (int(t) for t in args.threads.split(",")):
        models[f"onnxruntime, {threads or 'default'} thread(s)"] = onnx_model(threads, batch_size)
    if not args.no_st:
        try:
            models["sentence-transformers (torch)"] = st_model(batch_size)
        except ImportError:
            print("note: sentence-transformers is not installed: skipped")
    for model in models.values():
        model.embed_documents(texts[:batch_size])  # warm up

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="embed-threads-") as tmp:
        folder = Path(tmp) / "docs"
        write_folder(read_corpus(args.corpus, args.docs), folder)
        for index in range(args.repeat):
            names = list(models) if index % 2 == 0 else list(reversed(models))
            row: dict[str, Any] = {"order": names, "load_average": load_average()}
            for name in names:
                row[name] = {"direct_chunks_per_s": direct(models[name], texts)}
                if not args.no_ingest:
                    store = Path(tmp) / f"store-{index}-{len(row)}"
                    row[name]["ingest"] = ingest(models[name], folder, store)
                print(f"round {index + 1}: {name}: {row[name]}", flush=True)
            rounds.append(row)

    summary: dict[str, Any] = {}
    print(f"\n{'model':40} {'direct chunks/s':>16} {'ingest chunks/s':>16}")
    for name in models:
        direct_rates = [r[name]["direct_chunks_per_s"] for r in rounds]
        summary[name] = {"direct_chunks_per_s": statistics.median(direct_rates)}
        ingest_rate = "-"
        if not args.no_ingest:
            rates = [r[name]["ingest"]["chunks_per_s"] for r in rounds]
            summary[name]["ingest_chunks_per_s"] = statistics.median(rates)
            ingest_rate = f"{summary[name]['ingest_chunks_per_s']:.1f}"
        print(f"{name:40} {summary[name]['direct_chunks_per_s']:16.1f} {ingest_rate:>16}")
    command = f"python benchmarks/embed_threads.py --docs {args.docs} --repeat {args.repeat}"
    write_results(
        args.output,
        load_at_start,
        command=command,
        documents=args.docs,
        batch_size=batch_size,
        rounds=rounds,
        summary=summary,
    )
    print(f"load average at end: {load_average()}; results written to {args.output}")


if __name__ == "__main__":
    main()
