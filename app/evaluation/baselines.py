"""The two baselines, on the very chunks the collection holds.

- exact: brute-force cosine over every stored chunk vector (numpy), the query embedded by the
  same `embed_query` as the retriever: the ceiling for the vector store's approximate search.
- bm25: `bm25s` (Lucene BM25, k1 1.5, b 0.75) over the same chunk texts, with bm25s's default
  tokenizer and English stop words, no stemmer; text in scripts without spaces (Chinese...) is
  first cut into the keyword index's character pairs (`index_terms`), else bm25s would see one
  "word" per run of Chinese between punctuation. English text is untouched by that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.models.embeddings import ModelEmbeddings
from app.store.keyword_index import index_terms

if TYPE_CHECKING:
    from app.store.base import ChunkCollection

READ_PAGE = 2000


@dataclass
class StoredChunks:
    ids: list[str]
    texts: list[str]
    sources: list[str]
    vectors: np.ndarray  # (chunks, dimension), float32, rows normalised


def read_chunks(collection: ChunkCollection) -> StoredChunks:
    """Every chunk's id, text, source and vector, a page at a time."""
    ids: list[str] = []
    texts: list[str] = []
    sources: list[str] = []
    blocks: list[np.ndarray] = []
    all_ids = sorted(chunk_id for chunk_id, _ in collection.rows())
    for start in range(0, len(all_ids), READ_PAGE):
        page = collection.get(all_ids[start : start + READ_PAGE], vectors=True)
        ids.extend(c.id for c in page)
        texts.extend(c.text for c in page)
        sources.extend(str(c.metadata.get("source", "")) for c in page)
        blocks.append(np.asarray([c.vector for c in page], dtype=np.float32))
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32)
    if len(vectors):
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1.0, norms)
    return StoredChunks(ids, texts, sources, vectors)


class ExactSearch:
    """Cosine similarity against every chunk: a dot product of normalised vectors."""

    def __init__(self, chunks: StoredChunks, embeddings: ModelEmbeddings) -> None:
        self.chunks = chunks
        self.embeddings = embeddings

    def search(self, query: str, n: int) -> list[int]:
        vector = np.asarray(self.embeddings.embed_query(query), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        # einsum, not `@`: a BLAS matrix-vector product leaves OpenBLAS's threads spinning,
        # and they steal the 2 cores from torch while it embeds the next query (measured: the
        # embedding took twice as long and p95 went from 26 to 111 ms on 5k chunks).
        scores = np.einsum("ij,j->i", self.chunks.vectors, vector / (norm or 1.0))
        n = min(n, len(scores))
        if n == 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        return [int(i) for i in top[np.argsort(-scores[top], kind="stable")]]


class Bm25Search:
    def __init__(self, chunks: StoredChunks) -> None:
        import bm25s

        self.bm25s = bm25s
        self.size = len(chunks.texts)
        texts = [index_terms(t) for t in chunks.texts]
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        self.index = bm25s.BM25()
        self.index.index(tokens, show_progress=False)

    def search(self, query: str, n: int) -> list[int]:
        terms = self.bm25s.tokenize(
            [index_terms(query)], stopwords="en", return_ids=False, show_progress=False
        )
        n = min(n, self.size)
        if n == 0 or not terms or not terms[0]:
            return []
        found, scores = self.index.retrieve(terms, k=n, show_progress=False, n_threads=1)
        # Chunks sharing no term with the query score 0: they were not found.
        return [int(i) for i, s in zip(found[0], scores[0], strict=True) if s > 0]
