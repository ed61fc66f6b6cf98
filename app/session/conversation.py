"""The one wiring of the question path: settings -> embeddings, store, keyword index, chat model,
retriever and chain. `app.chat`, `app.eval` and `app.serve` all open a session here, and answer
through `Session.answer`, which turns whatever fails during one question into one message
(`explain_failure`) and leaves the session ready for the next."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from app.config import Settings
from app.console import chat_model_for, embeddings_for, status
from app.errors import ConfigError, LocalragError, ProviderError, StoreBusy, StoreError
from app.indexing.sync import ingest_first_run
from app.models.providers import explain_ollama_failure
from app.retrieval.retriever import DocumentRetriever, SourceFilter, allowed_sources
from app.store.chroma import collection_name, connect, describe_store, store_errors, writer_lock
from app.store.keyword_index import KeywordIndex, open_keyword_index
from app.store.library import Library, find_library
from chains.core.budget import BudgetError
from chains.core.registry import ChainSpec, get_chain

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from langchain_core.language_models import BaseChatModel

    from app.models.chat_model import ChatModelInfo
    from app.models.embeddings import ModelEmbeddings


@dataclass
class Session:
    """Everything a conversation needs; the chain is rebuilt when the chain or filter changes."""

    settings: Settings
    embeddings: ModelEmbeddings
    collection: Collection
    keyword_index: KeywordIndex
    model: BaseChatModel
    model_info: ChatModelInfo
    spec: ChainSpec
    filters: list[SourceFilter] = field(default_factory=list)
    history: list[BaseMessage] = field(default_factory=list)
    last_context: list[Document] = field(default_factory=list)
    chain: Runnable | None = None
    stale: bool = False  # the store failed: open it again before the next question
    # One llama.cpp context must never run two calls at once (it aborts the interpreter): an
    # answer stopped with Ctrl-C finishes its current step before the next question starts.
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    worker: threading.Thread | None = None
    library: Library | None = None  # None only for sessions made by hand (tests)

    def retriever(self) -> DocumentRetriever:
        s, wanted = self.settings, self.spec.retrieval
        k = s.retrieval_k or wanted.get("k") or self.model_info.default_k
        sources = allowed_sources(self.filters, self.keyword_index.sources())
        return DocumentRetriever(
            collection=self.collection,
            embeddings=self.embeddings,
            keyword_index=self.keyword_index,
            mode=s.retrieval_mode or wanted.get("mode", "similarity"),
            k=k,
            fetch_k=s.fetch_k or wanted.get("fetch_k") or 5 * k,
            score_threshold=(
                s.score_threshold
                if s.score_threshold is not None
                else self.embeddings.info.default_threshold
            ),
            allowed_sources=sources,
            model_scripts=self.embeddings.info.scripts,
            keyword_threshold=s.keyword_threshold,
        )

    def answer(self, question: str) -> Iterator[dict[str, Any]]:
        """The chain's stream for one question ({"standalone_question"}, {"context"}, then
        {"answer": token}...), with the conversation so far. Whatever fails arrives as one
        LocalragError (see `explain_failure`); after a store failure the store is opened again
        before the next question. Closing the iterator early (Ctrl-C, a client that left) stops
        the chain at its next step without waiting for it."""
        if self.stale:
            self.reopen_store()
        else:
            self.follow_library()
        assert self.chain is not None
        chain, inputs = self.chain, {"question": question, "history": list(self.history)}
        chunks: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        serial: AbstractContextManager[Any] = (
            self.model_lock if self.model_info.provider == "local" else nullcontext()
        )

        def work() -> None:
            try:
                with serial:
                    if stop.is_set():
                        return
                    config: RunnableConfig = {"callbacks": [_StopModel(stop)]}
                    for chunk in chain.stream(inputs, config):
                        if stop.is_set():
                            return
                        chunks.put(chunk)
            except BaseException as exc:
                chunks.put(_Failure(exc))
            finally:
                chunks.put(_DONE)

        if self.model_lock.locked():
            status("Waiting for the model to finish the step it was on when you stopped it.")
        # The chain runs in a worker thread so that the caller can stop waiting at once.
        self.worker = threading.Thread(target=work, name="answer", daemon=True)
        self.worker.start()
        try:
            while (item := chunks.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise self._explained(item.exc) from item.exc
                yield item
        finally:
            stop.set()

    def _explained(self, exc: BaseException) -> BaseException:
        explained = explain_failure(exc, self.settings, self.model_info.provider)
        if isinstance(explained, StoreError):
            self.stale = True
        return explained or exc

    def reopen_store(self) -> None:
        """Open the library's collection again, after a failure (a store server restart, a
        collection deleted under the session). The keyword index catches up with it."""
        with store_errors(self.settings):
            library = find_library(connect(self.settings), self.settings, self.embeddings.info)
            collection = library.collection() if library is not None else None
        if library is None or collection is None:
            name = collection_name(self.settings, self.embeddings.info)
            raise StoreError(
                f"The library '{name}' is gone from {describe_store(self.settings)}. "
                "Build it again with `python -m app.ingest`; "
                "this session picks it up at the next question."
            )
        self.library = library
        self._use(collection)
        self.stale = False

    def follow_library(self) -> None:
        """Before each question: after a `--rebuild` switched collections, answer from the new
        one; catch the keyword index up if an ingest elsewhere changed the library. One small
        read of the library record when nothing changed."""
        library = self.library
        if library is None:
            return
        with store_errors(self.settings):
            library.reload()
            if library.record.active != self.collection.name:
                collection = library.collection()
                if collection is not None:
                    self._use(collection)
                    status(f"The library was rebuilt: answering from {collection.name} now.")
            elif self.keyword_index.behind(library.record):
                catch_up_keyword_index(self.settings, library, self.keyword_index, quiet=True)

    def _use(self, collection: Collection) -> None:
        assert self.library is not None
        if collection.name != self.collection.name:
            self.keyword_index.close()
            self.keyword_index = current_keyword_index(self.settings, self.library, collection)
        else:
            catch_up_keyword_index(self.settings, self.library, self.keyword_index, quiet=True)
        self.collection = collection
        self.rebuild()

    def close(self) -> None:
        """Let an in-process model finish a stopped answer's step before the interpreter exits."""
        if self.worker is not None and self.model_info.provider == "local":
            self.worker.join()

    def rebuild(self) -> None:
        try:
            self.chain = self.spec.build(self.settings, self.retriever(), self.model)
        except BudgetError as exc:  # an unknown or too small context window: a setting to fix
            raise ConfigError(str(exc)) from None


