"""The answer stream: the typed events a chain's answer becomes, and the one adapter that reads
any chain's stream into them. The terminal chat, the server and the evaluation consume only
these events, so a chain of another shape works everywhere once it streams them.

A chain may stream the events themselves, or the dicts LCEL builds with
`RunnablePassthrough.assign` (what `answering_chain` does): `standalone_question`, `context`
(a list of Documents), `answer` (text, token by token) and `replaced` (an `AnswerReplaced`:
the support check withdrew the answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document


@dataclass(frozen=True)
class Searched:
    """What retrieval searched for: the question, or a follow-up rewritten to stand alone."""

    question: str


@dataclass(frozen=True)
class Retrieved:
    """The chunks the answer is based on, best first. Chunks the retriever marked
    `below_threshold` are only the nearest: nothing relevant was found."""

    documents: tuple[Document, ...]

    @property
    def not_found(self) -> bool:
        return is_not_found(self.documents)


@dataclass(frozen=True)
class AnswerText:
    """The next piece of the answer, as the model wrote it (not yet made safe to show)."""

    text: str


@dataclass(frozen=True)
class AnswerReplaced:
    """The answer so far is withdrawn and `text` stands instead, with the reason to show: the
    answer check found facts the sources do not hold."""

    text: str
    reason: str


AnswerEvent = Searched | Retrieved | AnswerText | AnswerReplaced
EVENT_TYPES = (Searched, Retrieved, AnswerText, AnswerReplaced)


def is_not_found(documents: Iterable[Document]) -> bool:
    """No chunk, or only chunks below the relevance threshold: the documents lack the answer."""
    documents = list(documents)
    return not documents or all(d.metadata.get("below_threshold") for d in documents)


def events_of(chunk: Any) -> Iterator[AnswerEvent]:
    """The events in one item of a chain's stream."""
    if isinstance(chunk, EVENT_TYPES):
        yield chunk
        return
    if not isinstance(chunk, dict):
        raise TypeError(
            f"A chain streamed {type(chunk).__name__}; stream answer events "
            "(chains.core.events) or dicts with standalone_question, context and answer."
        )
    if "standalone_question" in chunk:
        yield Searched(str(chunk["standalone_question"]))
    if "context" in chunk:
        yield Retrieved(tuple(chunk["context"]))
    if chunk.get("answer"):
        yield AnswerText(str(chunk["answer"]))
    if isinstance(chunk.get("replaced"), AnswerReplaced):
        yield chunk["replaced"]


def answer_events(stream: Iterable[Any]) -> Iterator[AnswerEvent]:
    """A chain's `stream(...)` as answer events."""
    for chunk in stream:
        yield from events_of(chunk)


async def aanswer_events(stream: AsyncIterable[Any]) -> AsyncIterator[AnswerEvent]:
    """A chain's `astream(...)` as answer events."""
    async for chunk in stream:
        for event in events_of(chunk):
            yield event


@dataclass
class CollectedAnswer:
    """A whole answer, read from its events: what the evaluation and non-streaming clients use."""

    searched: str = ""
    documents: tuple[Document, ...] = ()
    text: str = ""
    replaced_reason: str | None = None

    def add(self, event: AnswerEvent) -> None:
        if isinstance(event, Searched):
            self.searched = event.question
        elif isinstance(event, Retrieved):
            self.documents = event.documents
        elif isinstance(event, AnswerText):
            self.text += event.text
        elif isinstance(event, AnswerReplaced):
            self.text, self.replaced_reason = event.text, event.reason

    @property
    def not_found(self) -> bool:
        return is_not_found(self.documents)


def collect(events: Iterable[AnswerEvent]) -> CollectedAnswer:
    answer = CollectedAnswer()
    for event in events:
        answer.add(event)
    return answer
