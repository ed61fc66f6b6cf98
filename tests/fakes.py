"""The test suite's fakes, in one place (the chain scaffold's test template imports them too):
a retriever that returns fixed documents, a chat model that records its prompts, embeddings
that count what they embed, bag-of-words embeddings whose cosine follows shared words, and an
in-memory store that implements the store seam (`app/store/base.py`) as Chroma does."""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore
from pydantic import Field

from app.config import Settings
from app.errors import StoreError
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings
from app.store.base import EVERYTHING, ChunkCollection, Selection, StoredChunk

FAKE_INFO = EmbeddingModelInfo("fake", "fake-64")
DIM = 64


# --- Chains ----------------------------------------------------------------------------------


class FixedRetriever(BaseRetriever):
    """Returns copies of `documents` for any query, and keeps the queries it was asked."""

    documents: list[Document]
    queries: list[str] = Field(default_factory=list)

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        self.queries.append(query)
        return [
            Document(d.page_content, metadata=dict(d.metadata), id=d.id) for d in self.documents
        ]


class RecordingChatModel(GenericFakeChatModel):
    """Answers from a script and keeps every prompt it was shown."""

    seen: list = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(messages)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


class FailingChatModel(GenericFakeChatModel):
    """A chat model that must not be called."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the chat model must not be called")


def scripted(*replies: str) -> RecordingChatModel:
    return RecordingChatModel(messages=iter([AIMessage(r) for r in replies]))


# --- Embeddings ------------------------------------------------------------------------------


class SimulatedCrash(Exception):
    """Raised by a fake where a real run would have been killed."""


class CountingEmbeddings(Embeddings):
    """DeterministicFakeEmbedding that counts texts and calls, and can fail on a given call."""

    def __init__(self, size: int = DIM) -> None:
        self.inner = DeterministicFakeEmbedding(size=size)
        self.texts = 0
        self.calls = 0
        self.queries = 0
        self.fail_on_call: int | None = None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise SimulatedCrash(f"embedding call {self.calls}")
        self.texts += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return self.inner.embed_query(text)


def fake_embeddings(
    settings: Settings, info: EmbeddingModelInfo = FAKE_INFO, size: int = DIM
) -> tuple[ModelEmbeddings, CountingEmbeddings]:
    counter = CountingEmbeddings(size)
    return ModelEmbeddings(info, lambda: counter, batch_size=settings.embedding_batch_size), counter


_WORD = re.compile(r"\w+")


def bag_of_words_vector(text: str, dim: int = 16) -> list[float]:
    """Each word adds 1 to a slot chosen by its hash: texts sharing words point the same way."""
    import hashlib

    vector = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        slot = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dim
        vector[slot] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class BagOfWords(Embeddings):
    def __init__(self, dim: int = 16) -> None:
        self.dim = dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [bag_of_words_vector(t, self.dim) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return bag_of_words_vector(text, self.dim)


# --- The store seam, in memory ---------------------------------------------------------------


class MemoryCollection:
    """A `ChunkCollection` in a dict: exact cosine search, Chroma's rules for ids."""

    _uids = itertools.count(1)

    def __init__(self, name: str, model: str, dimension: int) -> None:
        self._name = name
        self._uid = f"memory-{next(self._uids)}"
        self._model = model
        self._dimension = dimension
        self.chunks: dict[str, StoredChunk] = {}
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def uid(self) -> str:
        return self._uid

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def dimension(self) -> int | None:
        return self._dimension

    def count(self) -> int:
        return len(self.chunks)

    def _selected(self, selection: Selection) -> list[StoredChunk]:
        with self.lock:
            chunks = list(self.chunks.values())
        return [
            c
            for c in chunks
            if (selection.root is None or c.metadata.get("root") == selection.root)
            and (selection.sources is None or c.metadata.get("source") in selection.sources)
        ]

    def get(
        self, ids: Sequence[str], *, text: bool = True, vectors: bool = False
    ) -> list[StoredChunk]:
        found = []
        for chunk_id in dict.fromkeys(ids):
            chunk = self.chunks.get(chunk_id)
            if chunk is not None:
                found.append(
                    StoredChunk(
                        chunk.id,
                        chunk.text if text else "",
                        dict(chunk.metadata),
                        list(chunk.vector or []) if vectors else None,
                    )
                )
        return found

    def rows(self, selection: Selection = EVERYTHING) -> Iterator[tuple[str, dict[str, Any]]]:
        for chunk in self._selected(selection):
            yield chunk.id, dict(chunk.metadata)

    def search(
        self,
        vector: Sequence[float],
        k: int,
        selection: Selection = EVERYTHING,
        *,
        vectors: bool = False,
    ) -> list[StoredChunk]:
        chunks = self._selected(selection)
        if not chunks:
            return []
        query = np.asarray(vector, dtype=float)
        matrix = np.asarray([c.vector for c in chunks], dtype=float)
        norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
        scores = matrix @ query / np.where(norms == 0, 1.0, norms)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            StoredChunk(
                chunks[i].id,
                chunks[i].text,
                dict(chunks[i].metadata),
                list(chunks[i].vector or []) if vectors else None,
                float(scores[i]),
            )
            for i in order
        ]

    def upsert(self, chunks: Sequence[Document], vectors: Sequence[Sequence[float]]) -> None:
        for chunk, vector in zip(chunks, vectors, strict=True):
            if len(vector) != self._dimension:
                raise StoreError(f"expected {self._dimension} dimensions, got {len(vector)}")
            with self.lock:
                self.chunks[str(chunk.id)] = StoredChunk(
                    str(chunk.id), chunk.page_content, dict(chunk.metadata), list(vector)
                )

    def replace_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        with self.lock:
            for chunk_id, metadata in zip(ids, metadatas, strict=True):
                if chunk_id in self.chunks:
                    self.chunks[chunk_id].metadata = dict(metadata)

    def delete(self, ids: Sequence[str]) -> None:
        with self.lock:
            for chunk_id in ids:
                self.chunks.pop(chunk_id, None)


