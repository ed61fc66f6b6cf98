"""The server's logic without a server: taking turns, OpenAI messages into a question and a
history, the sources block, error field names."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from app.api.app import _field
from app.api.errors import Busy, RequestRejected
from app.api.events import SourceRef, Sources
from app.api.gate import GenerationGate
from app.api.openai_compat import ChatCompletionRequest, answer_request, sources_block
from app.api.service import AnswerRequest, AnswerService, Turn
from app.config import Settings, load_settings
from app.errors import ConfigError
from app.models.registry import ChatCapabilities
from app.session.conversation import Conversation
from tests.fakes import FixedRetriever

pytestmark = pytest.mark.unit


def figures(gate: GenerationGate) -> dict[str, object]:
    return {k: v for k, v in gate.status().items() if k != "seconds_per_answer"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_admits_slots_plus_queue_then_says_busy_with_a_retry_hint() -> None:
    gate = GenerationGate(slots=1, queue=2)
    tickets = [gate.admit() for _ in range(3)]
    with pytest.raises(Busy) as caught:
        gate.admit()
    assert caught.value.status == 503
    assert caught.value.retry_after >= 1
    assert "SERVE_QUEUE_SIZE=2" in caught.value.message
    assert "No answer has finished yet" in caught.value.message  # a guess says it is one
    tickets[1].release()
    tickets[1].release()  # twice is once
    assert gate.admitted == 2
    gate.admit()  # the place is free again


def test_waiting_requests_are_told_their_own_place_first_come_first_served() -> None:
    gate = GenerationGate(slots=1, queue=3)
    first, *waiting = [gate.admit() for _ in range(4)]
    assert not first.must_wait()
    assert [gate.ahead_of(t) for t in waiting] == [0, 1, 2]
    waiting[1].release()  # the middle one left
    assert [gate.ahead_of(t) for t in (waiting[0], waiting[2])] == [0, 1]
    first.release()
    assert not waiting[0].must_wait()  # the next in line got the slot
    assert gate.ahead_of(waiting[2]) == 0
    assert figures(gate) == {"slots": 1, "queue": 3, "running": 1, "waiting": 1}


def test_retry_after_and_expected_waits_come_from_the_measured_pace() -> None:
    """Answers here took 10 s each; the one running started 4 s ago: the first place frees in
    6 s, and a request let in now (2 waiting before it) waits 6 + 10 + 10 s."""

    async def scenario() -> None:
        clock = Clock()
        gate = GenerationGate(slots=1, queue=2, clock=clock)
        for _ in range(3):
            ticket = gate.admit()
            async with ticket.turn():
                clock.now += 10
        assert gate.pace() == 10
        running = gate.admit()
        async with running.turn():
            clock.now += 4
            gate.admit(), gate.admit()
            assert gate.retry_after() == 6
            assert gate.expected_start(0) == 6
            assert gate.expected_start(2) == 26
            with pytest.raises(Busy) as caught:
                gate.admit()
            assert caught.value.retry_after == 6
            message = caught.value.message
            assert "try again then (Retry-After: 6)" in message  # the text says the header
            assert "about 10 s each here" in message
            assert "would wait about 26 s" in message

    asyncio.run(scenario())


def test_a_waiter_hears_each_move_of_its_place() -> None:
    async def scenario() -> list[int]:
        gate = GenerationGate(slots=1, queue=3)
        holders = [gate.admit() for _ in range(3)]
        last = gate.admit()
        heard: list[int] = []

        async def listen() -> None:
            async for ahead in last.places():
                heard.append(ahead)

        listening = asyncio.create_task(listen())
        for holder in holders:
            await asyncio.sleep(0.01)
            holder.release()
        await asyncio.wait_for(listening, 1)
        assert not last.must_wait()
        return heard

    assert asyncio.run(scenario()) == [2, 1, 0]


def test_the_gate_runs_one_at_a_time_and_the_second_waits() -> None:
    async def scenario() -> list[str]:
        gate = GenerationGate(slots=1, queue=4)
        order: list[str] = []

        async def answer(name: str) -> None:
            ticket = gate.admit()
            try:
                async with ticket.turn():
                    order.append(f"{name} starts ({gate.running} running)")
                    await asyncio.sleep(0.05)
                    order.append(f"{name} ends")
            finally:
                ticket.release()

        first = asyncio.create_task(answer("a"))
        await asyncio.sleep(0.01)
        second_ticket = gate.admit()
        assert second_ticket.must_wait()
        assert figures(gate) == {"slots": 1, "queue": 4, "running": 1, "waiting": 1}
        second_ticket.release()
        await asyncio.gather(first, answer("b"))
        assert gate.status()["running"] == gate.status()["waiting"] == 0
        return order

    assert asyncio.run(scenario()) == [
        "a starts (1 running)",
        "a ends",
        "b starts (1 running)",
        "b ends",
    ]


def test_a_waiting_request_that_is_cancelled_leaves_the_queue() -> None:
    async def scenario() -> GenerationGate:
        gate = GenerationGate(slots=1, queue=1)
        holder, waiter = gate.admit(), gate.admit()
        async with holder.turn():
            waiting = asyncio.create_task(waiter.turn().__aenter__())
            await asyncio.sleep(0.01)
            waiting.cancel()  # the client went away while queued
            await asyncio.gather(waiting, return_exceptions=True)
            waiter.release()
        holder.release()
        return gate

    gate = asyncio.run(scenario())
    assert figures(gate) == {"slots": 1, "queue": 1, "running": 0, "waiting": 0}
    assert not gate.measured or gate.pace() < 1  # only the answer that ran was measured


def request(*messages: dict[str, object]) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "rag", "messages": list(messages)})


def test_the_last_user_message_is_the_question_and_the_rest_the_history() -> None:
    block = sources_block(Sources([SourceRef(1, "a.md", None, 0.5)], not_found=False))
    answer = answer_request(
        request(
            {"role": "system", "content": "Ignore your documents."},
            {"role": "user", "content": "First?"},
            {"role": "assistant", "content": "One [1]." + block},
            {
                "role": "user",
                "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "then?"}],
            },
        )
    )
    assert answer.question == "And\nthen?"
    assert answer.history == [Turn("user", "First?"), Turn("assistant", "One [1].")]
    assert answer.chain == "rag"


def test_a_conversation_that_does_not_end_with_a_question_is_refused() -> None:
    with pytest.raises(RequestRejected) as caught:
        answer_request(
            request({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"})
        )
    assert caught.value.status == 400
    assert caught.value.param == "messages"
    with pytest.raises(RequestRejected) as image:
        answer_request(request({"role": "user", "content": [{"type": "image_url"}]}))
    assert image.value.param == "messages[0].content"


def test_the_sources_block_numbers_files_with_pages_and_says_when_only_nearest() -> None:
    found = Sources([SourceRef(1, "a.pdf", 3, 0.8), SourceRef(2, "b.md", None, None)], False)
    assert sources_block(found) == "\n\nSources:\n- [1] `a.pdf` (page 3)\n- [2] `b.md`"
    nearest = Sources([SourceRef(1, "a.pdf", None, 0.1)], True)
    assert sources_block(nearest) == "\n\nNearest sources:\n- [1] `a.pdf`"
    assert sources_block(Sources([], True)) == ""


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("![p](http:evil.example).md", "`![p](http:evil.example).md`"),
        ("<img src=x onerror=alert(1)>.md", "`<img src=x onerror=alert(1)>.md`"),
        ("a`b.md", "`` a`b.md ``"),  # a fence longer than any run of backticks inside
        ("``x", "``` ``x ```"),
        ("two\nlines [1]: http://evil.example", "`two\\nlines [1]: http://evil.example`"),
        ("\u202egnp.exe", "`\\u202egnp.exe`"),  # a bidi override shown, not obeyed
    ],
)
def test_file_names_in_the_sources_block_are_markdown_code_spans(name: str, shown: str) -> None:
    block = sources_block(Sources([SourceRef(1, name, None, 0.5)], False))
    assert block == f"\n\nSources:\n- [1] {shown}"
    assert block.count("\n") == 3  # one line per source, whatever the name holds


def test_error_locations_read_like_the_request() -> None:
    assert _field(["body", "messages", 2, "content"]) == "messages[2].content"
    assert _field(["body", "question"]) == "question"
    assert _field(["body"]) == "body"


def test_serve_settings_token_length_and_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "hunter2")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "API_TOKEN: must be at least 16 characters" in str(caught.value)
    assert "hunter2" not in str(caught.value)  # a token is never echoed
    monkeypatch.setenv("API_TOKEN", "x" * 16)
    monkeypatch.setenv("SERVE_CORS_ORIGINS", "http://a.example/, https://b.example:8443")
    settings = load_settings()
    assert settings.serve_cors_origins == ["http://a.example", "https://b.example:8443"]
    assert settings.api_token is not None
    assert "x" * 16 not in repr(settings)


@pytest.mark.parametrize(
    ("provider", "setting", "slots"), [("local", 4, 1), ("local", 3, 1), ("ollama", 4, 4)]
)
def test_the_embedded_model_answers_one_at_a_time_ollama_as_set(
    provider: str, setting: int, slots: int
) -> None:
    resources = SimpleNamespace(
        capabilities=ChatCapabilities(provider, "m", 2048, 2, serialized=provider == "local")
    )
    settings = Settings(serve_concurrency=setting, serve_queue_size=5)
    service = AnswerService(resources, settings, "rag")  # type: ignore[arg-type]
    assert figures(service.gate) == {"slots": slots, "queue": 5, "running": 0, "waiting": 0}


class SlowSyncModel(BaseChatModel):
    """Sync only, like llama.cpp: LangChain runs each step in a thread. Counts steps that
    overlap, which on a real llama.cpp context would crash the interpreter."""

    delay: float = 0.4
    pieces: int = 5
    in_flight: int = 0
    most_in_flight: int = 0
    steps: int = 0

    @property
    def _llm_type(self) -> str:
        return "slow-sync"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        text = "".join(str(c.message.content) for c in self._stream(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    def _stream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        for number in range(self.pieces):
            with STEP_LOCK:
                self.steps += 1
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            time.sleep(self.delay)
            with STEP_LOCK:
                self.in_flight -= 1
            # Plain words: the answer check replaces an answer that states a code ("w0") or
            # a number its sources do not hold.
            word = "word" + "abcdefghij"[number]
            yield ChatGenerationChunk(message=AIMessageChunk(content=f"{word} "))


STEP_LOCK = threading.Lock()


class FakeResources:
    """What a conversation shares, without a store: the library never changes, and every
    conversation's retriever returns one fixed document (see `fixed_retriever`)."""

    def __init__(self, settings: Settings, model: BaseChatModel, provider: str = "local") -> None:
        self.settings = settings
        self.model = model
        self.capabilities = ChatCapabilities(
            provider, "slow", 4096, 2, serialized=provider == "local"
        )
        self.model_lock = threading.Lock()

    def follow_library(self, *, after_failure: bool = False) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture(autouse=True)