def open_session(settings: Settings, chain_name: str, filters: list[SourceFilter]) -> Session:
    """Wire embeddings, the library's collection, keyword index, chat model and chain. On a
    first run (no library in the store at all) the sample documents are ingested first.

    The chat model loads in a thread while the library, the keyword index and the query model
    open here (llama.cpp and onnxruntime release the GIL while they load)."""
    spec = chain_spec(chain_name)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-model") as loader:
        chat_model = loader.submit(chat_model_for, settings)
        embeddings = embeddings_for(settings)
        # The chat model is checked before a first ingest, so a missing one fails in seconds.
        library, collection = open_library(settings, embeddings, before_ingest=chat_model.result)
        keyword_index = current_keyword_index(settings, library, collection)
        embeddings.prepare_queries()
        model, model_info = chat_model.result()
    session = Session(
        settings, embeddings, collection, keyword_index, model, model_info, spec, filters
    )
    session.library = library
    session.rebuild()
    return session


class AnswerStopped(Exception):
    """Raised inside the model's stream once the answer was stopped, so generation ends."""


class _StopModel(BaseCallbackHandler):
    """Ends a stopped answer inside the model: at its next token, or before its next call.
    Closing the chain's stream is not enough: LangChain drains a closed stream's input for
    tracing, so the model would write its whole answer anyway."""

    raise_error = True

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        if self.stop.is_set():
            raise AnswerStopped

    def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        if self.stop.is_set():
            raise AnswerStopped


