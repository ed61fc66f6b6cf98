"""`Conversation.answer` and `explain_failure`, the parts of one question that any front end
shares: a stopped answer lets go at once while an in-process model never runs two calls at once,
what fails mid-conversation becomes one message of the right kind, and the typed answer events
(`chains.core.events`) are the one contract between a chain and the terminal chat, the server
and the evaluation. The conversations run over the in-memory store (`tests.fakes.MemoryStore`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from chromadb.errors import NotFoundError
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableGenerator, RunnableLambda
from pydantic import Field

import app.session.conversation
from app.api.events import Finished, Question, Replaced, Sources, Token
from app.api.service import AnswerRequest, AnswerService
from app.chat import ask
from app.config import Settings
from app.errors import ConfigError, ProviderError, StoreError
from app.evaluation import answers
from app.indexing.sync import sync_collection
from app.models.registry import ChatCapabilities
from app.retrieval.filters import SourceFilter
from app.session.conversation import Conversation, start_conversation
from app.session.failures import explain_failure
from app.session.resources import Resources
from app.store.base import ChunkStore
from app.store.chroma import ChromaStore
from app.store.keyword_index import open_keyword_index
from app.store.library import find_library
from chains.core.budget import BudgetError
from chains.core.events import (
    AnswerEvent,
    AnswerReplaced,
    AnswerText,
    Retrieved,
    Searched,
    answer_events,
)
from chains.core.registry import ChainBuilder, ChainSpec
from tests.fakes import FailingChatModel, MemoryStore, fake_embeddings

pytestmark = pytest.mark.unit

KEEPER = "The lighthouse keeper feeds the gulls at dawn."


class SlowInProcessModel(BaseChatModel):
    """Streams `tokens` words, `pause` seconds apart, and records how many calls overlap, as a
    llama.cpp context would crash if two did."""

    tokens: int = 40
    pause: float = 0.05
    running: int = 0
    most_at_once: int = 0
    produced: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "slow-in-process"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **_: Any) -> ChatResult:
        text = "".join(chunk.text for chunk in self._stream(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

    def _stream(self, messages: list[BaseMessage], stop: Any = None, **_: Any) -> Any:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        made = 0
        try:
            for i in range(self.tokens):
                time.sleep(self.pause)
                made += 1
                yield ChatGenerationChunk(message=AIMessageChunk(content=f"w{i} "))
        finally:
            self.produced.append(made)
            self.running -= 1


def resources_for(
    tmp_path: Path,
    model: BaseChatModel,
    *,
    provider: str = "local",
    serialized: bool = True,
    store: ChunkStore | None = None,
) -> Resources:
    """The shared resources over one ingested file, as `open_resources` wires them, with a
    chat model of the test's own: fake embeddings, the in-memory store, a real library record
    and keyword index."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(KEEPER)
    # Fake vectors: every chunk passes the threshold, so retrieval always finds a.txt.
    settings = Settings(docs_dir=docs, chat_context_tokens=2048, score_threshold=-1.0)
    store = store or MemoryStore()
    embeddings, _ = fake_embeddings(settings)
    sync_collection(settings, [docs], embeddings, store=store)
    library = find_library(store, settings, embeddings.info.key)
    assert library is not None
    collection = library.collection()
    assert collection is not None
    capabilities = ChatCapabilities(provider, "test", 2048, default_k=2, serialized=serialized)
    return Resources(
        settings,
        embeddings,
        store,
        library,
        collection,
        open_keyword_index(settings, store, collection),
        model,
        capabilities,
    )


def conversation_with(resources: Resources, build: ChainBuilder) -> Conversation:
    """A conversation whose chain is `build`'s (built again whenever the conversation
    rebuilds, as a chain module's would be)."""
    return Conversation(resources, ChainSpec("test", "a chain of the test's own", build))


def token_chain(model: BaseChatModel) -> Runnable:
    """The model's tokens, streamed one chunk each, as the chain streams {"answer": token}."""

    def tokens(chunks: Iterator[AIMessageChunk]) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            yield {"answer": chunk.content}

    return RunnableLambda(lambda x: x["question"]) | model | RunnableGenerator(tokens)


