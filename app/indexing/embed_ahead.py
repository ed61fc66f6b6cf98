"""Embedding in step with everything else: one background thread embeds batches in the order
they come, while the sync goes on parsing, splitting and writing in its own thread. Models run
outside the GIL (onnxruntime, llama.cpp, an HTTP request to Ollama), so on a CPU the two overlap
instead of taking turns.

Every write stays in the sync's thread, in order: a batch is written only after every batch
before it. At most `limit` chunks are embedded ahead of the writes, which bounds the embedding
work a killed run loses.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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


class EmbedAhead(Generic[T]):
    def __init__(
        self, embed: Embed, limit: int, span_attributes: dict[str, Any] | None = None
    ) -> None:
        self._embed = embed
        self._limit = limit
        self._span_attributes = span_attributes or {}
        self._batches = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._queue: deque[tuple[list[Document], T, Future[list[list[float]]]]] = deque()
        self._cancelled = threading.Event()
        self.seconds_embedding = 0.0  # the model at work, in the background thread
        self.seconds_waited = 0.0  # the sync's thread idle, waiting for the model

    @property
    def chunks_ahead(self) -> int:
        return sum(len(chunks) for chunks, _, _ in self._queue)

    def submit(self, chunks: Sequence[Document], tag: T) -> list[Embedded[T]]:
        """Queue a batch; returns the batches to write now to stay within `limit` (waiting
        for them when needed)."""
        batch = list(chunks)
        # The batch's "embed" span is a child of the submitter's span, in the model's thread.
        future = self._pool.submit(
            self._run, [c.page_content for c in batch], tracing.current_context(), self._batches
        )
        self._batches += 1
        self._queue.append((batch, tag, future))
        due = []
        while self.chunks_ahead > self._limit:
            due.append(self._pop())
        return due

    def ready(self) -> Iterator[Embedded[T]]:
        """The batches already embedded, in order, without waiting."""
        while self._queue and self._queue[0][2].done():
            yield self._pop()

    def drain(self) -> Iterator[Embedded[T]]:
        """Every queued batch, in order, waiting for each."""
        while self._queue:
            yield self._pop()

    def close(self) -> None:
        """Stop: batches not started are dropped, the one running is waited for."""
        self._cancelled.set()
        for _, _, future in self._queue:
            future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True)

    def _pop(self) -> Embedded[T]:
        chunks, tag, future = self._queue[0]
        started = time.perf_counter()
        vectors = future.result()  # the model's own error is raised here, in order
        self.seconds_waited += time.perf_counter() - started
        self._queue.popleft()
        return Embedded(chunks, vectors, tag)

    def _run(self, texts: list[str], parent: Context, number: int) -> list[list[float]]:
        # After a failure nothing more is sent: its error is raised when its batch is popped,
        # and a model server that timed out is not asked again (later batches are dropped).
        if self._cancelled.is_set():
            return []
        started = time.perf_counter()
        try:
            with tracing.span(
                "embed",
                parent=parent,
                localrag_batch=number,
                localrag_chunks=len(texts),
                localrag_characters=sum(map(len, texts)),
                **self._span_attributes,
            ):
                return self._embed(texts)
        except BaseException:
            self._cancelled.set()
            raise
        finally:
            self.seconds_embedding += time.perf_counter() - started
