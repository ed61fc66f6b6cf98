"""The one wiring of the question path: settings -> embeddings, store, keyword index, chat model,
retriever and chain. `app.chat`, `app.eval` and `app.serve` all open a session here, and answer
through `Session.answer`, which turns whatever fails during one question into one message
(`explain_failure`) and leaves the session ready for the next."""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from app.cli import chat_model_for, embeddings_for, status
from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError, StoreError
from app.keyword_index import KeywordIndex, open_keyword_index
from app.providers import explain_ollama_failure
from app.retrieval import DocumentRetriever, SourceFilter, allowed_sources
from app.sync import sync_collection
from app.vectorstore import collection_name, connect, describe_store, open_collection
from chains.budget import BudgetError
from chains.registry import ChainSpec, get_chain

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from langchain_core.language_models import BaseChatModel

    from app.chat_model import ChatModelInfo
    from app.embeddings import ModelEmbeddings


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
        """Open the collection again: after `ingest --rebuild`, a store server restart, or a
        failure. The keyword index catches up with it."""
        collection = open_collection(connect(self.settings), self.settings, self.embeddings.info)
        if collection is None:
            raise StoreError(
                f"The collection '{collection_name(self.settings, self.embeddings.info)}' is "
                f"gone from {describe_store(self.settings)}. Build it again with "
                "`python -m app.ingest`; this session picks it up at the next question."
            )
        self.collection = collection
        self.keyword_index.follow(collection)
        self.rebuild()
        self.stale = False

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
    """Wire embeddings, store, keyword index, chat model and chain; ingest samples if empty."""
    spec = chain_spec(chain_name)
    embeddings = embeddings_for(settings)
    # The chat model is checked before a first ingest, so a missing one fails in seconds.
    model, model_info = chat_model_for(settings)
    client = connect(settings)
    collection = open_collection(client, settings, embeddings.info)
    if collection is None or collection.count() == 0:
        status(f"The collection is empty: ingesting {settings.docs_dir} first.")
        report = sync_collection(settings, [settings.docs_dir], embeddings)
        status(
            f"Ingested {len(report.new) + len(report.changed)} files "
            f"({report.chunks_added} chunks); {len(report.failed)} skipped."
        )
        collection = open_collection(client, settings, embeddings.info)
        if collection is None:
            raise ConfigError(f"Nothing could be ingested from {settings.docs_dir}.")
    keyword_index = open_keyword_index(settings.chroma_dir, collection.name)
    keyword_index.follow(collection)
    session = Session(
        settings, embeddings, collection, keyword_index, model, model_info, spec, filters
    )
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


def chain_spec(name: str) -> ChainSpec:
    """The named chain, or a ConfigError listing the ones there are."""
    try:
        return get_chain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
