"""Retrieval latency per mode, keyword index and store opening time, at 10k to 1M chunks.

    python benchmarks/retrieval_scale.py [--sizes 10000 100000] [--rounds 3]
    python benchmarks/retrieval_scale.py --sizes 1000000 --keep /work/rs1m   # build, keep, measure
    python benchmarks/retrieval_scale.py --sizes 1000000 --reuse /work/rs1m  # measure again

For each size a persistent Chroma directory gets a collection made the way ingest makes it,
through the store seam (`app.store.open_store`, `store.create_collection`: cosine HNSW, Chroma's
defaults otherwise), and the keyword index beside it (`open_keyword_index`, `add`), both written
in the same batches as ingest writes them. The chunks are synthetic: 384-d unit vectors drawn
around 1,000 random centres (so the index has structure to find, as real embeddings have), ~400
characters of text drawn Zipf-like from ~4,000 pseudo-words and the sample questions' words (so
BM25 has common and rare terms to rank by), and the metadata ingest writes. Then it measures:

1. opening the store in a fresh process, as `python -m app.chat` does on start: `open_store` +
   `store.collection` (imports of the app and chromadb timed apart), the first query (which
   loads the HNSW index from disk), a second query, then opening the keyword index, listing its
   sources (every chain build does, for the filters) and a first keyword search; median of 3
   processes. The files were just written or read, so the OS page cache is warm: a cold disk
   adds its read time.
2. retrieval latency per query through `DocumentRetriever` (k 4, fetch_k 20, threshold off so
   every mode does its whole work) in each mode: similarity, mmr, hybrid, and keyword-led (the
   path a question in a script the embedding model was not trained on takes; forced here by
   declaring the model's scripts CJK), for the questions of data/eval/questions.jsonl,
   `--rounds` times, the median of each question's calls kept. The query embedding is excluded
   (vectors embedded beforehand); for similarity also included (the embedded
   all-MiniLM-L6-v2 embeds each question inside the call). Also `KeywordIndex.search` alone.
3. for reference, the HNSW index's recall@10 against exact numpy search for 50 synthetic
   queries drawn like the chunks.

`--keep DIR` keeps each built store in DIR/store-N (and its build figures in DIR/build-N.json);
`--reuse DIR` measures a kept store again without building. Results go to stdout and
benchmarks/results/retrieval-scale-N.json, followed by a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from app.evaluation.report import load_average, machine, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DIMENSION = 384
CENTRES = 1000
VOCABULARY = 4000
WORDS_PER_CHUNK = 60
BATCH = 5000  # chunks per write, as a large ingest flush; the store splits it to its own limit
WARM_UP = 5
OPEN_RUNS = 3
RECALL_QUERIES = 50
SEED = 7
MODES = ("similarity", "mmr", "hybrid", "keyword-led")

OPEN_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
from app.config import load_settings
from app.store import open_store
from app.store.keyword_index import open_keyword_index
import app.store.chroma
import chromadb  # the store imports it on first use: counted with the imports, not the open
imported = time.perf_counter()
settings = load_settings(chroma_dir={store!r}, collection_name={name!r})
store = open_store(settings)
collection = store.collection({name!r})
opened = time.perf_counter()
vector = {vector!r}
collection.search(vector, 20)
first = time.perf_counter()
collection.search(vector, 20)
second = time.perf_counter()
index = open_keyword_index(settings, store, collection)
keyword_opened = time.perf_counter()
sources = index.sources()
listed = time.perf_counter()
index.search({question!r}, 20)
searched = time.perf_counter()
print(json.dumps({{"import_s": imported - start, "open_s": opened - imported,
                  "first_query_s": first - opened, "second_query_s": second - first,
                  "keyword_open_s": keyword_opened - second,
                  "keyword_sources_s": listed - keyword_opened,
                  "keyword_first_search_s": searched - listed,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "sources": len(sources), "count": collection.count()}}))
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def pseudo_words(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct pronounceable non-words of 2 to 4 syllables ("tamoleru")."""
    syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]
    found: dict[str, None] = {}
    while len(found) < count:
        found["".join(rng.choice(syllables, size=int(rng.integers(2, 5))))] = None
    return list(found)


