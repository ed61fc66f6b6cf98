"""Ingest speed on MS MARCO passages with the embedded `local` model (all-MiniLM-L6-v2), or
through the Ollama provider against the suite's Ollama-compatible test server whose fixed
per-request delay stands in for the model.

    python benchmarks/ingest_speed.py --docs 5000
    python benchmarks/ingest_speed.py --docs 2000 --provider ollama --delay-ms 800

Options: --corpus DIR (default <repo>/../shared/bench-data/msmarco-5k, holding corpus.jsonl),
--repeat N (default 1; ours and the tutorial pipeline then run in alternating order).
The tutorial pipeline needs langchain-community, which the project itself does not install.

Each passage is written as one .txt file (title, blank line, text) into a temporary folder
spread over 50 subfolders. The model is loaded once and warmed up with one batch, then, in one
process, the script measures:

1. full ingest (`sync_collection` into a fresh CHROMA_DIR, the preloaded model) divided by the
   time the same model takes to embed the chunks that ingest produced (read back from the
   collection) in one direct `embed_documents` call of the same model object, same batch size.
   Target <= 1.25. For reference it also times the direct call made one batch at a time, as
   the ingest sends them (sentence-transformers then cannot length-sort across batches).
2. a re-run on the unchanged folder divided by the full ingest, in-process and as the command
   a user runs (`python -m app.ingest FOLDER`, wall time including interpreter start and
   imports). Target <= 0.05.
3. the typical tutorial pipeline (DirectoryLoader + TextLoader, RecursiveCharacterTextSplitter,
   Chroma.from_documents with random ids, the same preloaded model) divided by ours; it is run
   a second time on the same folder to count the duplicates it leaves.

Every call the model gets is traced on both sides (start, end, texts, and for the embedded
model the padded and real tokens it runs), so the report says how many requests each side sent,
how long the model sat idle during the ingest, and how much padding each side paid for. The
tutorial pipeline is skipped when langchain-community is not installed, and on the Ollama path.
With --provider ollama the test server runs in its own process (as Ollama does) and the
direct side is the model's own batches, `ModelEmbeddings.embed_documents` (EMBEDDING_BATCH_SIZE
texts a request).

Results go to stdout and to benchmarks/results/ingest_speed.json (git-ignored), followed by
Markdown rows for the README's benchmark table.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from app.evaluation.report import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "bench-data" / "msmarco-5k"
RESULTS = ROOT / "benchmarks" / "results" / "ingest_speed.json"
SUBFOLDERS = 50
TARGET_FULL = 1.10
TARGET_RERUN = 0.05


# --- machine and corpus --------------------------------------------------------------------


def read_corpus(corpus: Path, count: int) -> list[tuple[str, str]]:
    """(id, file text) of the first `count` passages."""
    path = corpus / "corpus.jsonl" if corpus.is_dir() else corpus
    passages: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if len(passages) >= count:
                break
            if not line.strip():
                continue
            row = json.loads(line)
            title, text = (row.get("title") or "").strip(), row["text"]
            passages.append((str(row["_id"]), f"{title}\n\n{text}" if title else text))
    if len(passages) < count:
        raise SystemExit(f"{path} holds only {len(passages)} passages, {count} asked for")
    return passages


def write_folder(passages: list[tuple[str, str]], folder: Path) -> None:
    for index, (doc_id, text) in enumerate(passages):
        sub = folder / f"d{index % SUBFOLDERS:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{doc_id}.txt").write_text(text, encoding="utf-8")


# --- the measurements ----------------------------------------------------------------------


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    gc.collect()
    start = time.perf_counter()
    result = call(*args, **kwargs)
    return result, time.perf_counter() - start


def import_stores(tutorial: bool) -> bool:
    """Imports both pipelines need; False when the tutorial pipeline cannot run."""
    import chromadb  # noqa: F401
    import langchain_chroma  # noqa: F401

    if not tutorial:
        return False
    with warnings.catch_warnings():  # "langchain-community is being sunset": the tutorials use it
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import langchain_community.document_loaders  # noqa: F401
        except ImportError:
            print(
                "note: the tutorial pipeline is skipped: it needs langchain-community, which "
                "localrag does not depend on (pip install langchain-community)"
            )
            return False
    return True


# --- the model's calls, traced -------------------------------------------------------------


class TracedModel:
    """Wraps the model `ModelEmbeddings` loaded: records each `embed_documents` call's start
    and end (perf_counter seconds), texts and characters; the rest passes through."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []
        self.texts: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        start = time.perf_counter()
        vectors = self.inner.embed_documents(texts)
        self.calls.append(
            {"start": start, "end": time.perf_counter(), "texts": len(texts)}
            | {"characters": sum(map(len, texts))}
        )
        self.texts.append(list(texts))
        return vectors

    def reset(self) -> None:
        self.calls, self.texts = [], []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def trace_summary(traced: TracedModel, wall_start: float, wall_s: float) -> dict[str, Any]:
    """What the model did during `wall_s`: requests, busy and idle seconds, padding."""
    calls = traced.calls
    busy = sum(c["end"] - c["start"] for c in calls)
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(calls)]
    summary: dict[str, Any] = {
        "requests": len(calls),
        "texts": sum(c["texts"] for c in calls),
        "texts_per_request": sorted(c["texts"] for c in calls),
        "model_busy_s": round(busy, 3),
        "model_idle_s": round(wall_s - busy, 3),
        "before_first_request_s": round(calls[0]["start"] - wall_start, 3) if calls else None,
        "after_last_request_s": round(wall_start + wall_s - calls[-1]["end"], 3) if calls else None,
        "gaps_between_requests_s": round(sum(gaps), 3),
        "largest_gap_s": round(max(gaps), 3) if gaps else 0.0,
        "overlapping_requests": sum(1 for g in gaps if g < 0),
    }
    token_lengths = getattr(traced.inner, "token_lengths", None)
    batch_size = getattr(traced.inner, "batch_size", None)
    if callable(token_lengths) and batch_size:
        from app.models.embeddings import token_batches

        real = padded = 0
        for texts in traced.texts:
            lengths = token_lengths(texts)
            real += sum(lengths)
            for batch in token_batches(lengths, batch_size):
                padded += len(batch) * max(lengths[i] for i in batch)
        summary["tokens"] = real
        summary["padded_tokens"] = padded
        summary["padding_overhead"] = round(padded / real, 3) if real else None
    return summary


