"""Embedding in step with everything else: one background thread embeds batches in the order
they come, while the sync goes on parsing, splitting and writing in its own thread. Models run
outside the GIL (onnxruntime, llama.cpp, an HTTP request to Ollama), so on a CPU the two overlap
instead of taking turns.

With `request_size`, the model's requests are cut from the stream of submitted chunks rather
than one per submitted batch: each holds `request_size` texts (fewer only when the writes wait
for them or the sync has nothing more to give), so a model server gets as many requests as a
direct call would send, however the sync's flushes fall. The model never waits for a
request while one can be formed: the next is sent as soon as the previous answers.

Every write stays in the sync's thread, in order: a batch is written only after every batch
before it (a batch whose chunks went in two requests is handed over in two parts, so a run that
fails keeps every vector the model gave). At most `limit` chunks are embedded ahead of the
writes, which bounds the embedding work a killed run loses.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from langchain_core.documents import Document
from opentelemetry.context import Context

from app.telemetry import tracing

T = TypeVar("T")
Embed = Callable[[list[str]], list[list[float]]]


@dataclass
class Embedded(Generic[T]):
    chunks: list[Document]
    vectors: list[list[float]]
    tag: T  # what the caller gave with the batch (the files it belongs to)


@dataclass
class _Batch(Generic[T]):
    """A submitted batch: its vectors arrive from one or more requests."""

    chunks: list[Document]
    tag: T
    context: Context
    vectors: list[list[float]] = field(default_factory=list)
    requested: int = 0  # chunks sent to the model so far
    written: int = 0  # chunks handed to the writes so far
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or len(self.vectors) == len(self.chunks)

    @property
    def writable(self) -> bool:
        """Vectors not yet handed to the writes, or the error to raise."""
        return len(self.vectors) > self.written or self.error is not None


class EmbedAhead(Generic[T]):
    def __init__(
        self,
        embed: Embed,
        limit: int,
        span_attributes: dict[str, Any] | None = None,
        request_size: int | None = None,
    ) -> None:
        self._embed = embed
        self._limit = limit
        self._request_size = request_size  # None: one request per submitted batch
        self._span_attributes = span_attributes or {}
        self._requests = 0
        self._cond = threading.Condition()
        self._queue: deque[_Batch[T]] = deque()  # not yet handed to the writes
        self._unsent: deque[_Batch[T]] = deque()  # with chunks not yet sent to the model
        self._writes_waiting = False
        self._no_more_soon = False  # drain(): send what there is, without waiting for more
        self._closed = False
        self._model_busy = False
        self._thread = threading.Thread(target=self._work, name="embed", daemon=True)
        self._thread.start()
        self.seconds_embedding = 0.0  # the model at work, in the background thread
        self.seconds_waited = 0.0  # the sync's thread idle, waiting for the model

    @property
    def chunks_ahead(self) -> int:
        return sum(len(batch.chunks) - batch.written for batch in self._queue)

    @property
    def idle(self) -> bool:
        """True when the model waits for chunks: the sync should hand it what it has."""
        with self._cond:
            return not self._model_busy and not self._can_send()

    def submit(self, chunks: Sequence[Document], tag: T) -> list[Embedded[T]]:
        """Queue a batch; returns the batches to write now to stay within `limit` (waiting
        for them when needed)."""
        # The batch's "embed" span is a child of the submitter's span, in the model's thread.
        batch = _Batch(list(chunks), tag, tracing.current_context())
        with self._cond:
            self._queue.append(batch)
            if batch.chunks:
                self._unsent.append(batch)
            self._no_more_soon = False
            self._cond.notify_all()
        due = []
        while self.chunks_ahead > self._limit:
            due.append(self._pop())
        return due

    def ready(self) -> Iterator[Embedded[T]]:
        """The batches already embedded, in order, without waiting; a batch the model answered
        in parts (it spanned two requests) comes in parts, each with the batch's tag."""
        while self._queue and self._queue[0].writable:
            yield self._pop()

    def drain(self) -> Iterator[Embedded[T]]:
        """Every queued batch, in order, waiting for each."""
        with self._cond:
            self._no_more_soon = True
            self._cond.notify_all()
        while self._queue:
            yield self._pop()

    def close(self) -> None:
        """Stop: chunks not yet sent are dropped, the request running is waited for."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._unsent.clear()
            self._cond.notify_all()
        self._thread.join()

    def _pop(self) -> Embedded[T]:
        """The first batch's vectors not yet written (waiting for some), in order."""
        with self._cond:
            batch = self._queue[0]
            if not batch.writable:
                started = time.perf_counter()
                self._writes_waiting = True
                self._cond.notify_all()
                while not batch.writable:
                    self._cond.wait()
                self._writes_waiting = False
                self.seconds_waited += time.perf_counter() - started
            start, end = batch.written, len(batch.vectors)
            if start == end:
                assert batch.error is not None
                raise batch.error  # the model's own error, in order
            batch.written = end
            if end == len(batch.chunks):
                self._queue.popleft()
            return Embedded(batch.chunks[start:end], batch.vectors[start:end], batch.tag)

    def _can_send(self) -> bool:
        if not self._unsent:
            return False
        if self._request_size is None or self._writes_waiting or self._no_more_soon:
            return True
        unsent = sum(len(b.chunks) - b.requested for b in self._unsent)
        return unsent >= self._request_size

    def _next_request(self) -> list[tuple[_Batch[T], int, int]]:
        """The chunks of the next request: (batch, start, end) in order."""
        if self._request_size is None:
            batch = self._unsent.popleft()
            batch.requested = len(batch.chunks)
            return [(batch, 0, batch.requested)]
        parts: list[tuple[_Batch[T], int, int]] = []
        room = self._request_size
        while self._unsent and room:
            batch = self._unsent[0]
            end = min(len(batch.chunks), batch.requested + room)
            parts.append((batch, batch.requested, end))
            room -= end - batch.requested
            batch.requested = end
            if end == len(batch.chunks):
                self._unsent.popleft()
        return parts

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._can_send():
                    self._cond.wait()
                if self._closed:
                    return
                parts = self._next_request()
                self._model_busy = True
                number = self._requests
                self._requests += 1
            texts = [c.page_content for b, start, end in parts for c in b.chunks[start:end]]
            started = time.perf_counter()
            try:
                vectors = self._run(texts, parts[0][0].context, number)
            except BaseException as exc:
                # After a failure nothing more is sent: its error is raised when its batch is
                # written, and a model server that timed out is not asked again.
                with self._cond:
                    for batch, _, _ in parts:
                        batch.error = exc
                    for batch in self._unsent:
                        batch.error = exc
                    self._unsent.clear()
                    self._model_busy = False
                    self._closed = True
                    self._cond.notify_all()
                return
            finally:
                self.seconds_embedding += time.perf_counter() - started
            with self._cond:
                offset = 0
                for batch, start, end in parts:
                    batch.vectors.extend(vectors[offset : offset + end - start])
                    offset += end - start
                self._model_busy = False
                self._cond.notify_all()

    def _run(self, texts: list[str], parent: Context, number: int) -> list[list[float]]:
        with tracing.span(
            "embed",
            parent=parent,
            localrag_batch=number,
            localrag_chunks=len(texts),
            localrag_characters=sum(map(len, texts)),
            **self._span_attributes,
        ):
            return self._embed(texts)
