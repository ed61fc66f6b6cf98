"""How should hybrid retrieval fuse its two legs? nDCG@10 of the app's hybrid mode for several
vector weights, against vectors alone, keywords alone and the reciprocal rank fusion it replaced.

    python -m app.eval --dataset DIR          # first: ingests DIR into its eval collection
    python benchmarks/fusion_weights.py DIR [DIR...]

Runs on the collections and keyword indexes `python -m app.eval` left (same CHROMA_DIR and
embedding model), 20 chunks per query from 50 candidates per leg, scored like `app.eval`.
The script detection is switched off here (`model_scripts=None`), so every query goes through
the fusion even when the model was not trained on its script: this measures the fusion alone.
Writes benchmarks/results/fusion_weights.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app.retrieval.retriever
from app.config import load_settings
from app.evaluation.beir import load_beir
from app.evaluation.corpus import doc_source, eval_collection_name
from app.evaluation.metrics import dedupe, evaluate, judged_queries
from app.evaluation.report import load_average, write_results
from app.retrieval.retriever import DocumentRetriever
from app.session.resources import open_embeddings
from app.store import open_store
from app.store.base import ChunkCollection
from app.store.keyword_index import open_keyword_index
from app.store.library import Library

RESULTS = Path(__file__).resolve().parent / "results" / "fusion_weights.json"
WEIGHTS = (0.5, 0.6, 0.7, 0.8, 0.9)
CHUNKS, FETCH = 20, 50


def reciprocal_rank(retriever: DocumentRetriever, query: str) -> list[Any]:
    """The fusion before issue 10: 1 / (60 + rank) summed over both legs."""
    vector = retriever.invoke(query, mode="similarity", k=FETCH)
    keyword = retriever.keyword_index.search(query, FETCH) if retriever.keyword_index else []
    fused: dict[str, float] = {}
    for ranking in ([str(d.id) for d in vector], [i for i, _ in keyword]):
        for rank, chunk_id in enumerate(ranking):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (60 + rank + 1)
    best = sorted(fused, key=lambda i: fused[i], reverse=True)[:CHUNKS]
    source = sources_of(retriever.collection, best)
    return [source[i] for i in best]


def sources_of(collection: ChunkCollection, ids: list[str]) -> dict[str, str]:
    """Chunk id -> the stored file it comes from."""
    return {c.id: str(c.metadata["source"]) for c in collection.get(ids, text=False)}


def run(folder: Path) -> dict[str, float]:
    settings = load_settings()
    dataset = load_beir(folder)
    embeddings = open_embeddings(settings)
    name = eval_collection_name(folder, embeddings)
    eval_settings = settings.model_copy(update={"collection_name": name})
    store = open_store(eval_settings)
    library = Library.find(store, name)
    collection = library.collection() if library is not None else None
    if collection is None:
        raise SystemExit(f"Run `python -m app.eval --dataset {folder}` first.")
    index = open_keyword_index(eval_settings, store, collection)  # the sync wrote it
    retriever = DocumentRetriever(
        collection=collection,
        embeddings=embeddings,
        keyword_index=index,
        k=CHUNKS,
        fetch_k=FETCH,
        score_threshold=-1.0,
        model_scripts=None,  # every query through the fusion, whatever its script
    )
    to_id = {f"docs/{doc_source(d)}": d for d in dataset.corpus}  # the corpus folder's label
    queries = judged_queries(dataset.qrels, list(dataset.queries))

    def score(search: Callable[[str], list[Any]]) -> float:
        runs = {q: dedupe([to_id.get(s) for s in search(dataset.queries[q])]) for q in queries}
        return round(evaluate(runs, dataset.qrels).means["ndcg@10"], 4)

    def sources(**search: Any) -> Callable[[str], list[Any]]:
        return lambda q: [d.metadata["source"] for d in retriever.invoke(q, **search)]

    def keywords(q: str) -> list[Any]:
        hits = index.search(q, CHUNKS)
        by_id = sources_of(collection, [i for i, _ in hits])
        return [by_id[i] for i, _ in hits]

    row = {
        "similarity": score(sources(mode="similarity")),
        "keyword (BM25)": score(keywords),
        "reciprocal rank fusion (before)": score(lambda q: reciprocal_rank(retriever, q)),
    }
    default = app.retrieval.retriever.VECTOR_WEIGHT
    try:
        for weight in WEIGHTS:
            app.retrieval.retriever.VECTOR_WEIGHT = weight
            row[f"relative scores, vector weight {weight}"] = score(sources(mode="hybrid"))
    finally:
        app.retrieval.retriever.VECTOR_WEIGHT = default
    index.close()
    store.close()
    for name, value in row.items():
        print(f"{dataset.name:12} {name:40} {value:.4f}", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="BEIR folders")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (JSON)")
    args = parser.parse_args()
    load = load_average()
    results = {f.name: run(f) for f in args.folders}
    write_results(args.json, load, nDCG=results)
    print("| fusion | " + " | ".join(f"{d} nDCG@10" for d in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in next(iter(results.values())):
        print(f"| {name} | " + " | ".join(f"{results[d][name]:.4f}" for d in results) + " |")


if __name__ == "__main__":
    main()