class Synthetic:
    """Chunks drawn batch by batch from seeded generators: a kept store's vectors can be drawn
    again (for recall) without storing them."""

    def __init__(self, question_words: list[str], seed: int = SEED) -> None:
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.centres = unit(rng.normal(size=(CENTRES, DIMENSION)))
        words = pseudo_words(VOCABULARY, rng) + [w for w in question_words if w.isalpha()]
        words = list(dict.fromkeys(words))
        # Question words land at random ranks: some as common as "the", most rare.
        self.words = np.array(words)[rng.permutation(len(words))]
        ranks = np.arange(1, len(words) + 1)
        weights = 1.0 / (ranks + 2.7)  # Zipf-Mandelbrot, as word counts in text
        self.probabilities = weights / weights.sum()

    def _vectors(self, rng: np.random.Generator, count: int) -> np.ndarray:
        picks = rng.integers(0, CENTRES, size=count)
        noise = rng.normal(scale=0.6 / np.sqrt(DIMENSION), size=(count, DIMENSION))
        return unit(self.centres[picks] + noise)

    def batch(self, first: int, count: int) -> tuple[list[Document], np.ndarray]:
        rng = np.random.default_rng([self.seed, first])
        vectors = self._vectors(rng, count)  # drawn first: `vectors()` replays just these
        draws = rng.choice(len(self.words), size=(count, WORDS_PER_CHUNK), p=self.probabilities)
        documents = []
        for offset, row in enumerate(draws):
            i = first + offset
            source = f"folder-{i % 50:02d}/file-{i // 4:06d}.txt"
            documents.append(
                Document(
                    id=f"chunk-{i:07d}",
                    page_content=f"Synthetic chunk {i}: " + " ".join(self.words[row]),
                    metadata={
                        "source": source,
                        "root": source.split("/", 1)[0],
                        "chunk_index": i % 4,
                        "chunk_count": 4,
                        "file_hash": f"{i // 4:032x}",
                        "type": "txt",
                    },
                )
            )
        return documents, vectors

    def vectors(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        for first in range(0, size, BATCH):
            count = min(BATCH, size - first)
            yield first, self._vectors(np.random.default_rng([self.seed, first]), count)

    def queries(self, count: int) -> np.ndarray:
        return self._vectors(np.random.default_rng([self.seed, -1 % 2**32]), count)


def build_store(store: Path, name: str, size: int, synthetic: Synthetic) -> dict[str, Any]:
    """Write `size` chunks as ingest does: each batch to Chroma, then to the keyword index."""
    from app.config import load_settings
    from app.store import open_store
    from app.store.keyword_index import open_keyword_index

    settings = load_settings(chroma_dir=store, collection_name=name)
    chunk_store = open_store(settings)
    collection = chunk_store.create_collection(name, "local/all-MiniLM-L6-v2", DIMENSION)
    index = open_keyword_index(settings, chunk_store, collection)
    took = {"draw_s": 0.0, "chroma_s": 0.0, "keyword_s": 0.0}
    start = last_report = time.perf_counter()
    for first in range(0, size, BATCH):
        began = time.perf_counter()
        documents, vectors = synthetic.batch(first, min(BATCH, size - first))
        drawn = time.perf_counter()
        collection.upsert(documents, vectors.tolist())
        written = time.perf_counter()
        index.add(documents)
        indexed = time.perf_counter()
        took["draw_s"] += drawn - began
        took["chroma_s"] += written - drawn
        took["keyword_s"] += indexed - written
        done = first + len(documents)
        if indexed - last_report > 60 or done == size:
            last_report = indexed
            elapsed = indexed - start
            print(
                f"  built {done:,} / {size:,} chunks in {elapsed:.0f} s "
                f"({done / elapsed:.0f} chunks/s; Chroma {took['chroma_s']:.0f} s, "
                f"keyword index {took['keyword_s']:.0f} s); load {load_average()}",
                flush=True,
            )
    build_s = time.perf_counter() - start
    index.close()
    assert collection.count() == size
    return {
        "chunks": size,
        "batch": BATCH,
        "build_s": round(build_s, 1),
        "chunks_per_s": round(size / build_s, 1),
        **{k: round(v, 1) for k, v in took.items()},
        "load_average": load_average(),
    }


def disk_mb(paths: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in paths if p.is_file()) / 2**20, 1)


def open_in_fresh_process(
    store: Path, name: str, vector: list[float], question: str
) -> dict[str, float]:
    script = OPEN_SCRIPT.format(
        root=str(ROOT), store=str(store), name=name, vector=vector, question=question
    )
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


def time_calls(call: Any, questions: list[str], rounds: int) -> list[float]:
    """Per question, the median of `rounds` timed calls (as `python -m app.eval` does)."""
    for text in questions[:WARM_UP]:
        call(text)
    took: dict[str, list[float]] = {text: [] for text in questions}
    for _ in range(rounds):
        for text in questions:
            start = time.perf_counter()
            call(text)
            took[text].append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in took.values()]