def read_back_texts(settings: Any, embeddings: Any) -> list[str]:
    """Every chunk's text as stored, read through the store seam in pages."""
    from app.store import open_store
    from app.store.library import find_library

    store = open_store(settings)
    library = find_library(store, settings, embeddings.info.key)
    collection = library.collection() if library is not None else None
    assert collection is not None, "the ingest wrote no collection"
    ids = [chunk_id for chunk_id, _ in collection.rows()]
    texts: list[str] = []
    page = 5000
    for start in range(0, len(ids), page):
        texts.extend(c.text for c in collection.get(ids[start : start + page]))
    store.close()
    return texts


def run_ours(folder: Path, store: Path, embeddings: Any, provider: str) -> dict[str, Any]:
    from app.config import load_settings
    from app.indexing.sync import sync_collection

    settings = load_settings(chroma_dir=store, embedding_provider=provider)
    traced: TracedModel = embeddings.model  # loaded and wrapped before any timing
    result: dict[str, Any] = {}

    traced.reset()
    wall_start = time.perf_counter()
    report, full = timed(sync_collection, settings, [folder], embeddings)
    if not report.ok or report.chunks_added == 0:
        raise SystemExit(f"full ingest failed: {json.dumps(report.as_dict())[:2000]}")
    result["full_s"] = full
    result["full_stages_s"] = report.as_dict()["seconds"]
    result["full_model_trace"] = trace_summary(traced, wall_start, full)
    result["files"] = len(report.new)

    texts, result["read_back_s"] = timed(read_back_texts, settings, embeddings)
    if len(texts) != report.chunks_added:
        raise SystemExit(f"read back {len(texts)} chunks, the ingest added {report.chunks_added}")
    result["chunks"] = len(texts)

    # Direct: the embedded model gets every chunk in one call (it batches by tokens itself);
    # a model server gets the batches ModelEmbeddings sends, one request each.
    direct = traced.embed_documents if provider == "local" else embeddings.embed_documents
    traced.reset()
    wall_start = time.perf_counter()
    _, result["direct_s"] = timed(direct, texts)
    result["direct_model_trace"] = trace_summary(traced, wall_start, result["direct_s"])

    def per_batch() -> None:
        for start in range(0, len(texts), embeddings.batch_size):
            traced.embed_documents(texts[start : start + embeddings.batch_size])

    if provider == "local":
        _, result["direct_per_batch_s"] = timed(per_batch)
    else:
        result["direct_per_batch_s"] = result["direct_s"]

    rerun, result["rerun_s"] = timed(sync_collection, settings, [folder], embeddings)
    if rerun.chunks_added or rerun.chunks_removed or len(rerun.unchanged) != result["files"]:
        raise SystemExit(f"re-run changed something: {json.dumps(rerun.as_dict())[:2000]}")
    result["rerun_stages_s"] = rerun.as_dict()["seconds"]

    env = {
        **os.environ,
        "EMBEDDING_PROVIDER": provider,
        "CHROMA_DIR": str(store),
        "LOCALRAG_ENV_FILE": os.devnull,
    }
    gc.collect()
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "app.ingest", str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    result["rerun_command_s"] = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"python -m app.ingest failed:\n{process.stdout}\n{process.stderr}")

    result["ratio_full_vs_direct"] = full / result["direct_s"]
    result["ratio_full_vs_direct_per_batch"] = full / result["direct_per_batch_s"]
    result["ratio_rerun_vs_full"] = result["rerun_s"] / full
    result["ratio_rerun_command_vs_full"] = result["rerun_command_s"] / full
    return result


