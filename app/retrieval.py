"""The retriever: similarity, MMR or hybrid (BM25 + vectors, fused by reciprocal rank), with a
relevance threshold and filters on file, folder and type."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import ConfigDict

from app.keyword_index import KeywordIndex

if TYPE_CHECKING:
    pass

Mode = Literal["similarity", "mmr", "hybrid"]
RRF_K = 60  # the constant from Cormack et al. (2009); damps the weight of top ranks


@dataclass(frozen=True)
class SourceFilter:
    """`file=PATTERN`, `folder=PATH` or `type=EXT`, as typed after --where."""

    field: Literal["file", "folder", "type"]
    value: str

    @classmethod
    def parse(cls, text: str) -> SourceFilter:
        key, sep, value = text.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "source":
            key = "file"
        if not sep or key not in ("file", "folder", "type") or not value:
            raise ValueError(
                f"Cannot read the filter {text!r}: use file=PATH (wildcards allowed), "
                "folder=PATH or type=EXT, e.g. folder=ferry or type=pdf."
            )
        return cls(key, value)  # type: ignore[arg-type]

    def matches(self, source: str) -> bool:
        if self.field == "file":
            return source == self.value or fnmatch.fnmatch(source, self.value)
        if self.field == "folder":
            return source.startswith(self.value.strip("/") + "/")
        return source.lower().endswith("." + self.value.lower().lstrip("."))

    def __str__(self) -> str:
        return f"{self.field}={self.value}"


class DocumentRetriever(BaseRetriever):
    """Every returned Document carries `score` (cosine relevance) in its metadata. When no chunk
    reaches `score_threshold`, it returns the nearest chunks marked `below_threshold`, so the
    chain can say "not found" without asking the model, and still show where it looked."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    collection: Any
    embeddings: Embeddings
    keyword_index: KeywordIndex | None = None
    mode: Mode = "similarity"
    k: int = 4
    fetch_k: int = 20
    score_threshold: float = 0.0
    mmr_lambda: float = 0.5
    allowed_sources: frozenset[str] | None = None  # None: no filter

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.allowed_sources is not None and not self.allowed_sources:
            return []
        query_vector = self.embeddings.embed_query(query)
        candidates, vectors = self._vector_candidates(query_vector)
        passing = [
            i for i, d in enumerate(candidates) if d.metadata["score"] >= self.score_threshold
        ]
        if not passing:
            # The threshold is on vector relevance in every mode: keyword hits on words like
            # "the" must not turn a question the documents cannot answer into a model call.
            nearest = candidates[: self.k]
            for doc in nearest:
                doc.metadata["below_threshold"] = True
            return nearest
        if self.mode == "hybrid":
            picked = self._fuse(query, [candidates[i] for i in passing])
        elif self.mode == "mmr":
            chosen = maximal_marginal_relevance(
                np.array(query_vector),
                [vectors[i] for i in passing],
                lambda_mult=self.mmr_lambda,
                k=min(self.k, len(passing)),
            )
            picked = [candidates[passing[i]] for i in chosen]
        else:
            picked = [candidates[i] for i in passing[: self.k]]
        return picked

    def _where(self) -> dict[str, Any] | None:
        if self.allowed_sources is None:
            return None
        return {"source": {"$in": sorted(self.allowed_sources)}}

    def _vector_candidates(
        self, query_vector: list[float]
    ) -> tuple[list[Document], list[list[float]]]:
        include = ["documents", "metadatas", "distances"]
        if self.mode == "mmr":
            include.append("embeddings")
        result = self.collection.query(
            query_embeddings=[query_vector],
            n_results=max(self.fetch_k, self.k),
            where=self._where(),
            include=include,
        )
        docs = [
            Document(
                id=chunk_id,
                page_content=text or "",
                metadata=dict(meta or {}) | {"score": round(1.0 - float(distance), 4)},
            )
            for chunk_id, text, meta, distance in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            )
        ]
        vectors = [list(v) for v in result["embeddings"][0]] if self.mode == "mmr" else []
        return docs, vectors

    def _fuse(self, query: str, vector_hits: list[Document]) -> list[Document]:
        """Reciprocal rank fusion of the vector hits and the BM25 hits."""
        if self.keyword_index is None:
            raise ValueError("hybrid retrieval needs the keyword index")
        keyword_hits = self.keyword_index.search(
            query, max(self.fetch_k, self.k), self.allowed_sources
        )
        fused: dict[str, float] = {}
        for rank, doc in enumerate(vector_hits):
            fused[str(doc.id)] = fused.get(str(doc.id), 0.0) + 1.0 / (RRF_K + rank + 1)
        for rank, (chunk_id, _) in enumerate(keyword_hits):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused, key=lambda i: fused[i], reverse=True)[: self.k]
        by_id = {str(d.id): d for d in vector_hits}
        missing = [i for i in best if i not in by_id]
        if missing:
            found = self.collection.get(ids=missing, include=["documents", "metadatas"])
            for chunk_id, text, meta in zip(
                found["ids"], found["documents"], found["metadatas"], strict=True
            ):
                # A keyword-only hit: its vector relevance is unknown, so it gets none.
                by_id[chunk_id] = Document(
                    id=chunk_id, page_content=text or "", metadata=dict(meta or {}) | {"score": 0.0}
                )
        picked = []
        for chunk_id in best:
            if chunk_id in by_id:
                doc = by_id[chunk_id]
                doc.metadata["rrf"] = round(fused[chunk_id], 5)
                picked.append(doc)
        return picked


def allowed_sources(filters: list[SourceFilter], known_sources: list[str]) -> frozenset[str] | None:
    """The stored files every filter accepts; None when there is no filter."""
    if not filters:
        return None
    return frozenset(s for s in known_sources if all(f.matches(s) for f in filters))
