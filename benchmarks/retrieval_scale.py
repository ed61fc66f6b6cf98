"""Retrieval latency and store opening time at 10k and 100k chunks in the persistent collection.

    python benchmarks/retrieval_scale.py [--sizes 10000 100000] [--rounds 3]

For each size a fresh persistent Chroma directory gets a collection made the way ingest makes
it, through the store seam (`app.store.open_store`, `store.create_collection`: cosine HNSW,
Chroma's defaults otherwise), holding that many synthetic chunks: 384-d unit vectors drawn
around 1,000 random centres (so the index has structure to find, as real embeddings have), ~400
characters of text and the metadata ingest writes. Then it measures:

1. opening the store in a fresh process, as `python -m app.chat` does on start: `open_store` +
   `store.collection` (imports of the app and chromadb timed apart), then the first query
   (which loads the HNSW index from disk), then a second query; median of 3 processes. The
   files were just written, so the OS page cache is warm: a cold disk adds its read time.
2. retrieval latency per query through `DocumentRetriever` (similarity, k 4, fetch_k 20: the
   default chain on Ollama models) for the questions of data/eval/questions.jsonl, `--rounds`
   times, the median of each question's calls kept: with the query embedding excluded
   (vectors embedded beforehand) and included (the embedded all-MiniLM-L6-v2 embeds each
   question inside the call). The store part does not depend on where vectors come from, so
   synthetic ones are fine for it.
3. for reference, the HNSW index's recall@10 against exact numpy search for 50 synthetic
   queries drawn like the chunks.

Results go to stdout and benchmarks/results/retrieval_scale.json (git-ignored), followed by a
Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from app.evaluation.report import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "retrieval_scale.json"
DIMENSION = 384
CENTRES = 1000
WARM_UP = 5
OPEN_RUNS = 3
# fmt: off
WORDS = [
    "harbour", "ferry", "tide", "turbine", "telescope", "meteor", "volunteer", "cooperative",
    "timetable", "quay", "dredger", "battery", "member", "report", "grant", "mirror", "lantern",
    "festival", "founder", "population", "channel", "notice", "observatory", "spectrograph",
    "asteroid", "camera", "visitor", "steps", "route", "director", "crossing", "island",
]
# fmt: on

OPEN_SCRIPT = """
import json, sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
from app.config import load_settings
from app.store import open_store
import app.store.chroma
import chromadb  # the store imports it on first use: counted with the imports, not the open
imported = time.perf_counter()
settings = load_settings(chroma_dir={store!r}, collection_name={name!r})
collection = open_store(settings).collection({name!r})
opened = time.perf_counter()
vector = {vector!r}
collection.search(vector, 20)
first = time.perf_counter()
collection.search(vector, 20)
second = time.perf_counter()
print(json.dumps({{"import_s": imported - start, "open_s": opened - imported,
                  "first_query_s": first - opened, "second_query_s": second - first,
                  "count": collection.count()}}))
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class Synthetic:
    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = unit(self.rng.normal(size=(CENTRES, DIMENSION)))

    def vectors(self, count: int) -> np.ndarray:
        picks = self.rng.integers(0, CENTRES, size=count)
        noise = self.rng.normal(scale=0.6 / np.sqrt(DIMENSION), size=(count, DIMENSION))
        return unit(self.centres[picks] + noise)

    def text(self, index: int) -> str:
        words = self.rng.choice(WORDS, size=60)
        return f"Synthetic chunk {index}: " + " ".join(words)


def build_store(store: Path, name: str, size: int, synthetic: Synthetic) -> dict[str, Any]:
    from langchain_core.documents import Document

    from app.config import load_settings
    from app.store import open_store

    settings = load_settings(chroma_dir=store, collection_name=name)
    collection = open_store(settings).create_collection(name, "local/all-MiniLM-L6-v2", DIMENSION)
    batch = 5000  # the store splits each write to the database's own batch limit
    vectors = synthetic.vectors(size)
    start = time.perf_counter()
    for first in range(0, size, batch):
        ids = range(first, min(first + batch, size))
        collection.upsert(
            [
                Document(
                    id=f"chunk-{i:07d}",
                    page_content=synthetic.text(i),
                    metadata={
                        "source": f"folder-{i % 50:02d}/file-{i // 4:06d}.txt",
                        "chunk_index": i % 4,
                        "chunk_count": 4,
                        "file_hash": f"{i // 4:032x}",
                        "type": "txt",
                    },
                )
                for i in ids
            ],
            vectors[first : first + len(ids)].tolist(),
        )
    build_s = time.perf_counter() - start
    assert collection.count() == size
    return {"build_s": build_s, "vectors": vectors, "collection": collection, "settings": settings}