class _QuietStop(logging.Filter):
    """LangChain logs a warning for every exception a callback raises, even one it is told to
    raise: a stopped answer would print "Error in _StopModel..." into the conversation."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "AnswerStopped" not in record.getMessage()


logging.getLogger("langchain_core.callbacks.manager").addFilter(_QuietStop())


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def explain_failure(
    exc: BaseException, settings: Settings, chat_provider: str = "ollama"
) -> LocalragError | None:
    """One message a person can act on for what can fail while one question is answered: the
    model server down, slow or without the model, the prompt refused, the store unreachable or
    rebuilt under the session. None for anything else (a bug, shown as it is)."""
    import httpx
    from chromadb.errors import ChromaError, NotFoundError

    if isinstance(exc, LocalragError):
        return exc
    if isinstance(exc, BudgetError):
        return ConfigError(str(exc))
    store = describe_store(settings)
    if isinstance(exc, NotFoundError):
        return StoreError(
            f"The collection was rebuilt or deleted while this session had it open ({store}). "
            "It is opened again for your next question; if it was deleted, run "
            "`python -m app.ingest` first."
        )
    if isinstance(exc, httpx.TransportError) and _is_store_request(exc, settings):
        return StoreError(
            f"Lost the connection to the vector store at {store} ({type(exc).__name__}). "
            "Start it again: the next question reconnects."
        )
    if isinstance(exc, ChromaError | sqlite3.Error):
        return StoreError(
            f"The vector store at {store} failed: {exc}. The next question opens it again."
        )
    if isinstance(exc, ValueError) and "exceed context window" in str(exc):  # llama.cpp
        return ProviderError(
            f"The embedded chat model refused the prompt: {exc}. Lower RETRIEVAL_K or "
            "MAX_ANSWER_TOKENS, or raise LOCAL_CHAT_CONTEXT."
        )
    if chat_provider == "ollama":
        return explain_ollama_failure(exc, settings, "chat")
    return None


def _is_store_request(exc: BaseException, settings: Settings) -> bool:
    """Whether an httpx error came from talking to the Chroma server (not to Ollama)."""
    if not settings.chroma_host:
        return False
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is set
        return False
    return (url.host, url.port) == (settings.chroma_host, settings.chroma_port)


def open_library(
    settings: Settings,
    embeddings: ModelEmbeddings,
    before_ingest: Callable[[], object] = lambda: None,
) -> tuple[Library, Collection]:
    """The library for this embedding model and the collection it points at; `before_ingest`
    runs before a first run's ingest."""
    with store_errors(settings):
        client = connect(settings)
        library = find_library(client, settings, embeddings.info)
        if library is None:
            before_ingest()
            status(f"No library yet: ingesting the sample documents in {settings.docs_dir} first.")
            report = ingest_first_run(settings, embeddings)
            if report is not None:
                status(
                    f"Ingested {len(report.new) + len(report.changed)} files "
                    f"({report.chunks_added} chunks); {len(report.failed)} skipped."
                )
            library = find_library(client, settings, embeddings.info)
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


def current_keyword_index(
    settings: Settings, library: Library, collection: Collection
) -> KeywordIndex:
    """The keyword index of the collection. The ingest keeps it in step; one that is behind
    (an ingest on another machine, in server mode; a killed ingest) catches up on the sources
    that changed, under the writer lock, so two chats never both write it."""
    index = open_keyword_index(settings, collection)
    if index.behind(library.record):
        catch_up_keyword_index(settings, library, index)
    return index


def catch_up_keyword_index(
    settings: Settings, library: Library, index: KeywordIndex, *, quiet: bool = False
) -> int:
    """Catch up if no one else is writing: never wait, so a chat stays responsive while an
    ingest (which keeps the index in step itself) or another chat holds the lock. Returns the
    number of sources caught up."""
    try:
        with writer_lock(settings), store_errors(settings):
            library.reload()
            collection = library.collection()
            if collection is None or index.path.stem != collection.name:
                return 0
            count = index.catch_up(collection, library.record)
            if count and not quiet:
                status(f"Keyword index: caught up on {count} changed sources.")
            return count
    except StoreBusy:
        if not quiet:
            status("The library is being written: keyword search catches up as it is.")
        return 0


def chain_spec(name: str) -> ChainSpec:
    """The named chain, or a ConfigError listing the ones there are."""
    try:
        return get_chain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