def tutorial_pipeline(folder: Path, store: Path, model: Any, settings: Any) -> tuple[Any, dict]:
    """What most LangChain RAG tutorials do, timed per step."""
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    steps: dict[str, float] = {}
    start = time.perf_counter()
    docs = DirectoryLoader(str(folder), glob="**/*.txt", loader_cls=TextLoader).load()
    steps["load"] = time.perf_counter() - start
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap
    )
    splits = splitter.split_documents(docs)
    steps["split"] = time.perf_counter() - start - steps["load"]
    db = Chroma.from_documents(splits, embedding=model, persist_directory=str(store))
    steps["from_documents"] = time.perf_counter() - start - steps["load"] - steps["split"]
    steps["documents"] = len(docs)
    steps["chunks"] = len(splits)
    return db, steps


def run_tutorial(folder: Path, store: Path, embeddings: Any, settings: Any) -> dict[str, Any]:
    model = embeddings.model.inner  # the model itself, untraced
    (db, steps), full = timed(tutorial_pipeline, folder, store, model, settings)
    result: dict[str, Any] = {"full_s": full, "steps_s": steps}
    result["count_after_first"] = db._collection.count()
    (db, _), result["second_run_s"] = timed(tutorial_pipeline, folder, store, model, settings)
    result["count_after_second"] = db._collection.count()
    result["chunks"] = steps["chunks"]
    return result


# --- output --------------------------------------------------------------------------------


def stages(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())


def print_trace(label: str, trace: dict[str, Any]) -> None:
    line = (
        f"    model, {label}: {trace['requests']} calls of {trace['texts']} texts, busy "
        f"{trace['model_busy_s']:.2f} s, idle {trace['model_idle_s']:.2f} s (before the first "
        f"{trace['before_first_request_s']:.2f}, between {trace['gaps_between_requests_s']:.2f}, "
        f"after the last {trace['after_last_request_s']:.2f})"
    )
    if "padding_overhead" in trace:
        line += f", padded tokens / tokens {trace['padding_overhead']:.2f}"
    print(line)