def hnsw_recall(collection: Any, size: int, synthetic: Synthetic) -> float:
    """Recall@10 against exact search, the exact top 10 kept batch by batch."""
    queries = synthetic.queries(RECALL_QUERIES)
    best_scores = np.full((RECALL_QUERIES, 10), -np.inf)
    best_ids = np.zeros((RECALL_QUERIES, 10), dtype=np.int64)
    for first, vectors in synthetic.vectors(size):
        scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
        ids = np.concatenate(
            [
                best_ids,
                np.broadcast_to(np.arange(first, first + len(vectors)), scores[:, 10:].shape),
            ],
            axis=1,
        )
        keep = np.argsort(-scores, axis=1)[:, :10]
        best_scores = np.take_along_axis(scores, keep, axis=1)
        best_ids = np.take_along_axis(ids, keep, axis=1)
    found = [[c.id for c in collection.search(query.tolist(), 10)] for query in queries]
    hits = [
        len({f"chunk-{i:07d}" for i in want} & set(got))
        for want, got in zip(best_ids, found, strict=True)
    ]
    return sum(hits) / (10 * len(hits))


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2)}


@contextlib.contextmanager
def store_directory(keep: Path | None, reuse: Path | None) -> Iterator[Path]:
    if reuse is not None or keep is not None:
        folder = reuse or keep
        assert folder is not None
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="retrieval-scale-") as tmp:
        yield Path(tmp)


def measure(
    folder: Path,
    size: int,
    built: dict[str, Any],
    questions: list[str],
    vectors: dict[str, list[float]],
    embeddings: Embeddings,
    synthetic: Synthetic,
    rounds: int,
) -> dict[str, Any]:
    from app.config import load_settings
    from app.retrieval.retriever import DocumentRetriever
    from app.store import open_store
    from app.store.keyword_index import index_path, open_keyword_index

    store, name = folder / f"store-{size}", f"scale-{size}"
    settings = load_settings(chroma_dir=store, collection_name=name)
    chunk_store = open_store(settings)
    collection = chunk_store.collection(name)
    if collection is None or collection.count() != size:
        raise SystemExit(f"no collection of {size:,} chunks in {store}")
    keyword_file = index_path(settings, chunk_store.key, name)
    keyword_files = [Path(f"{keyword_file}{s}") for s in ("", "-wal", "-shm")]
    chroma_files = [p for p in store.rglob("*") if keyword_file.parent.parent not in p.parents]

    opens = [
        open_in_fresh_process(store, name, vectors[questions[0]], questions[0])
        for _ in range(OPEN_RUNS)
    ]
    opened = {
        k: round(statistics.median(o[k] for o in opens), 3)
        for k in opens[0]
        if k not in ("count", "sources")
    }
    index = open_keyword_index(settings, chunk_store, collection)
    common: dict[str, Any] = {
        "collection": collection,
        "keyword_index": index,
        "k": 4,
        "fetch_k": 20,
        "score_threshold": -1.0,
        "embeddings": Precomputed(vectors),
    }
    retrieval = {}
    for mode in MODES:
        # Keyword-led: the path of a question in a script the model was not trained on.
        options: dict[str, Any] = (
            {"mode": "similarity", "model_scripts": frozenset({"CJK"})}
            if mode == "keyword-led"
            else {"mode": mode}
        )
        retriever = DocumentRetriever(**common, **options)
        retrieval[mode] = summary(time_calls(retriever.invoke, questions, rounds))
    included = DocumentRetriever(mode="similarity", **common | {"embeddings": embeddings})
    retrieval["similarity, embedding included"] = summary(
        time_calls(included.invoke, questions, rounds)
    )
    keyword_search = summary(time_calls(lambda q: index.search(q, 20), questions, rounds))
    index.close()
    return {
        "chunks": size,
        "build": built,
        "chroma_disk_mb": disk_mb(chroma_files),
        "keyword_index_disk_mb": disk_mb(keyword_files),
        "keyword_index_sources": opens[0]["sources"],
        "open": opened,
        "open_runs": opens,
        "retrieval_embedding_excluded": retrieval,
        "keyword_search": keyword_search,
        "hnsw_recall@10": round(hnsw_recall(collection, size, synthetic), 3),
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep", type=Path, help="build into DIR/store-N and keep it")
    where.add_argument("--reuse", type=Path, help="measure DIR/store-N (kept) without building")
    args = parser.parse_args()

    os.environ["LOCALRAG_ENV_FILE"] = os.devnull
    sys.path.insert(0, str(ROOT))
    from app.config import load_settings
    from app.console import status
    from app.models.local import local_embeddings
    from app.paths import SAMPLE_QUESTIONS

    load_at_start = load_average()
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}")
    print(f"load average (1, 5, 15 min) at start: {load_at_start}", flush=True)

    questions = [
        json.loads(line)["question"] for line in SAMPLE_QUESTIONS.read_text().splitlines() if line
    ]
    question_words = sorted({w.lower() for q in questions for w in re.findall(r"\w+", q)})
    synthetic = Synthetic(question_words)
    embeddings = local_embeddings(load_settings(embedding_provider="local"), status)
    for text in questions[:WARM_UP]:
        embeddings.embed_query(text)
    embed_s = []
    vectors: dict[str, list[float]] = {}
    for text in questions:
        start = time.perf_counter()
        vectors[text] = embeddings.embed_query(text)
        embed_s.append(time.perf_counter() - start)
    embed_query = summary(embed_s)
    print(
        f"{len(questions)} questions; embedding one with {embeddings.info.key}: "
        f"p50 {embed_query['p50_ms']:.1f} ms, p95 {embed_query['p95_ms']:.1f} ms",
        flush=True,
    )

    rows = []
    with store_directory(args.keep, args.reuse) as folder:
        for size in args.sizes:
            record = folder / f"build-{size}.json"
            if args.reuse is not None:
                built = json.loads(record.read_text()) if record.exists() else {}
            else:
                print(f"\nbuilding {size:,} chunks in {folder / f'store-{size}'}", flush=True)
                built = build_store(folder / f"store-{size}", f"scale-{size}", size, synthetic)
                record.write_text(json.dumps(built, indent=2) + "\n")
            row = measure(
                folder, size, built, questions, vectors, embeddings, synthetic, args.rounds
            )
            row["embed_query"] = embed_query
            rows.append(row)
            path = args.results / f"retrieval-scale-{size}.json"
            command = "python benchmarks/retrieval_scale.py " + " ".join(sys.argv[1:])
            write_results(path, load_at_start, command=command, **row)
            print_row(row)
            print(f"  wrote {path}", flush=True)
    print_table(rows)


