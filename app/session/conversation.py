"""One conversation: its chain, filters and history, over the shared `Resources`. `answer`
streams one question's answer as typed events (`chains.core.events`), and turns whatever fails
into one message (`explain_failure`), leaving the conversation ready for the next question."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from app.console import status
from app.errors import ConfigError, StoreError
from app.retrieval.filters import SourceFilter, allowed_sources
from app.retrieval.retriever import DocumentRetriever
from app.session.failures import explain_failure
from app.session.resources import Resources
from app.telemetry import tracing
from chains.core.answering import model_identity
from chains.core.budget import BudgetError
from chains.core.events import AnswerEvent, AnswerReplaced, AnswerText, Retrieved, answer_events
from chains.core.registry import ChainSpec, get_chain


@dataclass
class Conversation:
    """A conversation's own state; the chain is rebuilt when the chain or the filters change."""

    resources: Resources
    spec: ChainSpec
    filters: list[SourceFilter] = field(default_factory=list)
    history: list[BaseMessage] = field(default_factory=list)
    last_context: list[Document] = field(default_factory=list)
    chain: Runnable | None = None
    worker: threading.Thread | None = None
    failed: bool = False  # the store failed: open it again before the next question

    def retriever(self) -> DocumentRetriever:
        r = self.resources
        s, wanted = r.settings, self.spec.retrieval
        k = s.retrieval_k or wanted.get("k") or r.capabilities.default_k
        return DocumentRetriever(
            collection=r.collection,
            embeddings=r.embeddings,
            keyword_index=r.keyword_index,
            mode=s.retrieval_mode or wanted.get("mode", "similarity"),
            k=k,
            fetch_k=s.fetch_k or wanted.get("fetch_k") or 5 * k,
            score_threshold=(
                s.score_threshold
                if s.score_threshold is not None
                else r.embeddings.info.default_threshold
            ),
            # The library's file list only when a filter needs it: 0.85 s at 1M files.
            allowed_sources=(
                allowed_sources(self.filters, r.keyword_index.sources()) if self.filters else None
            ),
            model_scripts=r.embeddings.info.scripts,
            keyword_threshold=s.keyword_threshold,
        )

    def rebuild(self) -> None:
        """Build the chain for the current chain, filters and collection."""
        r = self.resources
        # A server that does not report its window: the capabilities know it.
        settings = r.settings
        if settings.chat_context_tokens is None:
            settings = settings.model_copy(
                update={"chat_context_tokens": r.capabilities.context_window}
            )
        if settings.answer_mode == "auto":  # the model knows whether its answers hold up
            settings = settings.model_copy(update={"answer_mode": r.capabilities.answering})
        try:
            self.chain = self.spec.build(settings, self.retriever(), r.model)
        except BudgetError as exc:  # an unknown or too small context window: a setting to fix
            raise ConfigError(str(exc)) from None

    def use_chain(self, name: str) -> None:
        self.spec = chain_spec(name)
        self.rebuild()

    def use_filters(self, filters: list[SourceFilter]) -> None:
        self.filters = filters
        self.rebuild()

    def follow_library(self) -> None:
        """The library as it is now (see `Resources.follow_library`), and the chain over it."""
        changed = self.resources.follow_library(after_failure=self.failed)
        self.failed = False
        if changed or self.chain is None:
            self.rebuild()

    def remember(self, question: str, answer: str) -> None:
        self.history += [HumanMessage(question), AIMessage(answer)]

    def answer(self, question: str) -> Iterator[AnswerEvent]:
        """The answer to one question, with the conversation so far, as events. Whatever fails
        arrives as one LocalragError; after a store failure the store is opened again before the
        next question. Closing the iterator early (Ctrl-C, a client that left) stops the chain at
        its next step without waiting for it."""
        self.follow_library()
        assert self.chain is not None
        chain, inputs = self.chain, {"question": question, "history": list(self.history)}
        items: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        resources = self.resources
        serial: AbstractContextManager[Any] = (
            resources.model_lock if resources.capabilities.serialized else nullcontext()
        )

        root = self.question_span(question, "chat")

        def work() -> None:
            said: list[str] = []  # the answer as it stands, for the root span (capture on)
            try:
                with serial:
                    if stop.is_set():
                        return
                    config: RunnableConfig = {"callbacks": [_StopModel(stop)]}
                    stream = tracing.in_span(root, chain.stream(inputs, config))
                    for event in answer_events(stream):
                        if stop.is_set():
                            tracing.record(root, localrag_stopped=True)
                            return
                        trace_event(root, event)
                        if isinstance(event, AnswerText):
                            said.append(event.text)
                        elif isinstance(event, AnswerReplaced):
                            said[:] = [event.text]
                        items.put(event)
            except BaseException as exc:
                tracing.record_failure(root, exc)
                items.put(_Failure(exc))
            finally:
                trace_answer(root, "".join(said))
                root.end()
                items.put(_DONE)

        if resources.model_lock.locked():
            status("Waiting for the model to finish the step it was on when you stopped it.")
        # The chain runs in a worker thread so that the caller can stop waiting at once.
        self.worker = threading.Thread(target=work, name="answer", daemon=True)
        self.worker.start()
        try:
            while (item := items.get()) is not _DONE:
                if isinstance(item, _Failure):
                    raise self._explained(item.exc) from item.exc
                if isinstance(item, Retrieved):
                    self.last_context = list(item.documents)
                yield item
        finally:
            stop.set()

    def question_span(self, question: str, entry_point: str) -> tracing.Span:
        """The root span of one question (not current: the chain's steps run inside it through
        `tracing.in_span`); the caller ends it."""
        r = self.resources
        model_name, provider = model_identity(r.model)
        model_names: dict[str, Any] = {
            "gen_ai.request.model": model_name,
            "gen_ai.provider.name": provider,
        }
        root = tracing.start(
            "question",
            localrag_entry_point=entry_point,
            localrag_chain=self.spec.name,
            localrag_history_messages=len(self.history),
            localrag_filters=len(self.filters),
            localrag_answer_mode=r.settings.answer_mode,
            localrag_chat_provider=r.capabilities.provider,
            **tracing.span_kind("CHAIN"),
            **model_names,
        )
        if tracing.capture_content():
            tracing.record(root, **{"input.value": question})
        return root

    def _explained(self, exc: BaseException) -> BaseException:
        r = self.resources
        explained = explain_failure(exc, r.settings, r.store, r.capabilities.provider)
        if isinstance(explained, StoreError):
            self.failed = True
        return explained or exc

    def close(self) -> None:
        """Let an in-process model finish a stopped answer's step before the interpreter exits."""
        if self.worker is not None and self.resources.capabilities.serialized:
            self.worker.join()


def trace_event(root: tracing.Span, event: AnswerEvent) -> None:
    """What the question's root span says about its answer, from the typed events."""
    if not root.is_recording():
        return
    if isinstance(event, Retrieved):
        tracing.record(
            root,
            localrag_not_found=event.not_found,
            localrag_chunk_ids=[str(d.id) for d in event.documents],
        )
    elif isinstance(event, AnswerReplaced):
        tracing.record(root, localrag_replaced=event.reason)


def trace_answer(root: tracing.Span, answer: str) -> None:
    """The answer as the root span's output, when capture is on (Phoenix lists it by trace)."""
    if root.is_recording() and tracing.capture_content():
        tracing.record(root, **{"output.value": answer})


def start_conversation(
    resources: Resources, chain_name: str, filters: list[SourceFilter] | None = None
) -> Conversation:
    conversation = Conversation(resources, chain_spec(chain_name), list(filters or []))
    conversation.rebuild()
    return conversation


def chain_spec(name: str) -> ChainSpec:
    """The named chain, or a ConfigError listing the ones there are."""
    try:
        return get_chain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


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