def print_repeat(index: int, order: list[str], ours: dict, tut: dict | None) -> None:
    print(f"\n--- repeat {index + 1} (order: {' then '.join(order)}) ---")
    print(f"ours: {ours['files']} files -> {ours['chunks']} chunks")
    print(f"  full ingest (in-process, model preloaded)     {ours['full_s']:8.2f} s")
    print(f"    stages: {stages(ours['full_stages_s'])}")
    print_trace("ingest", ours["full_model_trace"])
    print(f"  read chunks back from the collection          {ours['read_back_s']:8.2f} s")
    print(f"  direct embed_documents(all chunks)            {ours['direct_s']:8.2f} s")
    print_trace("direct", ours["direct_model_trace"])
    print(f"  direct embed_documents, one call per batch    {ours['direct_per_batch_s']:8.2f} s")
    print(f"  re-run, unchanged folder (in-process)         {ours['rerun_s']:8.2f} s")
    print(f"    stages: {stages(ours['rerun_stages_s'])}")
    print(f"  re-run as `python -m app.ingest FOLDER`       {ours['rerun_command_s']:8.2f} s")
    if tut is not None:
        steps = tut["steps_s"]
        print(f"tutorial: {steps['documents']} documents -> {tut['chunks']} chunks")
        print(f"  full ingest                                   {tut['full_s']:8.2f} s")
        print(
            f"    steps: load {steps['load']:.2f}, split {steps['split']:.2f}, "
            f"from_documents {steps['from_documents']:.2f}"
        )
        print(f"  second run on the same folder                 {tut['second_run_s']:8.2f} s")
        print(
            f"  chunks in its collection: {tut['count_after_first']} after one run, "
            f"{tut['count_after_second']} after two"
        )
    print("ratios:")
    print(
        f"  full ingest / direct embedding               {ours['ratio_full_vs_direct']:.2f}"
        f"  (target <= {TARGET_FULL})"
    )
    print(
        f"  full ingest / direct embedding per batch     "
        f"{ours['ratio_full_vs_direct_per_batch']:.2f}  (reference)"
    )
    print(
        f"  re-run / full ingest, in-process             {ours['ratio_rerun_vs_full']:.2f}"
        f"  (target <= {TARGET_RERUN})"
    )
    print(
        f"  re-run / full ingest, the command            "
        f"{ours['ratio_rerun_command_vs_full']:.2f}  (target <= {TARGET_RERUN})"
    )
    if tut is not None:
        print(f"  tutorial full ingest / ours                  {tut['ratio_tutorial_vs_ours']:.2f}")


def markdown_rows(summary: dict[str, Any], docs: int, command: str, model: str) -> str:
    corpus = f"{docs:,} MS MARCO passages, {model}"
    command = f"`{command}`"
    rows = [
        (
            f"full ingest ÷ embedding its chunks directly ({corpus}; target ≤ {TARGET_FULL})",
            f"{summary['ratio_full_vs_direct']:.2f}",
        ),
        (
            f"re-run on the unchanged folder ÷ full ingest, in-process (target ≤ {TARGET_RERUN})",
            f"{summary['ratio_rerun_vs_full']:.2f}",
        ),
        (
            "re-run ÷ full ingest, `python -m app.ingest FOLDER` wall time incl. start-up "
            f"(target ≤ {TARGET_RERUN})",
            f"{summary['ratio_rerun_command_vs_full']:.2f}",
        ),
    ]
    if "tutorial_counts" in summary:
        dup = summary["tutorial_counts"]
        rows += [
            (
                "tutorial pipeline (DirectoryLoader + Chroma.from_documents) full ingest ÷ ours",
                f"{summary['ratio_tutorial_vs_ours']:.2f}",
            ),
            (
                "tutorial pipeline: chunks in its collection after one run / after a second run",
                f"{dup[0]:,} / {dup[1]:,}",
            ),
        ]
    return "\n".join(f"| {what} | {figure} | {command} |" for what, figure in rows)


# --- main ----------------------------------------------------------------------------------

SERVER = """
import sys
from tests.ollama_server import OllamaTestServer
server = OllamaTestServer(models=("nomic-embed-text:latest",), delay=float(sys.argv[1])).start()
print(server.base_url, flush=True)
sys.stdin.read()  # until the benchmark closes it
"""


