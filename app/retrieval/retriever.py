"""The retriever: similarity, MMR or hybrid (BM25 + vectors, fused by their relative scores),
with a relevance threshold and filters on file, folder and type. A question in a script the
embedding model was not trained on (Chinese for the English MiniLM) is answered from the keyword
index in every mode: the model's vectors for it are noise."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import ConfigDict, Field

from app.store.base import ChunkCollection, Selection
from app.store.keyword_index import KeywordIndex
from app.telemetry import tracing
from app.text.writing_systems import covers

Mode = Literal["similarity", "mmr", "hybrid"]
# Hybrid: each leg's scores are divided by that leg's best score, weighted, and added. Dividing
# by the best (not min-max) keeps a leg's spread: a leg that cannot tell its candidates apart
# (flat scores) barely moves the order. Measured (README, benchmarks/results/): reciprocal rank
# fusion let BM25 pull MS MARCO below vectors alone (0.6946 vs 0.7057); this fusion keeps
# English at 0.70-0.71 for vector weights from 0.6 to 0.9, and Chinese rises as the weight falls
VECTOR_WEIGHT = 0.6
# What `retriever.invoke(query, **search)` may change for one call.
SEARCH_PARAMETERS = (
    "k",
    "fetch_k",
    "score_threshold",
    "mode",
    "mmr_lambda",
    "allowed_sources",
    "keyword_threshold",
)


class DocumentRetriever(BaseRetriever):
    """Every returned Document carries `score`, its cosine relevance to the query, in its
    metadata: in every mode, keyword-only hybrid hits included. The threshold applies to that
    score in every mode. When no chunk reaches `score_threshold`, it returns the nearest chunks
    marked `below_threshold`, so the chain can say "not found" without asking the model, and
    still show where it looked.

    Every search parameter can also be given per call, e.g. `retriever.invoke(q, k=1)` or
    `retriever.invoke(q, mode="hybrid", score_threshold=0.4)`: see `SEARCH_PARAMETERS`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: ChunkCollection
    embeddings: Embeddings
    keyword_index: KeywordIndex | None = None
    mode: Mode = "similarity"
    k: int = Field(default=4, ge=1)
    fetch_k: int = Field(default=20, ge=1)  # candidates before MMR or fusion; at least k
    score_threshold: float = 0.0
    mmr_lambda: float = Field(default=0.5, ge=0.0, le=1.0)  # 1: pure relevance, 0: pure variety
    allowed_sources: frozenset[str] | None = None  # None: no filter
    # Scripts the embedding model was trained on (app.text.writing_systems names: LATIN,
    # CJK...); None: any.
    model_scripts: frozenset[str] | None = None
    # For questions answered from the keyword index: the share of the question's keyword weight
    # a chunk must hold (KeywordIndex.coverage) to count as found.
    keyword_threshold: float = 0.0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **search: Any
    ) -> list[Document]:
        return self.with_search(**search)._search(query)

    def with_search(self, **search: Any) -> DocumentRetriever:
        """This retriever with some search parameters changed, validated like the constructor's."""
        search.pop("verbose", None)  # BaseRetriever.invoke leaves its own option in the kwargs
        unknown = sorted(set(search) - set(SEARCH_PARAMETERS))
        if unknown:
            raise ValueError(
                f"Unknown search parameter {', '.join(unknown)}: "
                f"the retriever takes {', '.join(SEARCH_PARAMETERS)}."
            )
        if not search:
            return self
        return type(self).model_validate(
            {name: getattr(self, name) for name in type(self).model_fields} | search
        )

    def _search(self, query: str) -> list[Document]:
        with tracing.span(
            "retrieve",
            localrag_mode=self.mode,
            localrag_k=self.k,
            localrag_fetch_k=self.fetch_k,
            localrag_score_threshold=self.score_threshold,
            localrag_filtered_sources=(
                None if self.allowed_sources is None else len(self.allowed_sources)
            ),
            **tracing.span_kind("RETRIEVER"),
        ) as current:
            found = self._search_traced(query, current)
            if current.is_recording():
                tracing.record(
                    current,
                    localrag_not_found=any(d.metadata.get("below_threshold") for d in found),
                    **tracing.retrieval_attributes(found),
                )
                if tracing.capture_content():
                    tracing.record(current, **{"input.value": query})
            return found

    def _search_traced(self, query: str, current: tracing.Span) -> list[Document]:
        if self.allowed_sources is not None and not self.allowed_sources:
            return []
        if self.keyword_index is not None and not covers(self.model_scripts, query):
            tracing.record(current, localrag_led_by="keywords")
            return self._keyword_led(query)
        with tracing.span("retrieve.vector", localrag_fetch_k=max(self.fetch_k, self.k)) as leg:
            query_vector = self.embeddings.embed_query(query)
            candidates, vectors = self._vector_candidates(query_vector)
            passing = [
                i for i, d in enumerate(candidates) if d.metadata["score"] >= self.score_threshold
            ]
            tracing.record(
                leg,
                localrag_candidates=len(candidates),
                localrag_passing=len(passing),
                localrag_best_score=max((d.metadata["score"] for d in candidates), default=None),
            )
        if not passing:
            # The threshold is on vector relevance in every mode: keyword hits on words like
            # "the" must not turn a question the documents cannot answer into a model call.
            nearest = candidates[: self.k]
            for doc in nearest:
                doc.metadata["below_threshold"] = True
            return nearest
        if self.mode == "hybrid":
            return self._fuse(query, query_vector, candidates, passing)
        if self.mode == "mmr":
            with tracing.span(
                "mmr", localrag_candidates=len(passing), localrag_lambda=self.mmr_lambda
            ):
                chosen = maximal_marginal_relevance(
                    np.array(query_vector),
                    [vectors[i] for i in passing],
                    lambda_mult=self.mmr_lambda,
                    k=min(self.k, len(passing)),
                )
                return [candidates[passing[i]] for i in chosen]
        return [candidates[i] for i in passing[: self.k]]

    def relevance(self, query: str, chunk_ids: list[str]) -> dict[str, float]:
        """The `score` each of these chunks carries when a search for `query` returns it, by
        chunk id (ids that are gone are left out): keyword coverage for a question in a script
        the model was not trained on, cosine relevance from the stored vector otherwise."""
        if self.keyword_index is not None and not covers(self.model_scripts, query):
            found = list(self._fetch(chunk_ids).values())
            coverage = self.keyword_index.coverage(query, [d.page_content for d in found])
            return {str(d.id): round(share, 4) for d, share in zip(found, coverage, strict=True)}
        query_vector = np.asarray(self.embeddings.embed_query(query), dtype=float)
        return {
            chunk_id: doc.metadata["score"]
            for chunk_id, doc in self._scored(chunk_ids, query_vector).items()
        }

    def _selection(self) -> Selection:
        return Selection(sources=self.allowed_sources)

    def _vector_candidates(
        self, query_vector: list[float]
    ) -> tuple[list[Document], list[list[float]]]:
        found = self.collection.search(
            query_vector,
            max(self.fetch_k, self.k),
            self._selection(),
            vectors=self.mode == "mmr",
        )
        vectors = [c.vector or [] for c in found] if self.mode == "mmr" else []
        return [c.document() for c in found], vectors

    def _fuse(
        self,
        query: str,
        query_vector: list[float],
        candidates: list[Document],
        passing: list[int],
    ) -> list[Document]:
        """The vector hits and the BM25 hits that reach the threshold, each leg's score divided
        by its best, weighted (VECTOR_WEIGHT) and added. Keyword-only hits carry their cosine
        (from their stored vectors), so they get their vector share too."""
        if self.keyword_index is None:
            raise ValueError("hybrid retrieval needs the keyword index")
        with tracing.span("retrieve.keywords", localrag_fetch_k=max(self.fetch_k, self.k)) as leg:
            keyword_hits = self.keyword_index.search(
                query, max(self.fetch_k, self.k), self.allowed_sources
            )
            tracing.record(
                leg,
                localrag_candidates=len(keyword_hits),
                localrag_best_score=max((s for _, s in keyword_hits), default=None),
            )
        with tracing.span("fuse", localrag_vector_weight=VECTOR_WEIGHT) as step:
            best = self._fused(query_vector, candidates, passing, keyword_hits, step)
        return best

    def _fused(
        self,
        query_vector: list[float],
        candidates: list[Document],
        passing: list[int],
        keyword_hits: list[tuple[str, float]],
        step: tracing.Span,
    ) -> list[Document]:
        by_id = {str(d.id): d for d in candidates}
        by_id |= self._scored(
            [i for i, _ in keyword_hits if i not in by_id], np.asarray(query_vector, dtype=float)
        )
        keyword = {
            i: score
            for i, score in keyword_hits
            if i in by_id and by_id[i].metadata["score"] >= self.score_threshold
        }
        pool = list(dict.fromkeys([str(candidates[i].id) for i in passing] + list(keyword)))
        best_vector = max((by_id[i].metadata["score"] for i in pool), default=0.0)
        best_keyword = max(keyword.values(), default=0.0)

        def part(score: float, best: float, weight: float) -> float:
            return weight * max(score, 0.0) / best if best > 0 else 0.0

        fused = {
            i: part(by_id[i].metadata["score"], best_vector, VECTOR_WEIGHT)
            + part(keyword.get(i, 0.0), best_keyword, 1 - VECTOR_WEIGHT)
            for i in pool
        }
        best = sorted(fused, key=lambda i: fused[i], reverse=True)[: self.k]
        for chunk_id in best:
            by_id[chunk_id].metadata["fused"] = round(fused[chunk_id], 5)
        tracing.record(
            step,
            localrag_vector_hits=len(passing),
            localrag_keyword_hits=len(keyword),
            localrag_pool=len(pool),
            localrag_chunk_ids=best,
            localrag_fused_scores=[round(fused[i], 5) for i in best],
        )
        return [by_id[chunk_id] for chunk_id in best]

    def _keyword_led(self, query: str) -> list[Document]:
        """BM25 order, then vector candidates to fill up; `score` is keyword coverage (0-1),
        and `keyword_threshold` applies to the best of it."""
        assert self.keyword_index is not None
        wanted = max(self.fetch_k, self.k)
        with tracing.span("retrieve.keywords", localrag_fetch_k=wanted) as leg:
            order = [i for i, _ in self.keyword_index.search(query, wanted, self.allowed_sources)]
            tracing.record(leg, localrag_candidates=len(order))
        found = self._fetch(order)
        candidates = [found[i] for i in order if i in found]
        if len(candidates) < self.k:
            vector_hits, _ = self._vector_candidates(self.embeddings.embed_query(query))
            candidates += [d for d in vector_hits if str(d.id) not in found]
        coverage = self.keyword_index.coverage(query, [d.page_content for d in candidates])
        for doc, share in zip(candidates, coverage, strict=True):
            doc.metadata["score"] = round(share, 4)
            doc.metadata["matched_by"] = "keywords"
        picked = candidates[: self.k]
        # Found when any candidate holds enough of the question; the order stays BM25's, which
        # ranks better than coverage does (filtering each chunk by coverage lost 2 of 35
        # Chinese sample questions at k 4).
        if not any(d.metadata["score"] >= self.keyword_threshold for d in candidates):
            for doc in picked:
                doc.metadata["below_threshold"] = True
        return picked

    def _fetch(self, chunk_ids: list[str]) -> dict[str, Document]:
        """The chunks of those ids that still exist with their text."""
        if not chunk_ids:
            return {}
        return {c.id: c.document() for c in self.collection.get(chunk_ids) if c.text}

    def _scored(self, chunk_ids: list[str], query_vector: np.ndarray) -> dict[str, Document]:
        """Chunks found by keyword only, with the cosine relevance the vector search would have
        given them, computed from their stored vectors."""
        if not chunk_ids:
            return {}
        query_norm = float(np.linalg.norm(query_vector)) or 1.0
        scored = {}
        for chunk in self.collection.get(chunk_ids, vectors=True):
            if not chunk.text:
                continue
            stored = np.asarray(chunk.vector, dtype=float)
            chunk.score = float(stored @ query_vector) / (
                (float(np.linalg.norm(stored)) or 1.0) * query_norm
            )
            scored[chunk.id] = chunk.document()
        return scored