def texts(events: Iterator[AnswerEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, AnswerText)]


def test_a_stopped_answer_lets_go_at_once_and_the_next_waits_for_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = SlowInProcessModel()
    resources = resources_for(tmp_path, model, serialized=True)
    conversation = conversation_with(resources, lambda s, r, m: token_chain(m))
    stream = conversation.answer("first")
    assert isinstance(next(stream), AnswerText)  # the first token arrived
    started = time.perf_counter()
    stream.close()  # Ctrl-C
    assert time.perf_counter() - started < 0.5  # the caller is free at once

    second = texts(conversation.answer("second"))
    conversation.close()
    assert "".join(second).count("w") == model.tokens  # the next answer is whole
    assert model.most_at_once == 1  # never two calls in the model at once
    assert model.produced[0] < model.tokens  # the stopped one stopped early
    # and stopping it printed nothing: no "Error in _StopModel..." warning from LangChain
    assert not [r for r in caplog.records if "AnswerStopped" in r.getMessage()]


class FailingOnceStore(MemoryStore):
    """The in-memory store, whose own failure is a KeyError; it records forced refreshes."""

    def __init__(self) -> None:
        super().__init__()
        self.forced = 0

    def explain(self, exc: BaseException) -> StoreError | None:
        return StoreError("the memory store lost its chunks") if isinstance(exc, KeyError) else None

    def refresh(self, *, force: bool = False) -> bool:
        self.forced += force
        return force


def test_a_store_failure_arrives_as_one_message_and_the_store_is_opened_again(
    tmp_path: Path,
) -> None:
    calls = {"n": 0}

    def flaky(_: Any) -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("chunk-1")
        return {"answer": "fine"}

    store = FailingOnceStore()
    resources = resources_for(tmp_path, SlowInProcessModel(), store=store)
    conversation = conversation_with(resources, lambda s, r, m: RunnableLambda(flaky))
    with pytest.raises(StoreError, match="the memory store lost its chunks"):
        list(conversation.answer("q"))
    assert conversation.failed  # the store is opened again before the next question
    assert store.forced == 0
    assert list(conversation.answer("q")) == [AnswerText("fine")]
    assert store.forced == 1  # ...and it was
    assert not conversation.failed


def test_a_bug_in_the_chain_is_raised_as_it_is_and_the_store_is_not_blamed(
    tmp_path: Path,
) -> None:
    store = FailingOnceStore()
    resources = resources_for(tmp_path, SlowInProcessModel(), store=store)
    conversation = conversation_with(resources, lambda s, r, m: RunnableLambda(lambda _: 1 / 0))
    with pytest.raises(ZeroDivisionError):
        list(conversation.answer("q"))
    assert not conversation.failed


def request_error(url: str) -> httpx.ConnectError:
    return httpx.ConnectError("refused", request=httpx.Request("POST", url))


@pytest.fixture
def chroma_server_store(monkeypatch: pytest.MonkeyPatch) -> ChromaStore:
    """The Chroma store of a server at chroma.local:8000, without connecting to it (its
    failures are explained from the settings alone)."""
    monkeypatch.setattr(
        ChromaStore, "_connect", lambda self: SimpleNamespace(get_max_batch_size=lambda: 100)
    )
    return ChromaStore(Settings(chroma_host="chroma.local", chroma_port=8000))


@pytest.mark.parametrize(
    ("failure", "provider", "kind", "words"),
    [
        (
            NotFoundError("Collection [x] does not exist."),
            "ollama",
            StoreError,
            "rebuilt or deleted",
        ),
        (
            request_error("http://chroma.local:8000/api/v2/query"),
            "ollama",
            StoreError,
            "Lost the connection to the vector store at Chroma server http://chroma.local:8000",
        ),
        (
            request_error("http://127.0.0.1:11434/api/chat"),
            "ollama",
            ProviderError,
            "Ollama is not answering",
        ),
        (httpx.ReadTimeout("slow"), "ollama", ProviderError, "did not answer within"),
        (
            ValueError("Requested tokens (2100) exceed context window of 2048"),
            "local",
            ProviderError,
            "LOCAL_CHAT_CONTEXT",
        ),
        (BudgetError("Shorten the question"), "local", ConfigError, "Shorten the question"),
    ],
)
def test_failures_a_person_can_meet_become_one_message(
    chroma_server_store: ChromaStore, failure: Exception, provider: str, kind: type, words: str
) -> None:
    settings = Settings(ollama_base_url="http://127.0.0.1:11434")
    explained = explain_failure(failure, settings, chroma_server_store, provider)
    assert isinstance(explained, kind)
    assert words in str(explained)


