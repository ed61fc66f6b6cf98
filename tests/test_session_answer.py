"""`Session.answer` and `explain_failure`, the parts of one question that any front end shares:
a stopped answer lets go at once while an in-process model never runs two calls at once, and
what fails mid-conversation becomes one message of the right kind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from chromadb.errors import NotFoundError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableGenerator, RunnableLambda
from pydantic import Field

from app.config import Settings
from app.errors import ConfigError, ProviderError, StoreError
from app.models.chat_model import ChatModelInfo
from app.session.conversation import Session, explain_failure
from chains.core.budget import BudgetError
from chains.core.registry import get_chain

pytestmark = pytest.mark.unit


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


def session_for(model: BaseChatModel, provider: str = "local") -> Session:
    settings = Settings()
    session = Session(
        settings,
        embeddings=cast(Any, None),
        collection=None,
        keyword_index=cast(Any, None),
        model=model,
        model_info=ChatModelInfo(provider, "test", 2048, default_k=2),
        spec=get_chain("rag"),
    )

    # The model's tokens, streamed one chunk each, as the chain streams {"answer": token}.
    def tokens(chunks: Iterator[AIMessageChunk]) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            yield {"answer": chunk.content}

    session.chain = RunnableLambda(lambda x: x["question"]) | model | RunnableGenerator(tokens)
    return session


def test_a_stopped_answer_lets_go_at_once_and_the_next_waits_for_the_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = SlowInProcessModel()
    session = session_for(model)
    stream = session.answer("first")
    next(stream)  # the first token arrived
    started = time.perf_counter()
    stream.close()  # Ctrl-C
    assert time.perf_counter() - started < 0.5  # the caller is free at once

    second = [chunk["answer"] for chunk in session.answer("second")]
    session.close()
    assert "".join(second).count("w") == model.tokens  # the next answer is whole
    assert model.most_at_once == 1  # never two calls in the model at once
    assert model.produced[0] < model.tokens  # the stopped one stopped early
    # and stopping it printed nothing: no "Error in _StopModel..." warning from LangChain
    assert not [r for r in caplog.records if "AnswerStopped" in r.getMessage()]


def test_a_failure_in_the_chain_arrives_as_one_message_and_the_session_goes_on() -> None:
    calls = {"n": 0}

    def flaky(_: Any) -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise NotFoundError("Collection [abc] does not exist.")
        return {"answer": "fine"}

    session = session_for(SlowInProcessModel())
    session.chain = RunnableLambda(flaky)
    with pytest.raises(StoreError, match="rebuilt or deleted while this session had it open"):
        list(session.answer("q"))
    assert session.stale  # the store is opened again before the next question
    session.reopen_store = lambda: setattr(session, "stale", False)  # type: ignore[method-assign]
    assert list(session.answer("q")) == [{"answer": "fine"}]
    assert not session.stale


def request_error(url: str) -> httpx.ConnectError:
    return httpx.ConnectError("refused", request=httpx.Request("POST", url))


@pytest.mark.parametrize(
    ("failure", "kind", "words"),
    [
        (NotFoundError("Collection [x] does not exist."), StoreError, "rebuilt or deleted"),
        (request_error("http://chroma.local:8000/api/v2/query"), StoreError, "Lost the connection"),
        (
            request_error("http://127.0.0.1:11434/api/chat"),
            ProviderError,
            "Ollama is not answering",
        ),
        (httpx.ReadTimeout("slow"), ProviderError, "did not answer within"),
        (
            ValueError("Requested tokens (2100) exceed context window of 2048"),
            ProviderError,
            "LOCAL_CHAT_CONTEXT",
        ),
        (BudgetError("Shorten the question"), ConfigError, "Shorten the question"),
    ],
)
def test_failures_a_person_can_meet_become_one_message(
    failure: Exception, kind: type, words: str
) -> None:
    settings = Settings(
        chroma_host="chroma.local", ollama_base_url="http://127.0.0.1:11434", chroma_port=8000
    )
    explained = explain_failure(failure, settings, "ollama")
    assert isinstance(explained, kind)
    assert words in str(explained)


def test_a_bug_is_not_dressed_up_as_a_user_error() -> None:
    assert explain_failure(KeyError("oops"), Settings(), "local") is None
    assert explain_failure(httpx.ConnectError("x"), Settings(), "local") is None


def test_session_answer_runs_in_a_worker_so_the_caller_can_be_interrupted() -> None:
    seen: list[str] = []
    session = session_for(SlowInProcessModel())
    session.chain = RunnableLambda(
        lambda _: seen.append(threading.current_thread().name) or {"answer": "x"}
    )
    assert list(session.answer("q")) == [{"answer": "x"}]
    assert seen == ["answer"]  # not the caller's thread
