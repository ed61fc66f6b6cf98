"""The store seam: what the sync, the retriever, the library and the evaluation need of a vector
database. Chroma (`app/store/chroma.py`) is the one implementation the app ships; tests use an
in-memory one (`tests/fakes.py`). Another database is one module with an `open_store(settings)`
that returns a `ChunkStore`, named by VECTOR_STORE.

Filters are ours, not the database's: a source label (`root`) and/or a set of stored file names
(`sources`), the two selections the app makes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from app.errors import StoreError

MODEL_KEY = "embedding_model"  # the embedding model whose vectors a collection holds
DIMENSION_KEY = "embedding_dimension"


@dataclass(frozen=True)
class Selection:
    """Which chunks: those of one source (`root`, its label) and/or of some stored files."""

    root: str | None = None
    sources: Collection[str] | None = None

    @property
    def everything(self) -> bool:
        return self.root is None and self.sources is None


EVERYTHING = Selection()


@dataclass
class StoredChunk:
    """A chunk as stored: id, text, metadata, and (when asked for) its vector and its cosine
    relevance to a query."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None
    score: float | None = None

    def document(self) -> Document:
        metadata = dict(self.metadata)
        if self.score is not None:
            metadata["score"] = round(self.score, 4)
        return Document(id=self.id, page_content=self.text, metadata=metadata)


@runtime_checkable
class ChunkCollection(Protocol):
    """One physical collection: chunks with their text, metadata and vector."""

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> str:
        """Differs between two collections made under one name (one deleted, one made again)."""
        ...

    @property
    def model(self) -> str | None:
        """The embedding model recorded when the collection was made."""
        ...

    @property
    def dimension(self) -> int | None: ...

    def count(self) -> int: ...

    def get(
        self, ids: Sequence[str], *, text: bool = True, vectors: bool = False
    ) -> list[StoredChunk]:
        """The chunks of those ids that exist (in no particular order)."""
        ...

    def rows(self, selection: Selection = EVERYTHING) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (id, metadata) selected, read in pages."""
        ...

    def search(
        self,
        vector: Sequence[float],
        k: int,
        selection: Selection = EVERYTHING,
        *,
        vectors: bool = False,
    ) -> list[StoredChunk]:
        """The `k` nearest chunks by cosine, best first, each with `score` (cosine relevance).
        Never a chunk without its text: ids the index still holds but whose chunk is gone are
        left out."""
        ...

    def upsert(self, chunks: Sequence[Document], vectors: Sequence[Sequence[float]]) -> None:
        """Write chunks (ids in `Document.id`), replacing any with the same id."""
        ...

    def replace_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        """Set each chunk's metadata to exactly this (keys not given are removed)."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...


@runtime_checkable
class ChunkStore(Protocol):
    """The database: named collections, and small JSON records kept beside them."""

    @property
    def location(self) -> str:
        """Where it is, for messages: a directory, or a server's address."""
        ...

    @property
    def key(self) -> str:
        """A file-name-safe name for this store, for files kept beside it (lock, keyword index)."""
        ...

    def collection(self, name: str) -> ChunkCollection | None: ...

    def create_collection(self, name: str, model: str, dimension: int) -> ChunkCollection: ...

    def drop_collection(self, name: str) -> None:
        """Delete a collection; nothing happens when there is none."""
        ...

    def read_record(self, name: str) -> str | None: ...

    def write_record(self, name: str, text: str) -> None:
        """Create or replace a record, atomically."""
        ...

    def record_names(self) -> list[str]: ...

    def create_record(self, name: str, text: str) -> bool:
        """Create a record only if none has this name, atomically for every client of the store
        (what a writer's lease is built on); False when one exists."""
        ...

    def drop_record(self, name: str) -> None:
        """Delete a record; nothing happens when there is none."""
        ...

    @property
    def shared(self) -> bool:
        """Other machines may write to it (a server): writers then take a lease in the store
        itself, since a lock file beside CHROMA_DIR is seen only on this machine."""
        ...

    def refresh(self, *, force: bool = False) -> bool:
        """Make writes by other processes visible to this one (`force`: open the store again
        whatever it looks like, after a failure); True when something may have changed."""
        ...

    def index_bytes(self, collection: ChunkCollection) -> int | None:
        """Bytes the collection's vector index takes on disk; None when it cannot be seen."""
        ...

    def explain(self, exc: BaseException) -> StoreError | None:
        """A failure of the database as one message a person can act on; None if not its own."""
        ...

    def as_vectorstore(self, collection: ChunkCollection, embeddings: Embeddings) -> VectorStore:
        """The collection as a LangChain `VectorStore`, for chains of your own."""
        ...

    def close(self) -> None: ...
