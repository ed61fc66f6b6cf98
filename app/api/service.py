"""What the HTTP API does, apart from HTTP: answer one request with its own conversation, as a
stream of typed events (`app/api/events.py`), taking turns on the chat model (`app/api/gate.py`).
Routes translate these events into SSE; tests call this module directly too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from app.api.errors import AnswerFailed, RequestRejected
from app.api.events import (
    CompletedAnswer,
    Event,
    Finished,
    Question,
    Queued,
    Replaced,
    Sources,
    Token,
    Usage,
    source_refs,
)
from app.api.gate import GenerationGate
from app.api.validation import unencodable
from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError, StoreError
from app.indexing.progress import read_snapshot
from app.retrieval.filters import SourceFilter
from app.session.conversation import Conversation, chain_spec, trace_answer, trace_event
from app.session.failures import explain_failure
from app.session.resources import Resources
from app.store.catalog import Status
from app.store.library import describe_files, summarize_library
from app.telemetry import tracing
from chains.core.events import AnswerReplaced, AnswerText, Retrieved, Searched, aanswer_events
from chains.core.output_safety import SafeStream, allowed_hosts
from chains.core.registry import ChainSpec, all_chains

log = logging.getLogger("localrag.serve")

FOLLOW_SECONDS = 1.0  # how often the server looks at the library between questions

Role = Literal["user", "assistant"]


# --- What comes in --------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True)
class AnswerRequest:
    """One question with the conversation before it; chain None means the server's default.
    `instructions`: what the client's own system messages say (Open WebUI and others put their
    settings there); the chain places them below its own system prompt, whose rules win."""

    question: str
    history: list[Turn] = field(default_factory=list)
    chain: str | None = None
    where: list[str] = field(default_factory=list)
    instructions: str = ""


# --- The service ----------------------------------------------------------------------------


class PreparedAnswer:
    """A checked request holding its place in the gate. Iterate `events()` once, then (or if
    it never runs) `release()`."""

    def __init__(
        self, service: AnswerService, session: Conversation, request: AnswerRequest
    ) -> None:
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
        gate = self.service.gate
        root = self.session.question_span(self.request.question, "serve")
        waited: tracing.Span | None = None
        try:
            async for ahead in self.ticket.places():  # only while it waits; again as it moves up
                if waited is None:
                    waited = tracing.start("wait for turn", parent=root, localrag_ahead=ahead)
                yield Queued(ahead, math.ceil(gate.expected_start(ahead)))
            if waited is not None:
                waited.end()
            async with self.ticket.turn():
                async for event in self._answer(root):
                    yield event
        finally:
            if waited is not None and waited.is_recording():  # stopped while waiting
                waited.end()
            root.end()

    async def _answer(self, root: tracing.Span) -> AsyncIterator[Event]:
        session, request = self.session, self.request
        usage = UsageMetadataCallbackHandler()
        safe: SafeStream | None = None
        context: list[Document] = []
        text = ""
        try:
            # The library as it is now, whoever wrote it; reading it is off the event loop.
            await asyncio.to_thread(self.service.follow_library, session)
            assert session.chain is not None
            inputs: dict[str, Any] = {"question": request.question, "history": session.history}
            if request.instructions:
                inputs["instructions"] = request.instructions
            stream = session.chain.astream(
                inputs,
                config={"callbacks": [usage], "run_name": f"serve:{session.spec.name}"},
            )
            async for event in aanswer_events(tracing.ain_span(root, stream)):
                trace_event(root, event)
                if isinstance(event, Searched):
                    yield Question(event.question)
                elif isinstance(event, Retrieved):
                    context = list(event.documents)
                    safe = SafeStream(allowed_hosts(context))
                    yield Sources(source_refs(context), event.not_found)
                elif isinstance(event, AnswerText) and safe is not None:
                    piece = safe.feed(event.text)
                    if piece:
                        text += piece
                        yield Token(piece)
                elif isinstance(event, AnswerReplaced):
                    safe = SafeStream(allowed_hosts(context))
                    text = safe.feed(event.text) + safe.close()
                    safe = None
                    yield Replaced(text, event.reason)
            if safe is not None:
                piece = safe.close()
                if piece:
                    text += piece
                    yield Token(piece)
        except Exception as exc:  # cancellation (a client gone) is a BaseException: not here
            tracing.record_failure(root, exc)
            raise self.service.explain(exc) from exc
        finally:
            trace_answer(root, text)
        yield Finished(text, _total_usage(usage))

    async def collect(self) -> CompletedAnswer:
        sources = Sources([], True)
        replaced: str | None = None
        async for event in self.events():
            if isinstance(event, Sources):
                sources = event
            elif isinstance(event, Replaced):
                replaced = event.reason
            elif isinstance(event, Finished):
                return CompletedAnswer(event.answer, sources, event.usage, replaced)
        raise AnswerFailed(500, "The answer ended without finishing; see the server log.")


class AnswerService:
    """Owns what every request shares (models, store, keyword index: opened once) and gives
    each request its own chain, history and filters."""

    def __init__(self, resources: Resources, settings: Settings, default_chain: str) -> None:
        self.resources = resources
        self.settings = settings
        self.default_spec = chain_spec(default_chain)
        # llama.cpp runs in-process and is not thread-safe: one answer at a time, and all of
        # the event loop's thread work on one thread (see `use_loop`).
        self.serial = resources.capabilities.serialized
        slots = 1 if self.serial else settings.serve_concurrency
        self.gate = GenerationGate(slots, settings.serve_queue_size)
        self.store_failed = False  # the next request opens the store again first
        self.follower: LibraryFollower | None = None

    def start_following(self, interval: float = FOLLOW_SECONDS) -> None:
        """Between questions too: see `LibraryFollower`."""
        if self.follower is None:
            self.follower = LibraryFollower(self.resources, interval)
            self.follower.start()

    def follow_library(self, session: Conversation) -> None:
        """Before each answer: every write since the last one, by any process, is seen (after a
        store failure the store is opened again); the request's chain is built over it."""
        failed, self.store_failed = self.store_failed, False
        session.failed = failed
        session.follow_library()

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
        return self.default_spec.name

    def health(self) -> dict[str, Any]:
        r = self.resources
        r.follow_library()
        return {
            "status": "ok",
            "chat_model": r.capabilities.key,
            "embedding_model": r.embeddings.info.key,
            "store": {
                "location": r.store.location,
                "collection": r.collection.name,
                "chunks": r.collection.count(),
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

    def files(
        self, sources: list[str] | None, statuses: list[Status] | None, limit: int, offset: int
    ) -> dict[str, Any]:
        """The file catalog as `python -m app.ingest --files --json` prints it, a page of it:
        `total` files match, `files` holds those from `offset`, at most `limit`."""
        r = self.resources
        r.follow_library()
        labels = [s.label for s in r.library.sources]
        for name in sources or []:
            if name.split("/", 1)[0] not in labels:
                raise RequestRejected(
                    404,
                    f"{name} is not in the library: its names start with a source's label "
                    f"({', '.join(labels) or 'none'}).",
                    "source",
                )
        listing = describe_files(self.settings, r.library, sources or None, statuses)
        listing["total"] = len(listing["files"])
        listing["offset"], listing["limit"] = offset, limit
        listing["files"] = listing["files"][offset : offset + limit]
        return listing

    def library(self, limit: int, offset: int) -> dict[str, Any]:
        """The library's sources with their files per status, OCR totals, a page of the
        skipped and failed files, and `sync`: the running sync's progress (any process's), or
        None."""
        r = self.resources
        # A library emptied or being rebuilt: its record (just reread) still shows it.
        with contextlib.suppress(StoreError):
            r.follow_library()
        summary = summarize_library(self.settings, r.library, limit, offset)
        summary["sync"] = read_snapshot(self.settings, r.library.store.key)
        return summary

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
        # Per request: the heavy parts (models, store) are shared, the conversation is not.
        session = Conversation(
            self.resources, spec, filters, history=list(_messages(request.history))
        )
        return PreparedAnswer(self, session, request)

    def _chain(self, name: str | None) -> ChainSpec:
        if name is None:
            return self.default_spec
        try:
            return chain_spec(name)
        except ConfigError as exc:
            raise RequestRejected(404, str(exc), "model") from None

    def _check_limits(self, request: AnswerRequest) -> None:
        s = self.settings
        texts = [("question", request.question), ("instructions", request.instructions)]
        texts += [(f"history[{i}].content", turn.content) for i, turn in enumerate(request.history)]
        texts += [(f"where[{i}]", text) for i, text in enumerate(request.where)]
        for name, text in texts:
            problem = unencodable(text)
            if problem:
                raise RequestRejected(422, f"{name} {problem}.", name)
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
        if len(request.instructions) > s.serve_max_history_chars:
            raise RequestRejected(
                413,
                f"The system messages have {len(request.instructions):,} characters; this server "
                f"takes at most {s.serve_max_history_chars:,} (SERVE_MAX_HISTORY_CHARS).",
                "instructions",
            )

    def explain(self, exc: Exception) -> AnswerFailed:
        """A failure mid-answer as one message a person can act on, with an HTTP status."""
        if not isinstance(exc, LocalragError):
            # The chat's own mapping: model server, prompt refused, store lost or rebuilt.
            r = self.resources
            exc = explain_failure(exc, self.settings, r.store, r.capabilities.provider) or exc
        if isinstance(exc, ProviderError):
            return AnswerFailed(502, str(exc))
        if isinstance(exc, StoreError):
            self.store_failed = True  # the next request opens the store again first
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
        if self.follower is not None:
            self.follower.stop()
        self.resources.close()


class LibraryFollower:
    """Looks at the library every `interval` seconds between questions, as each question does
    (`Resources.follow_library`), and after a write by any process loads the new state at once:
    the reopened client's vector index loads on its first search, which at 50,000 chunks takes
    ~1.7 s (docs/serving.md, "How the server follows writes"), so this first search is made
    here, not by the next person's question. A thread of its own: never the event loop's
    executor, where the embedded model runs its steps."""

    def __init__(self, resources: Resources, interval: float) -> None:
        self.resources = resources
        self.interval = interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="library-follower", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                if self.resources.follow_library():
                    self.warm()
            except Exception as exc:  # the next question meets it and says what to do
                log.debug("following the library: %s", exc)

    def warm(self) -> None:
        collection = self.resources.collection
        dimension = collection.dimension
        if dimension:
            collection.search([1.0] + [0.0] * (dimension - 1), 1)


def _messages(history: list[Turn]) -> Iterator[BaseMessage]:
    for turn in history:
        yield HumanMessage(turn.content) if turn.role == "user" else AIMessage(turn.content)


def _total_usage(handler: UsageMetadataCallbackHandler) -> Usage:
    """Token counts summed over the model's calls (rewrite and answer), as the model reports
    them; zeros when it was not called (a "not found" answer without history)."""
    prompt = completion = 0
    for usage in handler.usage_metadata.values():
        prompt += usage.get("input_tokens", 0)
        completion += usage.get("output_tokens", 0)
    return Usage(prompt, completion)