def fixed_retriever(monkeypatch: pytest.MonkeyPatch) -> None:
    document = Document("Ferry at 07:15.", metadata={"source": "f.txt"})
    monkeypatch.setattr(
        Conversation, "retriever", lambda self: FixedRetriever(documents=[document])
    )


def embedded_service(model: BaseChatModel) -> AnswerService:
    settings = Settings(chat_context_tokens=4096)  # the fake model reports no window
    return AnswerService(FakeResources(settings, model), settings, "rag")  # type: ignore[arg-type]


def test_a_cancelled_answer_on_the_embedded_model_never_overlaps_the_next() -> None:
    """A client leaves mid-answer and the next request starts at once: its model steps must
    wait for the abandoned step still running in its thread. (Without `use_loop`'s single
    worker thread they overlap: with `delay=1.0` this test then counts 2.)"""
    model = SlowSyncModel()
    service = embedded_service(model)

    async def scenario() -> str:
        service.use_loop(asyncio.get_running_loop())
        leaving = service.prepare(AnswerRequest("When does the ferry leave?"))

        async def read_all() -> None:
            async for _ in leaving.events():
                pass

        task = asyncio.create_task(read_all())
        await asyncio.sleep(model.delay * 1.5)  # in the middle of the second step
        task.cancel()  # as Starlette does when the client disconnects
        await asyncio.gather(task, return_exceptions=True)
        leaving.release()
        staying = service.prepare(AnswerRequest("And the last one?"))
        try:
            return (await staying.collect()).answer
        finally:
            staying.release()

    answer = asyncio.run(scenario())
    assert answer.startswith("worda wordb ")
    assert model.most_in_flight == 1
    assert model.steps <= model.pieces + 3  # the one that left stopped after its current step
