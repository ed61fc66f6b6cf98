"""Chroma: the client (embedded or server), collections guarded against mixing models, and the
one-writer lock."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import Settings
from app.errors import StoreBusy, StoreError
from app.models.embeddings import EmbeddingModelInfo

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

MODEL_KEY = "embedding_model"
DIMENSION_KEY = "embedding_dimension"
READ_PAGE = 5000  # metadata rows fetched per request when reading the whole collection


def collection_name(settings: Settings, info: EmbeddingModelInfo) -> str:
    """The library's name: one per embedding model by default, so vectors of two models never
    meet (the library's collections are named after it, see app/store/library.py)."""
    if settings.collection_name:
        return settings.collection_name
    slug = re.sub(r"[^a-z0-9]+", "-", info.name.lower()).strip("-")
    return f"localrag-{info.provider}-{slug}"[:60].rstrip("-")


def describe_store(settings: Settings) -> str:
    if settings.chroma_host:
        scheme = "https" if settings.chroma_ssl else "http"
        return f"Chroma server {scheme}://{settings.chroma_host}:{settings.chroma_port}"
    return f"{settings.chroma_dir}"


def connect(settings: Settings) -> ClientAPI:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

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
        make_store_dir(settings)
        return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
    except Exception as exc:  # chromadb raises plain ValueError/ConnectionError/OSError here
        raise StoreError(
            f"Cannot open the vector store at {describe_store(settings)}: {exc}"
        ) from exc


@contextmanager
def store_errors(settings: Settings) -> Iterator[None]:
    """A Chroma server that goes away mid-run is a StoreError (exit 5), not a traceback."""
    import httpx

    try:
        yield
    except httpx.TransportError as exc:
        raise StoreError(
            f"Lost the connection to the vector store at {describe_store(settings)} "
            f"({type(exc).__name__}: {exc}). Start it again and run the ingest once more: "
            "it keeps what was written and does the rest."
        ) from exc


def get_collection(client: ClientAPI, name: str) -> Collection | None:
    """The collection of that name, or None."""
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name)
    except NotFoundError:
        return None
    except ValueError as exc:  # older clients say "does not exist" with a ValueError
        if "does not exist" in str(exc):
            return None
        raise


def drop_collection(client: ClientAPI, name: str) -> None:
    """Delete a collection; no error if it is absent."""
    from chromadb.errors import NotFoundError

    try:
        client.delete_collection(name)
    except NotFoundError:
        pass
    except ValueError as exc:  # older clients say "does not exist" with a ValueError
        if "does not exist" not in str(exc):
            raise


def create_collection(
    client: ClientAPI, name: str, info: EmbeddingModelInfo, dimension: int
) -> Collection:
    return client.create_collection(
        name,
        metadata={MODEL_KEY: info.key, DIMENSION_KEY: dimension, "created_by": "localrag"},
        # Cosine, said explicitly: Chroma's default is L2, and relevance scores depend on it.
        configuration={"hnsw": {"space": "cosine"}},
        embedding_function=None,
    )


def check_model(collection: Collection, model: str) -> None:
    recorded = (collection.metadata or {}).get(MODEL_KEY)
    if recorded != model:
        raise StoreError(
            f"Collection '{collection.name}' holds vectors of the embedding model "
            f"'{recorded or 'unknown'}', but this run embeds with '{model}'. Vectors of two "
            "models cannot be compared. Leave COLLECTION_NAME empty to get one collection per "
            "model, pick another COLLECTION_NAME, or rebuild this one with "
            "`python -m app.ingest --rebuild`."
        )


def check_dimension(collection: Collection, dimension: int) -> None:
    recorded = (collection.metadata or {}).get(DIMENSION_KEY)
    if recorded is not None and recorded != dimension:
        raise StoreError(
            f"Collection '{collection.name}' holds {recorded}-dimensional vectors, but the "
            f"embedding model now returns {dimension}. Rebuild it with "
            "`python -m app.ingest --rebuild`, or pick another COLLECTION_NAME."
        )


def iter_pages(
    collection: Collection, include: list[str], where: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """The whole collection (or what `where` selects), READ_PAGE records per request."""
    offset = 0
    while True:
        page: Any = collection.get(
            include=include,  # type: ignore[arg-type]
            where=where,
            limit=READ_PAGE,
            offset=offset,
        )
        yield page
        if len(page["ids"]) < READ_PAGE:
            return
        offset += len(page["ids"])


def iter_metadatas(
    collection: Collection, where: dict[str, Any] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (id, metadata) in the collection, or those `where` selects."""
    for page in iter_pages(collection, ["metadatas"], where):
        metadatas = page["metadatas"] or [{}] * len(page["ids"])
        for chunk_id, metadata in zip(page["ids"], metadatas, strict=True):
            yield chunk_id, dict(metadata or {})


def ids_where(collection: Collection, where: dict[str, Any]) -> list[str]:
    return [i for page in iter_pages(collection, [], where) for i in page["ids"]]


def make_store_dir(settings: Settings) -> Path:
    """CHROMA_DIR, created private (0700): it holds the text of every document ingested."""
    settings.chroma_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings.chroma_dir


def store_key(settings: Settings) -> str:
    """A file-name-safe name for the store: `local`, or the server's host and port."""
    target = (
        f"server-{settings.chroma_host}-{settings.chroma_port}" if settings.chroma_host else "local"
    )
    return re.sub(r"[^A-Za-z0-9.-]", "_", target)


@contextmanager
def writer_lock(settings: Settings, *, wait: float = 0) -> Iterator[None]:
    """One writer per store. Chroma is thread-safe, not process-safe: two ingests into one
    persistent directory can corrupt it. The OS drops the lock if the holder dies.

    It also guards the keyword index beside the store: whoever writes one writes the other."""
    from filelock import FileLock, Timeout

    lock_path = make_store_dir(settings) / f"ingest-{store_key(settings)}.lock"
    owner_path = lock_path.with_suffix(".owner.json")
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise StoreBusy(
            f"Another ingest is writing to {describe_store(settings)} "
            f"({_describe_owner(owner_path)}). Wait for it to finish; chat keeps working meanwhile."
        ) from None
    try:
        owner_path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.now().isoformat(timespec="seconds"),
                    "command": _command_line(),
                }
            )
        )
        yield
    finally:
        owner_path.unlink(missing_ok=True)
        lock.release()


def _command_line() -> str:
    """How this process was started, as typed: `python -m app.ingest docs`, not the path of
    the module file that sys.argv[0] holds under -m."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def _describe_owner(owner_path: Path) -> str:
    try:
        owner = json.loads(owner_path.read_text())
    except (OSError, ValueError):
        return "holder unknown"
    return (
        f"held by process {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}: "
        f"`{owner.get('command')}`"
    )
