"""What the HTTP API does, apart from HTTP: answer one request with its own chain state, as a
stream of typed events, taking turns on the chat model. Routes translate these events into SSE;
tests call this module directly too."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError, StoreError
from app.retrieval.retriever import SourceFilter
from app.session.conversation import Session, explain_failure
from app.store.chroma import describe_store
from chains.core.answering import is_not_found
from chains.core.context import number_sources
from chains.core.output_safety import SafeStream, allowed_hosts
from chains.core.registry import ChainSpec, all_chains, get_chain

log = logging.getLogger("localrag.serve")

Role = Literal["user", "assistant"]


# --- What comes in --------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True)
class AnswerRequest:
    """One question with the conversation before it; chain None means the server's default."""

    question: str
    history: list[Turn] = field(default_factory=list)
    chain: str | None = None
    where: list[str] = field(default_factory=list)


class RequestRejected(Exception):
    """The request cannot be answered as sent (4xx); `param` names the field to fix."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class Busy(RequestRejected):
    """Every turn is taken and the queue is full (503); `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(503, message)
        self.retry_after = retry_after


class AnswerFailed(Exception):
    """The answer broke off: a model server or the store failed; the message says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- What goes out --------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRef:
    number: int
    file: str
    page: int | None
    score: float | None  # best cosine relevance among the source's chunks

    @property
    def label(self) -> str:
        return self.file + (f" (page {self.page})" if self.page is not None else "")

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "file": self.file, "page": self.page, "score": self.score}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class Queued:
    ahead: int  # requests waiting before this one


@dataclass(frozen=True)
class Question:
    standalone: str  # the question as retrieval saw it (a follow-up rewritten)


@dataclass(frozen=True)
class Sources:
    sources: list[SourceRef]
    not_found: bool  # nothing reached the relevance threshold: these are only the nearest


@dataclass(frozen=True)
class Token:
    text: str  # already sanitized


@dataclass(frozen=True)
class Finished:
    answer: str
    usage: Usage | None  # None: the model reported no token counts (or was not asked)


Event = Queued | Question | Sources | Token | Finished


@dataclass(frozen=True)
class CompletedAnswer:
    answer: str
    sources: Sources
    usage: Usage | None


def source_refs(context: list[Document]) -> list[SourceRef]:
    refs = []
    for src in number_sources(context):
        scores = [
            d.metadata["score"] for d in src.chunks if isinstance(d.metadata.get("score"), float)
        ]
        refs.append(SourceRef(src.number, src.source, src.page, max(scores) if scores else None))
    return refs


# --- Taking turns on the model --------------------------------------------------------------


class GenerationGate:
    """At most `slots` answers run at once and `queue` more wait; past that, `Busy`.

    The embedded llama.cpp model gets one slot: one context is not thread-safe (concurrent calls
    abort the interpreter). Lives on the event loop: admission and release are plain counters.
    """

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self.admitted = 0
        self.running = 0
        self._turns = asyncio.Semaphore(slots)
        self._seconds_per_answer = 5.0  # a first guess, then a moving average of real answers

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def admit(self) -> Ticket:
        if self.admitted >= self.slots + self.queue:
            raise Busy(
                f"The server is busy: {self.running} answer(s) running and {self.waiting} "
                f"waiting, the most it takes (SERVE_CONCURRENCY={self.slots}, "
                f"SERVE_QUEUE_SIZE={self.queue}). Try again in a few seconds.",
                retry_after=self.retry_after(),
            )
        self.admitted += 1
        return Ticket(self)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, at the recent pace."""
        rounds = (self.waiting + 1) / self.slots
        return max(1, min(300, math.ceil(rounds * self._seconds_per_answer)))

    def _took(self, seconds: float) -> None:
        self._seconds_per_answer = 0.8 * self._seconds_per_answer + 0.2 * seconds

    def status(self) -> dict[str, int]:
        return {
            "slots": self.slots,
            "queue": self.queue,
            "running": self.running,
            "waiting": self.waiting,
        }


class Ticket:
    """A place in the gate: `turn()` waits for a slot; `release()` gives the place back (once)."""

    def __init__(self, gate: GenerationGate) -> None:
        self.gate = gate
        self.released = False

    def must_wait(self) -> bool:
        return self.gate._turns.locked()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self.gate._turns:
            self.gate.running += 1
            started = time.monotonic()
            try:
                yield
            finally:
                self.gate.running -= 1
                self.gate._took(time.monotonic() - started)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.admitted -= 1


# --- The service ----------------------------------------------------------------------------


class PreparedAnswer:
    """A checked request holding its place in the gate. Iterate `events()` once, then (or if
    it never runs) `release()`."""

    def __init__(self, service: AnswerService, session: Session, request: AnswerRequest) -> None:
        self.service = service
        self.session = session
        self.request = request
        self.ticket = service.gate.admit()

    @property
    def chain_name(self) -> str:
        return self.session.spec.name

    def release(self) -> None:
        self.ticket.release()

    async def events(self) -> AsyncIterator[Event]:
        if self.ticket.must_wait():
            yield Queued(self.service.gate.waiting - 1)
        async with self.ticket.turn():
            async for event in self._answer():
                yield event

    async def _answer(self) -> AsyncIterator[Event]:
        session, request = self.session, self.request
        usage = UsageMetadataCallbackHandler()
        safe: SafeStream | None = None
        text = ""
        try:
            await self.service.fresh_store()
            session.collection = self.service.base.collection
            # Building the retriever reads the keyword index's file list: off the event loop.
            await asyncio.to_thread(session.rebuild)
            assert session.chain is not None
            stream = session.chain.astream(
                {"question": request.question, "history": session.history},
                config={"callbacks": [usage], "run_name": f"serve:{session.spec.name}"},
            )
            async for chunk in stream:
                if "standalone_question" in chunk:
                    yield Question(str(chunk["standalone_question"]))
                if "context" in chunk:
                    context: list[Document] = chunk["context"]
                    safe = SafeStream(allowed_hosts(context))
                    yield Sources(source_refs(context), is_not_found(context))
                if chunk.get("answer") and safe is not None:
                    piece = safe.feed(chunk["answer"])
                    if piece:
                        text += piece
                        yield Token(piece)
            if safe is not None:
                piece = safe.close()
                if piece:
                    text += piece
                    yield Token(piece)
        except Exception as exc:  # cancellation (a client gone) is a BaseException: not here
            raise self.service.explain(exc) from exc
        yield Finished(text, _total_usage(usage))

    async def collect(self) -> CompletedAnswer:
        sources = Sources([], True)
        async for event in self.events():
            if isinstance(event, Sources):
                sources = event
            elif isinstance(event, Finished):
                return CompletedAnswer(event.answer, sources, event.usage)
        raise AnswerFailed(500, "The answer ended without finishing; see the server log.")


class AnswerService:
    """Owns what every request shares (models, store, keyword index: opened once) and gives
    each request its own chain, history and filters."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.base = session
        self.settings = settings
        # llama.cpp runs in-process and is not thread-safe: one answer at a time, and all of
        # the event loop's thread work on one thread (see `use_loop`).
        self.serial = session.model_info.provider == "local"
        slots = 1 if self.serial else settings.serve_concurrency
        self.gate = GenerationGate(slots, settings.serve_queue_size)
        self._reopening = asyncio.Lock()

    async def fresh_store(self) -> None:
        """After a store failure (rebuilt by `ingest --rebuild`, a Chroma server restarted),
        the first request to come opens it again; if that fails too, its error says why."""
        if not self.base.stale:
            return
        async with self._reopening:
            if self.base.stale:
                await asyncio.to_thread(self.base.reopen_store)

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call once on the server's event loop. For the embedded model, the loop's default
        executor, where LangChain runs a sync-only model step by step, gets a single thread.
        Cancelling an answer cannot stop a step already running in a thread; with one thread,
        the next answer's first step still runs only after it, and after the abandoned
        generation has been closed there, so two generations never overlap."""
        if self.serial:
            loop.set_default_executor(ThreadPoolExecutor(1, thread_name_prefix="localrag-model"))

    # -- reading

    def chains(self) -> list[ChainSpec]:
        return list(all_chains().values())

    @property
    def default_chain(self) -> str:
        return self.base.spec.name

    def health(self) -> dict[str, Any]:
        info = self.base.model_info
        return {
            "status": "ok",
            "chat_model": f"{info.provider}/{info.name}",
            "embedding_model": self.base.embeddings.info.key,
            "store": {
                "location": describe_store(self.settings),
                "collection": self.base.collection.name,
                "chunks": self.base.collection.count(),
            },
            "chains": [spec.name for spec in self.chains()],
            "default_chain": self.default_chain,
            "generation": self.gate.status(),
            "limits": {
                "question_chars": self.settings.serve_max_question_chars,
                "history_messages": self.settings.serve_max_history_messages,
                "history_chars": self.settings.serve_max_history_chars,
            },
        }

    # -- answering

    def prepare(self, request: AnswerRequest) -> PreparedAnswer:
        """Check the request against the limits, pick its chain and filters, take a place in
        the gate. Raises RequestRejected (or Busy) before anything is streamed."""
        self._check_limits(request)
        spec = self._chain(request.chain)
        filters = []
        for index, text in enumerate(request.where):
            try:
                filters.append(SourceFilter.parse(text))
            except ValueError as exc:
                raise RequestRejected(422, str(exc), f"where[{index}]") from None
        # A `--rebuild` may have switched the library's collection since the last request.
        if not self.base.stale:
            try:
                self.base.follow_library()
            except StoreError:
                self.base.stale = True  # this request fails on the store; the next reopens it
        # A copy per request: the heavy parts (models, store) are shared, the state is not.
        session = dataclasses.replace(
            self.base,
            spec=spec,
            filters=filters,
            history=list(_messages(request.history)),
            last_context=[],
            chain=None,
        )
        return PreparedAnswer(self, session, request)

    def _chain(self, name: str | None) -> ChainSpec:
        if name is None:
            return self.base.spec
        try:
            return get_chain(name)
        except ValueError as exc:
            raise RequestRejected(404, str(exc), "model") from None

    def _check_limits(self, request: AnswerRequest) -> None:
        s = self.settings
        if not request.question.strip():
            raise RequestRejected(422, "The question is empty.", "question")
        if len(request.question) > s.serve_max_question_chars:
            raise RequestRejected(
                413,
                f"The question has {len(request.question):,} characters; this server takes "
                f"at most {s.serve_max_question_chars:,} (SERVE_MAX_QUESTION_CHARS).",
                "question",
            )
        if len(request.history) > s.serve_max_history_messages:
            raise RequestRejected(
                413,
                f"The conversation has {len(request.history)} earlier messages; this server "
                f"takes at most {s.serve_max_history_messages} (SERVE_MAX_HISTORY_MESSAGES). "
                "Send only the latest ones, or start a new conversation.",
                "history",
            )
        total = sum(len(turn.content) for turn in request.history)
        if total > s.serve_max_history_chars:
            raise RequestRejected(
                413,
                f"The earlier messages have {total:,} characters in all; this server takes at "
                f"most {s.serve_max_history_chars:,} (SERVE_MAX_HISTORY_CHARS). Send only the "
                "latest ones, or start a new conversation.",
                "history",
            )

    def explain(self, exc: Exception) -> AnswerFailed:
        """A failure mid-answer as one message a person can act on, with an HTTP status."""
        if not isinstance(exc, LocalragError):
            # The chat's own mapping: model server, prompt refused, store lost or rebuilt.
            exc = explain_failure(exc, self.settings, self.base.model_info.provider) or exc
        if isinstance(exc, ProviderError):
            return AnswerFailed(502, str(exc))
        if isinstance(exc, StoreError):
            self.base.stale = True  # the next request opens the store again first
            return AnswerFailed(503, str(exc))
        if isinstance(exc, ConfigError):
            return AnswerFailed(400, str(exc))
        if isinstance(exc, LocalragError):
            return AnswerFailed(500, str(exc))
        log.exception("answer failed", exc_info=exc)
        return AnswerFailed(
            500, f"The server failed to answer ({type(exc).__name__}); its log has the details."
        )

    def close(self) -> None:
        self.base.keyword_index.close()


def _messages(history: list[Turn]) -> Iterator[BaseMessage]:
    for turn in history:
        yield HumanMessage(turn.content) if turn.role == "user" else AIMessage(turn.content)


def _total_usage(handler: UsageMetadataCallbackHandler) -> Usage | None:
    """Token counts summed over the model's calls (rewrite and answer); None rather than zeros
    when the model reports none."""
    if not handler.usage_metadata:
        return None
    prompt = completion = 0
    for usage in handler.usage_metadata.values():
        prompt += usage.get("input_tokens", 0)
        completion += usage.get("output_tokens", 0)
    return Usage(prompt, completion)