def start_test_server(delay_s: float) -> tuple[subprocess.Popen[str], str]:
    """The suite's Ollama-compatible server in its own process, as Ollama runs."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(delay_s)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise SystemExit("the Ollama test server did not start")
    return process, base_url


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--docs", type=int, default=5000, help="passages to ingest (>= 2000)")
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of corpus.jsonl"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating the order")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument(
        "--provider", choices=["local", "ollama"], default="local", help="embedding provider"
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=800.0,
        help="--provider ollama: the test server's delay per embedding request",
    )
    parser.add_argument(
        "--no-tutorial", action="store_true", help="skip the tutorial pipeline comparison"
    )
    args = parser.parse_args()
    provider: str = args.provider
    if args.output is None:
        suffix = "" if provider == "local" else f"-ollama-{args.delay_ms:g}ms"
        args.output = RESULTS.with_name(f"ingest_speed{suffix}.json")

    # Settings come from defaults and the environment only, never a developer's .env.
    os.environ["LOCALRAG_ENV_FILE"] = os.devnull
    os.environ["EMBEDDING_PROVIDER"] = provider
    sys.path.insert(0, str(ROOT))
    server: subprocess.Popen[str] | None = None
    if provider == "ollama":
        server, base_url = start_test_server(args.delay_ms / 1000)
        os.environ["OLLAMA_BASE_URL"] = base_url
    try:
        run(args, provider)
    finally:
        if server is not None and server.stdin is not None:
            server.stdin.close()
            server.wait(10)


def run(args: argparse.Namespace, provider: str) -> None:
    from app.config import load_settings
    from app.console import status
    from app.models.registry import build_embeddings

    info: dict[str, Any] = {"machine": machine(), "load_average_start": load_average()}
    print(
        f"machine: {info['machine']['cpu']}, {info['machine']['cores']} cores, "
        f"{info['machine']['ram_gib']} GiB RAM, Python {info['machine']['python']}"
    )
    print(f"load average (1, 5, 15 min) at start: {info['load_average_start']}")
    if args.docs < 2000:
        print(f"note: {args.docs} documents; the README figures need at least 2,000")

    passages = read_corpus(args.corpus, args.docs)
    with tempfile.TemporaryDirectory(prefix="ingest-speed-") as tmp:
        work = Path(tmp)
        folder = work / "docs"
        _, write_s = timed(write_folder, passages, folder)
        print(
            f"documents: {len(passages)} passages written to {SUBFOLDERS} subfolders "
            f"in {write_s:.2f} s"
        )

        # Imports are a once-per-process cost (the command re-run shows it): pay them for both
        # pipelines before any timing, so neither is charged for them.
        tutorial_wanted = provider == "local" and not args.no_tutorial
        tutorial, import_s = timed(import_stores, tutorial_wanted)
        settings = load_settings(chroma_dir=work / "unused", embedding_provider=provider)
        embeddings, _ = build_embeddings(settings, status)
        _, load_s = timed(lambda: embeddings.model)
        model: Any = embeddings.model  # the torch-free encoder, or OllamaEmbeddings
        if provider == "local":
            batch = getattr(model, "batch_size", None) or model.encode_kwargs.get("batch_size")
            assert batch == embeddings.batch_size, "the direct calls must batch as the ingest does"
        warm_texts = [t for _, t in passages[: embeddings.batch_size]]
        _, warm_s = timed(model.embed_documents, warm_texts)
        embeddings._model = TracedModel(model)  # type: ignore[assignment]  # every call, traced
        detail = f" (test server, {args.delay_ms:g} ms a request)" if provider == "ollama" else ""
        print(
            f"model: {embeddings.info.key}{detail}, loaded in {load_s:.2f} s, warmed up on one "
            f"batch of {embeddings.batch_size} in {warm_s:.2f} s; chunk_size "
            f"{settings.chunk_size}, chunk_overlap {settings.chunk_overlap}, batch "
            f"{embeddings.batch_size}, parse workers {settings.ingest_workers}; store and "
            f"loader imports {import_s:.2f} s (before timing)"
        )

        repeats: list[dict[str, Any]] = []
        for index in range(args.repeat):
            order = ["ours", "tutorial"] if index % 2 == 0 else ["tutorial", "ours"]
            if not tutorial:
                order = ["ours"]
            results: dict[str, dict[str, Any]] = {}
            for who in order:
                store = work / f"chroma-{who}-{index}"
                if who == "ours":
                    results[who] = run_ours(folder, store, embeddings, provider)
                else:
                    results[who] = run_tutorial(folder, store, embeddings, settings)
            ours, tut = results["ours"], results.get("tutorial")
            if tut is not None:
                tut["ratio_tutorial_vs_ours"] = tut["full_s"] / ours["full_s"]
            print_repeat(index, order, ours, tut)
            repeats.append({"order": order, "ours": ours, "tutorial": tut})

    def median(who: str, key: str) -> float:
        return statistics.median(r[who][key] for r in repeats)

    last = repeats[-1]
    summary: dict[str, Any] = {
        "ratio_full_vs_direct": median("ours", "ratio_full_vs_direct"),
        "ratios_full_vs_direct": [round(r["ours"]["ratio_full_vs_direct"], 3) for r in repeats],
        "ratio_full_vs_direct_per_batch": median("ours", "ratio_full_vs_direct_per_batch"),
        "ratio_rerun_vs_full": median("ours", "ratio_rerun_vs_full"),
        "ratio_rerun_command_vs_full": median("ours", "ratio_rerun_command_vs_full"),
        "chunks_per_s_direct": statistics.median(
            r["ours"]["chunks"] / r["ours"]["direct_s"] for r in repeats
        ),
        "chunks_per_s_ingest": statistics.median(
            r["ours"]["chunks"] / r["ours"]["full_s"] for r in repeats
        ),
    }
    if tutorial:
        summary["ratio_tutorial_vs_ours"] = median("tutorial", "ratio_tutorial_vs_ours")
        summary["tutorial_counts"] = [
            last["tutorial"]["count_after_first"],
            last["tutorial"]["count_after_second"],
        ]
    info["load_average_end"] = load_average()
    label = f"median of {len(repeats)} repeats" if len(repeats) > 1 else "summary"
    print(f"\n=== {label}: {len(passages)} documents, {last['ours']['chunks']} chunks ===")
    print(
        f"full ingest / direct embedding: {summary['ratio_full_vs_direct']:.2f} "
        f"(each repeat: {summary['ratios_full_vs_direct']}; target <= {TARGET_FULL}: "
        f"{'met' if summary['ratio_full_vs_direct'] <= TARGET_FULL else 'NOT met'})"
    )
    print(
        f"chunks/s: {summary['chunks_per_s_direct']:.1f} direct, "
        f"{summary['chunks_per_s_ingest']:.1f} ingest"
    )
    print(
        f"re-run / full ingest: {summary['ratio_rerun_vs_full']:.2f} in-process, "
        f"{summary['ratio_rerun_command_vs_full']:.2f} as the command (target <= "
        f"{TARGET_RERUN}: in-process "
        f"{'met' if summary['ratio_rerun_vs_full'] <= TARGET_RERUN else 'NOT met'}, command "
        f"{'met' if summary['ratio_rerun_command_vs_full'] <= TARGET_RERUN else 'NOT met'})"
    )
    if tutorial:
        first, second = summary["tutorial_counts"]
        print(
            f"tutorial pipeline / ours, full ingest: {summary['ratio_tutorial_vs_ours']:.2f}; "
            f"the tutorial pipeline duplicates on a re-run: {first} chunks after one run, "
            f"{second} after two ({second / first:.2f}x)"
        )
    print(f"load average (1, 5, 15 min) at end: {info['load_average_end']}")

    command = f"python benchmarks/ingest_speed.py --docs {args.docs}"
    if args.repeat != 1:
        command += f" --repeat {args.repeat}"
    if provider == "ollama":
        command += f" --provider ollama --delay-ms {args.delay_ms:g}"
    elif args.no_tutorial:
        command += " --no-tutorial"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        **info,
        "provider": provider,
        "delay_ms": args.delay_ms if provider == "ollama" else None,
        "documents": len(passages),
        "chunks": last["ours"]["chunks"],
        "settings": {
            "chunk_size": settings.chunk_size,
            "chunk_overlap": settings.chunk_overlap,
            "embedding_batch_size": embeddings.batch_size,
            "ingest_workers": settings.ingest_workers,
        },
        "model_load_s": load_s,
        "warm_up_s": warm_s,
        "repeats": repeats,
        "summary": summary,
    }
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results written to {args.output}")
    print("\nREADME rows (| what | figure | command |):\n")
    model_name = "all-MiniLM-L6-v2" if provider == "local" else "Ollama test server"
    print(markdown_rows(summary, len(passages), command, model_name))


if __name__ == "__main__":
    main()
