"""The Chroma collection: embedded or server, one per embedding model, guarded against mixing."""

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
from app.embeddings import EmbeddingModelInfo, ModelEmbeddings
from app.errors import StoreError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from langchain_chroma import Chroma

MODEL_KEY = "embedding_model"
DIMENSION_KEY = "embedding_dimension"
READ_PAGE = 5000  # metadata rows fetched per request when reading the whole collection


def collection_name(settings: Settings, info: EmbeddingModelInfo) -> str:
    """One collection per model by default, so switching models starts a fresh one."""
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
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
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


def open_collection(
    client: ClientAPI, settings: Settings, info: EmbeddingModelInfo
) -> Collection | None:
    """The existing collection for this model, or None; refuses one made by another model."""
    from chromadb.errors import NotFoundError

    name = collection_name(settings, info)
    try:
        collection = client.get_collection(name)
    except NotFoundError:
        return None
    except ValueError as exc:  # older clients say "does not exist" with a ValueError
        if "does not exist" in str(exc):
            return None
        raise
    check_model(collection, info)
    return collection


def drop_collection(client: ClientAPI, settings: Settings, info: EmbeddingModelInfo) -> None:
    """Delete this model's collection, whoever made it (`--rebuild`); no error if it is absent."""
    from chromadb.errors import NotFoundError

    try:
        client.delete_collection(collection_name(settings, info))
    except NotFoundError:
        pass
    except ValueError as exc:  # older clients say "does not exist" with a ValueError
        if "does not exist" not in str(exc):
            raise


def create_collection(
    client: ClientAPI, settings: Settings, info: EmbeddingModelInfo, dimension: int
) -> Collection:
    return client.create_collection(
        collection_name(settings, info),
        metadata={MODEL_KEY: info.key, DIMENSION_KEY: dimension, "created_by": "localrag"},
        # Cosine, said explicitly: Chroma's default is L2, and relevance scores depend on it.
        configuration={"hnsw": {"space": "cosine"}},
        embedding_function=None,
    )


def check_model(collection: Collection, info: EmbeddingModelInfo) -> None:
    recorded = (collection.metadata or {}).get(MODEL_KEY)
    if recorded != info.key:
        raise StoreError(
            f"Collection '{collection.name}' holds vectors of the embedding model "
            f"'{recorded or 'unknown'}', but this run embeds with '{info.key}'. Vectors of two "
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


def iter_pages(collection: Collection, include: list[str]) -> Iterator[dict[str, Any]]:
    """The whole collection, READ_PAGE records per request."""
    offset = 0
    while True:
        page: Any = collection.get(include=include, limit=READ_PAGE, offset=offset)  # type: ignore[arg-type]
        yield page
        if len(page["ids"]) < READ_PAGE:
            return
        offset += len(page["ids"])


def iter_metadatas(collection: Collection) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (id, metadata) in the collection."""
    for page in iter_pages(collection, ["metadatas"]):
        metadatas = page["metadatas"] or [{}] * len(page["ids"])
        for chunk_id, metadata in zip(page["ids"], metadatas, strict=True):
            yield chunk_id, dict(metadata or {})


def as_langchain_store(
    client: ClientAPI, settings: Settings, embeddings: ModelEmbeddings
) -> Chroma:
    from langchain_chroma import Chroma

    return Chroma(
        client=client,
        collection_name=collection_name(settings, embeddings.info),
        embedding_function=embeddings,
        create_collection_if_not_exists=False,
    )


@contextmanager
def writer_lock(settings: Settings) -> Iterator[None]:
    """One writer per store. Chroma is thread-safe, not process-safe: two ingests into one
    persistent directory can corrupt it. The OS drops the lock if the holder dies."""
    from filelock import FileLock, Timeout

    target = (
        f"server-{settings.chroma_host}-{settings.chroma_port}" if settings.chroma_host else "local"
    )
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    lock_path = settings.chroma_dir / f"ingest-{re.sub(r'[^A-Za-z0-9.-]', '_', target)}.lock"
    owner_path = lock_path.with_suffix(".owner.json")
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise StoreError(
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
