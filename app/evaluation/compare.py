"""Several embedding models on one BEIR corpus, one table: `--embeddings SPEC[,SPEC...]`.

A spec is `local` (LOCAL_EMBEDDING_MODEL), `local:FOLDER_OR_PACKAGE`, `ollama`
(OLLAMA_EMBEDDING_MODEL) or `ollama:MODEL`. Every model gets the same corpus, chunking and
queries through the app's own pipeline, each into its own eval collection (reused while the
corpus is unchanged), and is measured on `similarity` retrieval by its own vectors, the mode
that shows the model and nothing else (the app's keyword fallback for a question in a script
the model was not trained on is off here: it would measure the keyword index instead):

- nDCG@10, Recall@10, MRR@10 as the single-model report computes them;
- query latency p50/p95: the retrieval call, embedding the question included;
- ingest throughput: chunks per second through `embed_documents` (batches, prefixes, as ingest
  calls it) over a sample of the collection's own chunks, timed in every run so a reused
  collection still gets a figure; the first ingest's own rate is in the JSON;
- dimension and maximum tokens as the model reports them (`app.models.catalog`);
- the vector index on disk (Chroma's HNSW files of the collection; the documents and metadata
  in chroma.sqlite3 are the same text for every model and are not counted).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.console import status
from app.errors import ConfigError
from app.models.registry import PROVIDERS, provider

if TYPE_CHECKING:
    from app.models.embeddings import ModelEmbeddings
    from app.store.base import ChunkCollection

THROUGHPUT_SAMPLE = 256  # chunks embedded, timed, per model


@dataclass(frozen=True)
class EmbeddingSpec:
    text: str  # as the user wrote it
    provider: str  # a registered provider (app.models.registry)
    model: str  # empty: the model the settings name


def parse_specs(value: str) -> list[EmbeddingSpec]:
    specs: list[EmbeddingSpec] = []
    for raw in (part.strip() for part in value.split(",")):
        if not raw:
            continue
        name, _, model = raw.partition(":")
        if name not in PROVIDERS:
            raise ConfigError(
                f"--embeddings: '{raw}' is not a model spec. Write PROVIDER or PROVIDER:MODEL "
                f"({', '.join(PROVIDERS)}; e.g. local, local:FOLDER_OR_PACKAGE, ollama:bge-m3), "
                "separated by commas."
            )
        specs.append(EmbeddingSpec(raw, name, model.strip()))
    if not specs:
        raise ConfigError("--embeddings: name at least one model, e.g. local,ollama:bge-m3")
    seen = [s.text for s in specs]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"--embeddings: a model is named twice in {value!r}")
    return specs


def settings_for(settings: Settings, spec: EmbeddingSpec) -> Settings:
    """The user's settings with the embedding model of `spec`; an explicit provider never falls
    back, so a missing Ollama model stops the run before anything is ingested."""
    update: dict[str, Any] = {"embedding_provider": spec.provider}
    if spec.model:
        update[provider(spec.provider).model_setting("embedding")] = spec.model
    return settings.model_copy(update=update)


def compare_embeddings(
    settings: Settings,
    folder: Path,
    specs: list[EmbeddingSpec],
    *,
    split: str,
    chunk_k: int,
    repeats: int,
) -> dict[str, Any]:
    from app.evaluation.beir import describe, load_judged
    from app.evaluation.corpus import ingest_corpus
    from app.evaluation.metrics import evaluate, percentile
    from app.evaluation.report import load_average, machine, now
    from app.evaluation.runs import DOCS_K, mode_system, run_queries
    from app.session.resources import open_embeddings
    from app.store import open_store
    from app.store.keyword_index import open_keyword_index
    from app.store.library import Library

    load_start = load_average()
    dataset, queries = load_judged(folder, split)
    judged = [q for q, _ in queries]
    status(
        f"Dataset {dataset.name}: {len(dataset.corpus)} documents, {len(judged)} judged queries; "
        f"comparing {len(specs)} embedding models"
    )
    # Every model is checked (folder readable, Ollama has it) before the first one ingests.
    models = [(spec, settings_for(settings, spec)) for spec in specs]
    built = [(spec, s, open_embeddings(s)) for spec, s in models]
    keys = [e.info.key for _, _, e in built]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--embeddings: two specs name the same model ({', '.join(keys)})")

    rows: list[dict[str, Any]] = []
    for spec, model_settings, embeddings in built:
        status(f"Model {embeddings.info.key} ({spec.text})")
        eval_settings, corpus, report = ingest_corpus(model_settings, dataset, embeddings)
        store = open_store(eval_settings)
        library = Library.find(store, eval_settings.collection_name)
        collection = library.collection() if library is not None else None
        if collection is None or collection.count() == 0:
            raise ConfigError(f"No document of {folder / 'corpus.jsonl'} could be ingested.")
        keyword_index = open_keyword_index(eval_settings, store, collection)
        try:
            system = mode_system(
                "similarity",
                collection=collection,
                embeddings=embeddings,
                keyword_index=keyword_index,
                chunk_k=chunk_k,
                fetch_k=chunk_k,
                keyword_fallback=False,  # the model is what is compared
            )
            run_queries([system], queries, corpus.source_to_id, repeats)
        finally:
            keyword_index.close()
        scores = evaluate(system.rankings, dataset.qrels, DOCS_K)
        ms = [s * 1000 for s in system.seconds]
        embed_seconds = report.seconds.get("embed")
        rows.append(
            {
                "spec": spec.text,
                "model": embeddings.info.key,
                **{name: round(value, 4) for name, value in scores.means.items()},
                "latency_ms": {
                    "p50": round(percentile(ms, 50), 2),
                    "p95": round(percentile(ms, 95), 2),
                },
                "ingest_chunks_per_s": round(embedding_throughput(collection, embeddings), 1),
                "first_ingest_chunks_per_s": (
                    round(report.chunks_added / embed_seconds, 1)
                    if report.chunks_added and embed_seconds
                    else None
                ),
                "dimension": embeddings.info.dimension or stored_dimension(collection),
                "max_tokens": embeddings.info.max_tokens,
                "prefixes": {
                    "document": embeddings.info.document_prefix,
                    "query": embeddings.info.query_prefix,
                    "source": embeddings.info.prefix_source,
                },
                "index_mb": (
                    round(size / 2**20, 2)
                    if (size := store.index_bytes(collection)) is not None
                    else None
                ),
                "chunks": collection.count(),
                "collection": collection.name,
                "ingest": report.as_dict(),
                "per_query": {
                    q: {m: round(v, 4) for m, v in values.items()}
                    for q, values in scores.per_query.items()
                },
            }
        )
    return {
        "kind": "embedding-comparison",
        "date": now(),
        "machine": machine() | {"load_average_start": load_start},
        "dataset": describe(dataset, judged, DOCS_K),
        "retrieval": f"similarity (Chroma HNSW), top {chunk_k} chunks, first {DOCS_K} documents",
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "latency_repeats": repeats,
        "throughput_sample": THROUGHPUT_SAMPLE,
        "models": rows,
    }


def embedding_throughput(collection: ChunkCollection, embeddings: ModelEmbeddings) -> float:
    """Chunks per second through `embed_documents`, over up to THROUGHPUT_SAMPLE stored chunks
    (after one small untimed call, so loading the model is not counted)."""
    ids = [chunk_id for chunk_id, _ in itertools.islice(collection.rows(), THROUGHPUT_SAMPLE)]
    texts = [c.text for c in collection.get(ids) if c.text]
    if not texts:
        return 0.0
    embeddings.embed_documents(texts[:2])
    start = time.perf_counter()
    embeddings.embed_documents(texts)
    return len(texts) / (time.perf_counter() - start)


def stored_dimension(collection: ChunkCollection) -> int | None:
    first = next(iter(collection.rows()), None)
    if first is None:
        return None
    found = collection.get([first[0]], text=False, vectors=True)
    return len(found[0].vector or []) if found else None
