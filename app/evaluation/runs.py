"""Run every query through each retrieval mode and each baseline, timing each call.

Every system returns chunks; a document split into several chunks counts once, at its best
rank. Each system is asked for `chunk_k` chunks (default 20, twice the 10 documents scored) so
that documents of several chunks still leave 10 distinct documents in most cases; baselines get
the same chunk budget, so the only difference between `similarity` and `exact` is the index.

Timing: one system at a time, as an app using that mode would run (systems do not take turns:
after a BLAS call, as in MMR, OpenBLAS's threads keep spinning and slow the next embedding, a
cost that belongs to the system that made the call). Each system first searches a few queries
untimed (WARM_UP: torch's first calls after loading are slow), then each query is timed
`repeats` times and its median kept, so a neighbour's short burst of CPU on a shared machine
does not land in the p95.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.evaluation.baselines import Bm25Search, ExactSearch, StoredChunks
from app.evaluation.metrics import dedupe
from app.models.embeddings import ModelEmbeddings
from app.retrieval.retriever import VECTOR_WEIGHT, DocumentRetriever, Mode
from app.store.keyword_index import KeywordIndex

if TYPE_CHECKING:
    from app.store.base import ChunkCollection

MODES: tuple[Mode, ...] = ("similarity", "mmr", "hybrid")
DOCS_K = 10
WARM_UP = 3

Search = Callable[[str], list[tuple[str, str]]]  # query text -> [(chunk id, source)] best first


@dataclass
class SystemRun:
    name: str
    kind: str  # "mode" or "baseline"
    description: str
    search: Search
    rankings: dict[str, list[str]] = field(default_factory=dict)  # query id -> doc ids
    chunk_ids: dict[str, list[str]] = field(default_factory=dict)  # query id -> chunk ids
    seconds: list[float] = field(default_factory=list)  # one retrieval call per query
    setup_seconds: float = 0.0


def mode_system(
    mode: Mode,
    *,
    collection: ChunkCollection,
    embeddings: ModelEmbeddings,
    keyword_index: KeywordIndex,
    chunk_k: int,
    fetch_k: int,
    keyword_fallback: bool = True,
) -> SystemRun:
    """`keyword_fallback=False` measures the model's own vectors even for a question in a
    script it was not trained on (the app answers those from the keyword index)."""
    fetch_k = max(fetch_k, chunk_k)
    retriever = DocumentRetriever(
        collection=collection,
        embeddings=embeddings,
        keyword_index=keyword_index,
        mode=mode,
        k=chunk_k,
        fetch_k=fetch_k,
        score_threshold=-1.0,  # off: every query gets its ranking
        model_scripts=embeddings.info.scripts if keyword_fallback else None,
    )

    def search(text: str) -> list[tuple[str, str]]:
        docs: Any = retriever.invoke(text)
        return [(str(d.id), str(d.metadata.get("source", ""))) for d in docs]

    described = {
        "similarity": f"Chroma HNSW, top {chunk_k} chunks",
        "mmr": f"MMR (lambda {retriever.mmr_lambda}) of {fetch_k} candidates, {chunk_k} chunks",
        "hybrid": f"vectors + SQLite FTS5 BM25 (top {fetch_k} each), scores relative to each "
        f"leg's best, weighted {VECTOR_WEIGHT:g} / {1 - VECTOR_WEIGHT:g}, {chunk_k} chunks",
    }
    return SystemRun(mode, "mode", described[mode], search)


def exact_system(
    chunks: StoredChunks, embeddings: ModelEmbeddings, chunk_k: int, setup_seconds: float
) -> SystemRun:
    exact = ExactSearch(chunks, embeddings)

    def search(text: str) -> list[tuple[str, str]]:
        return [(chunks.ids[i], chunks.sources[i]) for i in exact.search(text, chunk_k)]

    description = f"numpy brute-force cosine, top {chunk_k} chunks"
    return SystemRun("exact", "baseline", description, search, setup_seconds=setup_seconds)


def bm25_system(chunks: StoredChunks, chunk_k: int) -> SystemRun:
    start = time.perf_counter()
    bm25 = Bm25Search(chunks)
    setup = time.perf_counter() - start

    def search(text: str) -> list[tuple[str, str]]:
        return [(chunks.ids[i], chunks.sources[i]) for i in bm25.search(text, chunk_k)]

    description = f"bm25s over the chunks, top {chunk_k} chunks"
    return SystemRun("bm25", "baseline", description, search, setup_seconds=setup)


def run_queries(
    systems: Sequence[SystemRun],
    queries: Sequence[tuple[str, str]],
    source_to_id: dict[str, str],
    repeats: int = 1,
) -> None:
    """Fill each system's rankings and timings, one system after the other."""
    for system in systems:
        for _, text in queries[:WARM_UP]:
            system.search(text)
        for query_id, text in queries:
            took = []
            for _ in range(repeats):
                start = time.perf_counter()
                hits = system.search(text)
                took.append(time.perf_counter() - start)
            system.seconds.append(statistics.median(took))
            system.chunk_ids[query_id] = [chunk_id for chunk_id, _ in hits]
            system.rankings[query_id] = dedupe(
                [source_to_id.get(source) for _, source in hits], DOCS_K
            )


def overlap(approximate: SystemRun, exact: SystemRun) -> float:
    """Mean share of the exact top chunks that the approximate search also returned."""
    shares = []
    for query_id, wanted in exact.chunk_ids.items():
        if wanted:
            got = set(approximate.chunk_ids.get(query_id, []))
            shares.append(len(got.intersection(wanted)) / len(wanted))
    return sum(shares) / len(shares) if shares else 1.0