def open_in_fresh_process(store: Path, name: str, vector: list[float]) -> dict[str, float]:
    script = OPEN_SCRIPT.format(root=str(ROOT), store=str(store), name=name, vector=vector)
    env = {**os.environ, "LOCALRAG_ENV_FILE": os.devnull}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"opening the store failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class Precomputed(Embeddings):
    """LangChain Embeddings that look the query up: the call then costs no model time."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[t] for t in texts]


def time_retriever(retriever: Any, questions: list[str], rounds: int) -> list[float]:
    """Per question, the median of `rounds` timed calls (as `python -m app.eval` does)."""
    for text in questions[:WARM_UP]:
        retriever.invoke(text)
    took: dict[str, list[float]] = {text: [] for text in questions}
    for _ in range(rounds):
        for text in questions:
            start = time.perf_counter()
            retriever.invoke(text)
            took[text].append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in took.values()]


def hnsw_recall(collection: Any, vectors: np.ndarray, synthetic: Synthetic) -> float:
    queries = synthetic.vectors(50)
    exact = np.argsort(-(vectors @ queries.T), axis=0)[:10].T
    found = [[c.id for c in collection.search(query.tolist(), 10)] for query in queries]
    hits = [
        len({f"chunk-{i:07d}" for i in want} & set(got))
        for want, got in zip(exact, found, strict=True)
    ]
    return sum(hits) / (10 * len(hits))


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args()

    os.environ["LOCALRAG_ENV_FILE"] = os.devnull
    sys.path.insert(0, str(ROOT))
    from app.config import load_settings
    from app.console import status
    from app.models.local import local_embeddings
    from app.paths import SAMPLE_QUESTIONS
    from app.retrieval.retriever import DocumentRetriever

    info: dict[str, Any] = {"machine": machine(), "load_average_start": load_average()}
    m = info["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}")
    print(f"load average (1, 5, 15 min) at start: {info['load_average_start']}")

    questions = [
        json.loads(line)["question"] for line in SAMPLE_QUESTIONS.read_text().splitlines() if line
    ]
    embeddings = local_embeddings(load_settings(embedding_provider="local"), status)
    for text in questions[:WARM_UP]:
        embeddings.embed_query(text)
    embed_s = []
    vectors: dict[str, list[float]] = {}
    for text in questions:
        start = time.perf_counter()
        vectors[text] = embeddings.embed_query(text)
        embed_s.append(time.perf_counter() - start)
    info["embed_query"] = summary(embed_s)
    print(
        f"{len(questions)} questions; embedding one with {embeddings.info.key}: "
        f"p50 {info['embed_query']['p50_ms']:.1f} ms, p95 {info['embed_query']['p95_ms']:.1f} ms"
    )

    results = []
    synthetic = Synthetic()
    with tempfile.TemporaryDirectory(prefix="retrieval-scale-") as tmp:
        for size in args.sizes:
            store, name = Path(tmp) / f"store-{size}", f"scale-{size}"
            built = build_store(store, name, size, synthetic)
            disk_mb = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20
            opens = [
                open_in_fresh_process(store, name, vectors[questions[0]]) for _ in range(OPEN_RUNS)
            ]
            opened = {k: statistics.median(o[k] for o in opens) for k in opens[0] if k != "count"}
            collection = built["collection"]
            common = {
                "collection": collection,
                "mode": "similarity",
                "k": 4,
                "fetch_k": 20,
                "score_threshold": -1.0,
            }
            excluded = DocumentRetriever(embeddings=Precomputed(vectors), **common)
            included = DocumentRetriever(embeddings=embeddings, **common)
            row = {
                "chunks": size,
                "build_s": round(built["build_s"], 1),
                "disk_mb": round(disk_mb, 1),
                "open": {k: round(v, 3) for k, v in opened.items()},
                "retrieval_embedding_excluded": summary(
                    time_retriever(excluded, questions, args.rounds)
                ),
                "retrieval_embedding_included": summary(
                    time_retriever(included, questions, args.rounds)
                ),
                "hnsw_recall@10": round(hnsw_recall(collection, built["vectors"], synthetic), 3),
                "load_average": load_average(),
            }
            results.append(row)
            ex, inc, op = (
                row["retrieval_embedding_excluded"],
                row["retrieval_embedding_included"],
                row["open"],
            )
            print(
                f"\n{size:,} chunks: built in {row['build_s']} s, {row['disk_mb']} MB on disk\n"
                f"  open (fresh process, median of {OPEN_RUNS}): open_store + collection "
                f"{op['open_s'] * 1000:.0f} ms, first query (loads the index) "
                f"{op['first_query_s'] * 1000:.0f} ms, second query "
                f"{op['second_query_s'] * 1000:.1f} ms; "
                f"imports (app, chromadb) {op['import_s']:.1f} s\n"
                f"  retrieval, embedding excluded: p50 {ex['p50_ms']:.1f} ms, "
                f"p95 {ex['p95_ms']:.1f} ms\n"
                f"  retrieval, embedding included: p50 {inc['p50_ms']:.1f} ms, "
                f"p95 {inc['p95_ms']:.1f} ms\n"
                f"  HNSW recall@10 vs exact (synthetic queries): {row['hnsw_recall@10']}\n"
                f"  load average: {row['load_average']}"
            )
            del built, collection, excluded, included

    info["results"] = results
    info["load_average_end"] = load_average()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(info, indent=2) + "\n")
    print(f"\nwrote {args.output}\n")
    print(
        "| chunks | retrieval p50 / p95, embedding excluded | retrieval p50 / p95, embedding "
        "included | open: store + collection | open: first query (loads index) | "
        "store on disk |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for row in results:
        ex, inc, op = (
            row["retrieval_embedding_excluded"],
            row["retrieval_embedding_included"],
            row["open"],
        )
        print(
            f"| {row['chunks']:,} | {ex['p50_ms']:.1f} / {ex['p95_ms']:.1f} ms | "
            f"{inc['p50_ms']:.1f} / {inc['p95_ms']:.1f} ms | {op['open_s'] * 1000:.0f} ms | "
            f"{op['first_query_s'] * 1000:.0f} ms | {row['disk_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
