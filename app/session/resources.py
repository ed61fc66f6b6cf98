"""What every conversation shares, opened once: the embedding model, the store, the library and
its collection, the keyword index and the chat model. `follow_library` keeps them equal to the
library as it is now, whoever wrote it; `app.chat`, `app.serve`, `app.mcp` and `app.eval` call
it before every question."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.config import Settings
from app.console import status
from app.errors import ConfigError, StoreBusy, StoreError
from app.indexing.sync import ingest_first_run
from app.models import registry
from app.store import open_store
from app.store.keyword_index import KeywordIndex, open_keyword_index
from app.store.library import Library, find_library
from app.store.lock import writer_lock

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from app.models.embeddings import ModelEmbeddings
    from app.models.registry import ChatCapabilities
    from app.store.base import ChunkCollection, ChunkStore


def open_embeddings(settings: Settings) -> ModelEmbeddings:
    """The embedding model the settings choose, with a status line saying which and why."""
    embeddings, reason = registry.build_embeddings(settings, status)
    status(f"Embeddings: {embeddings.info.key}" + (f" ({reason})" if reason else ""))
    return embeddings


def open_chat_model(settings: Settings) -> tuple[BaseChatModel, ChatCapabilities]:
    model, capabilities, reason = registry.build_chat_model(settings, status)
    status(f"Chat model: {capabilities.key}" + (f" ({reason})" if reason else ""))
    return model, capabilities


def prepare_for_questions(settings: Settings, embeddings: ModelEmbeddings) -> None:
    """What the first question would otherwise wait for, made now (once, then cached): the
    query model, and the chat model's prepared weights when it runs in-process."""
    embeddings.prepare_queries()
    registry.prepare_chat(settings, status)


@dataclass
class Resources:
    settings: Settings
    embeddings: ModelEmbeddings
    store: ChunkStore
    library: Library
    collection: ChunkCollection
    keyword_index: KeywordIndex
    model: BaseChatModel
    capabilities: ChatCapabilities
    # One llama.cpp context must never run two calls at once (it aborts the interpreter).
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    follow_lock: threading.Lock = field(default_factory=threading.Lock)
    generation_seen: int = -1

    def follow_library(self, *, after_failure: bool = False) -> bool:
        """Before each question: see every write made since the last one, by any process (an
        ingest, `--watch`, `--remove`, `--rebuild`), so no answer cites a chunk that is gone.
        Costs one `stat` of the store's file and one read of the library record when nothing
        changed (docs/serving.md has the figures). True when anything changed: chains built
        over the old collection must be built again."""
        with self.follow_lock:
            changed = self.store.refresh(force=after_failure)
            self.library.reload()
            record = self.library.record
            changed |= record.generation != self.generation_seen
            self.generation_seen = record.generation
            if changed or record.active != self.collection.name:
                collection = self.library.collection()
                if collection is None:
                    raise StoreError(
                        f"The library '{self.library.name}' holds no documents any more at "
                        f"{self.store.location}. Add a folder with `python -m app.ingest PATH`."
                    )
                changed = True
                if collection.name != self.collection.name:
                    status(f"The library was rebuilt: answering from {collection.name} now.")
                    self.keyword_index.close()
                    self.keyword_index = current_keyword_index(self, collection)
                self.collection = collection
            if self.keyword_index.behind(record):
                catch_up_keyword_index(self, quiet=True)
            return changed

    def close(self) -> None:
        self.keyword_index.close()
        self.store.close()


def open_resources(settings: Settings) -> Resources:
    """Wire embeddings, the library's collection, keyword index and chat model. On a first run
    (no library in the store at all) the sample documents are ingested first.

    The chat model loads in a thread while the library, the keyword index and the query model
    open here (llama.cpp and onnxruntime release the GIL while they load)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-model") as loader:
        chat_model = loader.submit(open_chat_model, settings)
        embeddings = open_embeddings(settings)
        store = open_store(settings)
        # The chat model is checked before a first ingest, so a missing one fails in seconds.
        library, collection = open_library(settings, store, embeddings, chat_model.result)
        embeddings.prepare_queries()
        model, capabilities = chat_model.result()
    keyword_index = open_keyword_index(settings, store, collection)
    resources = Resources(
        settings, embeddings, store, library, collection, keyword_index, model, capabilities
    )
    if keyword_index.behind(library.record):
        catch_up_keyword_index(resources)
    return resources


def open_library(
    settings: Settings,
    store: ChunkStore,
    embeddings: ModelEmbeddings,
    before_ingest: Callable[[], object] = lambda: None,
) -> tuple[Library, ChunkCollection]:
    """The library for this embedding model and the collection it points at; `before_ingest`
    runs before a first run's ingest."""
    model = embeddings.info.key
    advice = registry.advice(settings)
    library = find_library(store, settings, model, advice=advice)
    if library is None:
        before_ingest()
        status(f"No library yet: ingesting the sample documents in {settings.docs_dir} first.")
        report = ingest_first_run(settings, embeddings)
        if report is not None:
            status(
                f"Ingested {len(report.new) + len(report.changed)} files "
                f"({report.chunks_added} chunks); {len(report.failed)} skipped."
            )
        store.refresh()
        library = find_library(store, settings, model, advice=advice)
        if library is None:
            raise ConfigError(f"Nothing could be ingested from {settings.docs_dir}.")
    collection = library.collection()
    if not library.sources:
        raise ConfigError(
            f"The library '{library.name}' has no sources (all were removed). Add a folder with "
            "`python -m app.ingest PATH`."
        )
    if collection is None:
        raise ConfigError(
            f"The library '{library.name}' holds no documents yet"
            + (" (an ingest is building it)" if library.record.building else "")
            + ". Add a folder with `python -m app.ingest PATH`."
        )
    return library, collection


def current_keyword_index(resources: Resources, collection: ChunkCollection) -> KeywordIndex:
    index = open_keyword_index(resources.settings, resources.store, collection)
    resources.keyword_index = index
    if index.behind(resources.library.record):
        catch_up_keyword_index(resources)
    return index


def catch_up_keyword_index(resources: Resources, *, quiet: bool = False) -> int:
    """The keyword index of the collection. The ingest keeps it in step; one that is behind
    (an ingest on another machine, in server mode; a killed ingest) catches up on the sources
    that changed, under the writer lock, so two readers never both write it. Never waits: a
    chat stays responsive while an ingest holds the lock. Returns the sources caught up."""
    settings, library, index = resources.settings, resources.library, resources.keyword_index
    try:
        with writer_lock(settings, resources.store, machine_only=True):
            library.reload()
            collection = library.collection()
            if collection is None or index.collection_name != collection.name:
                return 0
            count = index.catch_up(collection, library.record)
            if count and not quiet:
                status(f"Keyword index: caught up on {count} changed sources.")
            return count
    except StoreBusy:
        if not quiet:
            status("The library is being written: keyword search catches up as it is.")
        return 0