def print_row(row: dict[str, Any]) -> None:
    op, built = row["open"], row["build"]
    print(
        f"\n{row['chunks']:,} chunks: built in {built.get('build_s', '?')} s "
        f"({built.get('chunks_per_s', '?')} chunks/s); Chroma {row['chroma_disk_mb']} MB, "
        f"keyword index {row['keyword_index_disk_mb']} MB on disk\n"
        f"  open (fresh process, median of {OPEN_RUNS}): open_store + collection "
        f"{op['open_s'] * 1000:.0f} ms, first query (loads the index) "
        f"{op['first_query_s'] * 1000:.0f} ms, second query {op['second_query_s'] * 1000:.1f} ms;"
        f" keyword index open {op['keyword_open_s'] * 1000:.0f} ms, sources() "
        f"{op['keyword_sources_s'] * 1000:.0f} ms, first search "
        f"{op['keyword_first_search_s'] * 1000:.0f} ms; imports {op['import_s']:.1f} s; "
        f"peak RSS {op['max_rss_mib']:.0f} MiB"
    )
    for mode, s in row["retrieval_embedding_excluded"].items():
        print(f"  {mode}: p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms")
    ks = row["keyword_search"]
    print(f"  KeywordIndex.search (20): p50 {ks['p50_ms']:.1f} ms, p95 {ks['p95_ms']:.1f} ms")
    print(f"  HNSW recall@10 vs exact: {row['hnsw_recall@10']}; load {row['load_average']}")


def print_table(rows: list[dict[str, Any]]) -> None:
    modes = [*MODES, "similarity, embedding included"]
    print("\n| chunks | " + " | ".join(f"{m} p50 / p95" for m in modes), end="")
    print(
        " | keyword search p50 / p95 | open: store + collection | first query (loads index) "
        "| keyword open + sources() | Chroma / keyword index on disk | build |"
    )
    print("|---:" * (len(modes) + 7) + "|")
    for row in rows:
        r, op, ks, b = (
            row["retrieval_embedding_excluded"],
            row["open"],
            row["keyword_search"],
            row["build"],
        )
        cells = [f"{r[m]['p50_ms']:.1f} / {r[m]['p95_ms']:.1f} ms" for m in modes]
        print(
            f"| {row['chunks']:,} | "
            + " | ".join(cells)
            + f" | {ks['p50_ms']:.1f} / {ks['p95_ms']:.1f} ms | {op['open_s'] * 1000:.0f} ms | "
            f"{op['first_query_s'] * 1000:.0f} ms | "
            f"{(op['keyword_open_s'] + op['keyword_sources_s']) * 1000:.0f} ms | "
            f"{row['chroma_disk_mb']:.0f} / {row['keyword_index_disk_mb']:.0f} MB | "
            f"{b.get('build_s', '?')} s, {b.get('chunks_per_s', '?')}/s |"
        )


if __name__ == "__main__":
    main()