def test_a_bug_is_not_dressed_up_as_a_user_error(chroma_server_store: ChromaStore) -> None:
    settings = Settings()
    assert explain_failure(KeyError("oops"), settings, chroma_server_store, "local") is None
    assert explain_failure(httpx.ConnectError("x"), settings, chroma_server_store, "local") is None
    # The store's failures are the store's to explain: the in-memory store knows none.
    assert explain_failure(NotFoundError("gone"), settings, MemoryStore(), "local") is None


def test_conversation_answer_runs_in_a_worker_so_the_caller_can_be_interrupted(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    resources = resources_for(tmp_path, SlowInProcessModel())
    conversation = conversation_with(
        resources,
        lambda s, r, m: RunnableLambda(
            lambda _: seen.append(threading.current_thread().name) or {"answer": "x"}
        ),
    )
    assert list(conversation.answer("q")) == [AnswerText("x")]
    assert seen == ["answer"]  # not the caller's thread


def test_start_conversation_builds_the_named_chain_over_the_library(tmp_path: Path) -> None:
    resources = resources_for(tmp_path, SlowInProcessModel())
    conversation = start_conversation(resources, "rag")
    assert conversation.spec.name == "rag"
    assert conversation.chain is not None
    with pytest.raises(ConfigError, match="Available: rag"):
        start_conversation(resources, "nope")


def test_the_librarys_file_list_is_read_only_when_a_filter_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = resources_for(tmp_path, SlowInProcessModel())
    reads: list[int] = []
    listing = resources.keyword_index.sources
    monkeypatch.setattr(resources.keyword_index, "sources", lambda: reads.append(1) or listing())
    conversation = start_conversation(resources, "rag")
    assert conversation.retriever().allowed_sources is None
    assert reads == []  # every chain build read it (0.85 s at 1,000,000 files)
    conversation.use_filters([SourceFilter.parse("type=txt")])
    assert conversation.retriever().allowed_sources == frozenset({"docs/a.txt"})
    assert reads


# --- The typed contract: a chain that streams the events themselves ---------------------------


REWRITTEN = "When does the lighthouse keeper feed the gulls?"
REASON = "the answer check found facts the sources do not hold"


def events_chain(replace: bool) -> ChainBuilder:
    """A chain of another shape than `answering_chain`: no LCEL dicts, it streams
    `chains.core.events` objects, sync and async. It searches with a rewritten question, streams
    the answer in pieces and, with `replace`, withdraws it for another."""

    def build(settings: Settings, retriever: BaseRetriever, model: BaseChatModel) -> Runnable:
        def steps(question: str) -> Iterator[AnswerEvent]:
            yield Searched(REWRITTEN)
            yield Retrieved(tuple(retriever.invoke(REWRITTEN)))
            yield AnswerText("At dawn ")
            yield AnswerText("[1].")
            if replace:
                yield AnswerReplaced("The keeper feeds them at dawn [1].", REASON)

        def events(inputs: Iterator[dict[str, Any]]) -> Iterator[AnswerEvent]:
            for item in inputs:
                yield from steps(item["question"])

        async def aevents(inputs: AsyncIterator[dict[str, Any]]) -> AsyncIterator[AnswerEvent]:
            async for item in inputs:
                for event in steps(item["question"]):
                    yield event

        return RunnableGenerator(events, aevents)

    return build


def events_spec(replace: bool) -> ChainSpec:
    return ChainSpec("events", "streams answer events", events_chain(replace))


@pytest.fixture
def events_resources(tmp_path: Path) -> Resources:
    # The chain never calls the model: a model that fails if asked.
    return resources_for(tmp_path, FailingChatModel(messages=iter([])), serialized=False)


@pytest.mark.parametrize("replace", [False, True], ids=["streamed", "replaced"])
def test_a_chain_that_streams_typed_events_answers_in_the_terminal_chat(
    events_resources: Resources, capsys: pytest.CaptureFixture[str], replace: bool
) -> None:
    conversation = Conversation(events_resources, events_spec(replace))
    ask(conversation, "When?")
    shown = capsys.readouterr().out
    final = "The keeper feeds them at dawn [1]." if replace else "At dawn [1]."
    assert "At dawn [1]." in shown  # streamed as it came
    if replace:
        assert f"[{REASON}]\nThe keeper feeds them at dawn [1]." in shown
    assert shown.rstrip().endswith("Sources:\n[1] docs/a.txt")
    assert [m.content for m in conversation.history] == ["When?", final]
    assert [d.page_content for d in conversation.last_context] == [KEEPER]


@pytest.mark.parametrize("replace", [False, True], ids=["streamed", "replaced"])
def test_a_chain_that_streams_typed_events_answers_through_the_server(
    events_resources: Resources, monkeypatch: pytest.MonkeyPatch, replace: bool
) -> None:
    spec = events_spec(replace)
    real_get_chain = app.session.conversation.get_chain
    monkeypatch.setattr(
        app.session.conversation,
        "get_chain",
        lambda name: spec if name == spec.name else real_get_chain(name),
    )
    service = AnswerService(events_resources, events_resources.settings, default_chain="rag")

    async def run() -> tuple[list[Any], Any]:
        streamed = service.prepare(AnswerRequest("When?", chain="events"))
        try:
            events = [event async for event in streamed.events()]
        finally:
            streamed.release()
        collected = service.prepare(AnswerRequest("When?", chain="events"))
        try:
            return events, await collected.collect()
        finally:
            collected.release()

    events, completed = asyncio.run(run())
    final = "The keeper feeds them at dawn [1]." if replace else "At dawn [1]."
    assert events[0] == Question(REWRITTEN)
    assert isinstance(events[1], Sources)
    assert [(s.number, s.label) for s in events[1].sources] == [(1, "docs/a.txt")]
    assert not events[1].not_found
    assert "".join(e.text for e in events if isinstance(e, Token)) == "At dawn [1]."
    assert [e for e in events if isinstance(e, Replaced)] == (
        [Replaced(final, REASON)] if replace else []
    )
    assert isinstance(events[-1], Finished)
    assert events[-1].answer == final
    assert completed.answer == final
    assert [s.label for s in completed.sources.sources] == ["docs/a.txt"]


@pytest.mark.parametrize("replace", [False, True], ids=["streamed", "replaced"])
def test_a_chain_that_streams_typed_events_is_checked_by_the_evaluation(
    events_resources: Resources, replace: bool
) -> None:
    conversation = Conversation(events_resources, events_spec(replace))
    questions = [answers.Question("When?", "docs/a.txt", answer="at dawn")]
    [record] = answers.ask_all(conversation, questions)
    final = "The keeper feeds them at dawn [1]." if replace else "At dawn [1]."
    assert record["answer"] == final
    assert record["listed_sources"] == ["docs/a.txt"]
    assert record["source_listed"]
    assert record["source_cited"]
    assert record["expected_text_in_answer"]
    assert not record["says_unknown"]
    assert not record["not_found_without_model"]


def test_the_adapter_passes_events_through_and_refuses_anything_else() -> None:
    found = (Document(KEEPER, metadata={"source": "docs/a.txt"}),)
    stream = [Searched("q"), {"context": list(found), "answer": "x"}, AnswerText("y")]
    assert list(answer_events(stream)) == [
        Searched("q"),
        Retrieved(found),
        AnswerText("x"),
        AnswerText("y"),
    ]
    with pytest.raises(TypeError, match="stream answer events"):
        list(answer_events(["plain text"]))
