"""Chroma behind the store seam (`app/store/base.py`): a persistent directory or a Chroma server.
The only module that imports `chromadb` and `langchain_chroma`.

Two facts of Chroma shape it. Collections are created with cosine distance, said explicitly
(Chroma's default is L2, and relevance scores depend on it). And an embedded Chroma is
thread-safe but not process-safe: a process that keeps a `PersistentClient` open keeps the
vector index it loaded, so after another process deletes chunks its queries return ids whose
chunk is gone (measured: 513 of 1,000 results). `refresh()` therefore reopens the client when
the database file changed since the last look (one `stat`), and `search` never returns an id
without its text.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.errors import StoreError
from app.paths import private_dir, tighten
from app.store.base import (
    DIMENSION_KEY,
    EVERYTHING,
    MODEL_KEY,
    ChunkCollection,
    Selection,
    StoredChunk,
)

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from langchain_chroma import Chroma

READ_PAGE = 5000  # rows fetched per request when reading a whole selection
RECORD_SUFFIX = ".library"  # a record is the metadata of an empty companion collection
RECORD_KEY = "localrag_library"
T = TypeVar("T")


def describe(settings: Settings) -> str:
    if settings.chroma_host:
        scheme = "https" if settings.chroma_ssl else "http"
        return f"Chroma server {scheme}://{settings.chroma_host}:{settings.chroma_port}"
    return str(settings.chroma_dir)


def store_key(settings: Settings) -> str:
    """`local`, or the server's host and port, safe as a file name."""
    target = (
        f"server-{settings.chroma_host}-{settings.chroma_port}" if settings.chroma_host else "local"
    )
    return re.sub(r"[^A-Za-z0-9.-]", "_", target)


class ChromaCollection:
    """A Chroma collection as a `ChunkCollection`."""

    def __init__(self, store: ChromaStore, collection: Collection) -> None:
        self._store = store
        self._collection = collection

    @property
    def name(self) -> str:
        return self._collection.name

    @property
    def uid(self) -> str:
        return str(self._collection.id)

    @property
    def model(self) -> str | None:
        value = (self._collection.metadata or {}).get(MODEL_KEY)
        return str(value) if value is not None else None

    @property
    def dimension(self) -> int | None:
        value = (self._collection.metadata or {}).get(DIMENSION_KEY)
        return int(value) if isinstance(value, int) else None

    def count(self) -> int:
        return self._store.call(self._collection.count)

    def get(
        self, ids: Sequence[str], *, text: bool = True, vectors: bool = False
    ) -> list[StoredChunk]:
        include = (
            ["metadatas"] + (["documents"] if text else []) + (["embeddings"] if vectors else [])
        )
        found: list[StoredChunk] = []
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), self._store.max_batch):
            page: Any = self._store.call(
                self._collection.get,
                ids=ids[start : start + self._store.max_batch],
                include=include,
            )
            found += _chunks(page, text=text, vectors=vectors)
        return found

    def rows(self, selection: Selection = EVERYTHING) -> Iterator[tuple[str, dict[str, Any]]]:
        if selection.sources is not None and not selection.sources:
            return
        where = _where(selection)
        offset = 0
        while True:
            page: Any = self._store.call(
                self._collection.get,
                include=["metadatas"],
                where=where,
                limit=READ_PAGE,
                offset=offset,
            )
            metadatas = page["metadatas"] or [{}] * len(page["ids"])
            for chunk_id, metadata in zip(page["ids"], metadatas, strict=True):
                yield chunk_id, dict(metadata or {})
            if len(page["ids"]) < READ_PAGE:
                return
            offset += len(page["ids"])

    def search(
        self,
        vector: Sequence[float],
        k: int,
        selection: Selection = EVERYTHING,
        *,
        vectors: bool = False,
    ) -> list[StoredChunk]:
        if selection.sources is not None and not selection.sources:
            return []
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if vectors else [])
        result: Any = self._store.call(
            self._collection.query,
            query_embeddings=[list(vector)],
            n_results=k,
            where=_where(selection),
            include=include,
        )
        found = []
        for i, chunk_id in enumerate(result["ids"][0]):
            text = result["documents"][0][i]
            if text is None:  # an id the index holds for a chunk another process deleted
                self._store.stale = True
                continue
            found.append(
                StoredChunk(
                    chunk_id,
                    text,
                    dict(result["metadatas"][0][i] or {}),
                    [float(x) for x in result["embeddings"][0][i]] if vectors else None,
                    # The space is cosine, so 1 - distance is the cosine similarity.
                    1.0 - float(result["distances"][0][i]),
                )
            )
        return found

    def upsert(self, chunks: Sequence[Document], vectors: Sequence[Sequence[float]]) -> None:
        step = self._store.max_batch
        for start in range(0, len(chunks), step):
            batch = chunks[start : start + step]
            self._store.call(
                self._collection.upsert,
                ids=[str(c.id) for c in batch],
                embeddings=[list(v) for v in vectors[start : start + step]],
                documents=[c.page_content for c in batch],
                metadatas=[c.metadata for c in batch],
            )

    def replace_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        old = {c.id: c.metadata for c in self.get(ids, text=False)}
        step = self._store.max_batch
        for start in range(0, len(ids), step):
            batch = list(ids[start : start + step])
            self._store.call(
                self._collection.update,
                ids=batch,
                # Chroma merges an update into the stored metadata; only None removes a key.
                metadatas=[
                    new | {key: None for key in old.get(i, {}).keys() - new.keys()}
                    for i, new in zip(batch, metadatas[start : start + step], strict=True)
                ],
            )

    def delete(self, ids: Sequence[str]) -> None:
        ordered = sorted(ids)
        step = self._store.max_batch
        for start in range(0, len(ordered), step):
            self._store.call(self._collection.delete, ids=ordered[start : start + step])