class MemoryStore:
    """A `ChunkStore` in memory: what the tests use to prove the seam."""

    def __init__(self, location: str = "memory") -> None:
        self.location = location
        self.key = "memory"
        self.collections: dict[str, MemoryCollection] = {}
        self.records: dict[str, str] = {}

    def collection(self, name: str) -> ChunkCollection | None:
        return self.collections.get(name)

    def create_collection(self, name: str, model: str, dimension: int) -> ChunkCollection:
        if name in self.collections:
            raise StoreError(f"collection {name} exists")
        self.collections[name] = MemoryCollection(name, model, dimension)
        return self.collections[name]

    def drop_collection(self, name: str) -> None:
        self.collections.pop(name, None)

    def read_record(self, name: str) -> str | None:
        return self.records.get(name)

    def write_record(self, name: str, text: str) -> None:
        self.records[name] = text

    def record_names(self) -> list[str]:
        return list(self.records)

    def create_record(self, name: str, text: str) -> bool:
        if name in self.records:
            return False
        self.records[name] = text
        return True

    def drop_record(self, name: str) -> None:
        self.records.pop(name, None)

    shared = False

    def refresh(self, *, force: bool = False) -> bool:
        return force

    def index_bytes(self, collection: ChunkCollection) -> int | None:
        return None

    def explain(self, exc: BaseException) -> StoreError | None:
        return None

    def as_vectorstore(self, collection: ChunkCollection, embeddings: Embeddings) -> VectorStore:
        store = InMemoryVectorStore(embeddings)
        ids = [chunk_id for chunk_id, _ in collection.rows()]
        chunks = collection.get(ids, vectors=True)
        store.add_documents([c.document() for c in chunks], ids=[c.id for c in chunks])
        return store

    def close(self) -> None:
        """Nothing to release."""


_MEMORY_STORES: dict[str, MemoryStore] = {}


def open_store(settings: Settings, notify: Any = None) -> MemoryStore:
    """One in-memory store per CHROMA_DIR, for VECTOR_STORE=memory in this process."""
    key = str(settings.chroma_dir)
    return _MEMORY_STORES.setdefault(key, MemoryStore(f"memory:{key}"))