class ChromaStore:
    """A Chroma database (directory or server) as a `ChunkStore`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.location = describe(settings)
        self.key = store_key(settings)
        self.stale = False  # a query met a chunk deleted by another process: reopen first
        self._client = self._connect()
        self._seen = self._signature()  # after: opening a client writes the file itself
        self.max_batch = self.call(self._client.get_max_batch_size)

    def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A Chroma server that goes away mid-run is a StoreError (exit 5), not a traceback."""
        import httpx

        try:
            return method(*args, **kwargs)
        except httpx.TransportError as exc:
            raise StoreError(
                f"Lost the connection to the vector store at {self.location} "
                f"({type(exc).__name__}: {exc}). Start it again and run the command once more: "
                "what was written is kept."
            ) from exc

    def _connect(self) -> ClientAPI:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = self.settings
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        try:
            if settings.chroma_host:
                return chromadb.HttpClient(
                    host=settings.chroma_host,
                    port=settings.chroma_port,
                    ssl=settings.chroma_ssl,
                    headers=settings.chroma_headers,
                    settings=chroma_settings,
                )
            return chromadb.PersistentClient(
                path=str(settings.chroma_dir), settings=chroma_settings
            )
        except Exception as exc:  # chromadb raises plain ValueError/ConnectionError/OSError
            raise StoreError(f"Cannot open the vector store at {self.location}: {exc}") from exc

    # --- Seeing other processes' writes -------------------------------------------------------

    def _signature(self) -> tuple[int, int] | None:
        """When and how the database file last changed; None for a server (it is consistent)."""
        if self.settings.chroma_host:
            return None
        try:
            stat = os.stat(Path(self.settings.chroma_dir) / "chroma.sqlite3")
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def refresh(self, *, force: bool = False) -> bool:
        signature = self._signature()
        if signature == self._seen and not self.stale and not force:
            return False
        self._seen, self.stale = signature, False
        if not self.settings.chroma_host:
            from chromadb.api.shared_system_client import SharedSystemClient

            # Chroma keeps one System per directory per process, and its vector index does
            # not follow other processes' writes: drop it so the next client loads it afresh.
            # Objects still using the old one (an answer under way) keep working with it.
            SharedSystemClient._identifier_to_system.pop(str(self.settings.chroma_dir), None)
            SharedSystemClient._identifier_to_refcount.pop(str(self.settings.chroma_dir), None)
            self._client = self._connect()
            # Opening a client writes the database file (its mtime changes): the signature
            # seen is the one after, or every later look would reopen again.
            self._seen = self._signature()
        return True

    # --- Collections and records ----------------------------------------------------------------

    def _get(self, name: str) -> Collection | None:
        from chromadb.errors import NotFoundError

        try:
            return self.call(self._client.get_collection, name)
        except NotFoundError:
            return None
        except ValueError as exc:  # older clients say "does not exist" with a ValueError
            if "does not exist" in str(exc):
                return None
            raise

    def collection(self, name: str) -> ChunkCollection | None:
        found = self._get(name)
        return ChromaCollection(self, found) if found is not None else None

    def create_collection(self, name: str, model: str, dimension: int) -> ChunkCollection:
        created = self.call(
            self._client.create_collection,
            name,
            metadata={MODEL_KEY: model, DIMENSION_KEY: dimension, "created_by": "localrag"},
            configuration={"hnsw": {"space": "cosine"}},
            embedding_function=None,
        )
        return ChromaCollection(self, created)

    def drop_collection(self, name: str) -> None:
        from chromadb.errors import NotFoundError

        try:
            self.call(self._client.delete_collection, name)
        except NotFoundError:
            pass
        except ValueError as exc:
            if "does not exist" not in str(exc):
                raise

    def read_record(self, name: str) -> str | None:
        holder = self._get(name + RECORD_SUFFIX)
        if holder is None:
            return None
        text = (holder.metadata or {}).get(RECORD_KEY)
        if not isinstance(text, str):
            raise StoreError(
                f"Collection '{holder.name}' is not a localrag library record. "
                "Pick another COLLECTION_NAME."
            )
        return text

    def write_record(self, name: str, text: str) -> None:
        """Chroma replaces a collection's metadata as a whole: one write, atomic."""
        holder = self._get(name + RECORD_SUFFIX)
        if holder is None:
            self.call(
                self._client.create_collection,
                name + RECORD_SUFFIX,
                metadata={RECORD_KEY: text},
                embedding_function=None,
            )
        else:
            self.call(holder.modify, metadata={RECORD_KEY: text})

    def create_record(self, name: str, text: str) -> bool:
        """Chroma's collection names are unique in its database: of two clients creating one,
        exactly one succeeds."""
        from chromadb.errors import ChromaError

        try:
            self.call(
                self._client.create_collection,
                name + RECORD_SUFFIX,
                metadata={RECORD_KEY: text},
                embedding_function=None,
            )
        except (ChromaError, ValueError) as exc:
            if "already exists" in str(exc):
                return False
            raise
        return True

    def drop_record(self, name: str) -> None:
        self.drop_collection(name + RECORD_SUFFIX)

    @property
    def shared(self) -> bool:
        return bool(self.settings.chroma_host)

    def record_names(self) -> list[str]:
        names = []
        for collection in self.call(self._client.list_collections):
            full = collection.name if hasattr(collection, "name") else str(collection)
            if full.endswith(RECORD_SUFFIX):
                names.append(full.removesuffix(RECORD_SUFFIX))
        return names

    def index_bytes(self, collection: ChunkCollection) -> int | None:
        """The HNSW files of the collection's vector segment; None for a server (its disk is
        not ours to see) or before Chroma writes them (after 1,000 vectors)."""
        if self.settings.chroma_host:
            return None
        database = self.settings.chroma_dir / "chroma.sqlite3"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
                found = db.execute(
                    "SELECT id FROM segments WHERE collection = ? AND scope = 'VECTOR'",
                    (collection.uid,),
                ).fetchone()
        except sqlite3.Error:
            return None
        folder = self.settings.chroma_dir / str(found[0]) if found else None
        if folder is None or not folder.is_dir():
            return None
        return sum(p.stat().st_size for p in folder.glob("*") if p.is_file())

    def explain(self, exc: BaseException) -> StoreError | None:
        import httpx
        from chromadb.errors import ChromaError, NotFoundError

        if isinstance(exc, NotFoundError):
            return StoreError(
                f"The collection was rebuilt or deleted while this session had it open "
                f"({self.location}). It is opened again for your next question; if it was "
                "deleted, run `python -m app.ingest` first."
            )
        if isinstance(exc, httpx.TransportError) and self._is_own_request(exc):
            return StoreError(
                f"Lost the connection to the vector store at {self.location} "
                f"({type(exc).__name__}). Start it again: the next question reconnects."
            )
        if isinstance(exc, ChromaError | sqlite3.Error):
            return StoreError(
                f"The vector store at {self.location} failed: {exc}. The next question opens "
                "it again."
            )
        return None

    def _is_own_request(self, exc: BaseException) -> bool:
        """Whether an httpx error came from talking to the Chroma server (not a model server)."""
        if not self.settings.chroma_host:
            return False
        try:
            url = exc.request.url  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # httpx: RuntimeError when no request is set
            return False
        return (url.host, url.port) == (self.settings.chroma_host, self.settings.chroma_port)

    def as_vectorstore(self, collection: ChunkCollection, embeddings: Embeddings) -> Chroma:
        from langchain_chroma import Chroma

        return Chroma(
            client=self._client,
            collection_name=collection.name,
            embedding_function=embeddings,
            create_collection_if_not_exists=False,
        )

    def close(self) -> None:
        """Nothing to release: Chroma's clients hold no handle worth closing early."""


def open_store(
    settings: Settings, notify: Callable[[str], None] = lambda line: None
) -> ChromaStore:
    """The store at CHROMA_DIR (made private, and tightened if an older run left it readable by
    others) or at the Chroma server CHROMA_HOST names."""
    if not settings.chroma_host:
        private_dir(settings.chroma_dir)
        widened = tighten(settings.chroma_dir)
        if widened:
            notify(
                f"Made the store private: {len(widened)} files and folders in "
                f"{settings.chroma_dir} were readable by other users (now 0700/0600)."
            )
    return ChromaStore(settings)


def _where(selection: Selection) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = []
    if selection.root is not None:
        clauses.append({"root": selection.root})
    if selection.sources is not None:
        clauses.append({"source": {"$in": sorted(selection.sources)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _chunks(page: Any, *, text: bool, vectors: bool) -> list[StoredChunk]:
    metadatas = page["metadatas"] or [{}] * len(page["ids"])
    return [
        StoredChunk(
            chunk_id,
            (page["documents"][i] or "") if text else "",
            dict(metadatas[i] or {}),
            [float(x) for x in page["embeddings"][i]] if vectors else None,
        )
        for i, chunk_id in enumerate(page["ids"])
    ]
