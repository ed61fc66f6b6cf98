"""Long conversations: the follow-up rewrite and the answer both fit the model's window, the
oldest history going first; where the window comes from; and the model's own token count."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from app.config import Settings
from chains import rag
from chains.core.answering import REWRITE_INSTRUCTIONS
from chains.core.budget import (
    BudgetError,
    context_window,
    estimate_tokens,
    fit_budget,
    token_counter,
)
from chains.core.context import format_context
from tests.fakes import FixedRetriever

pytestmark = pytest.mark.unit

TEMPLATE_TOKENS_PER_MESSAGE = 5  # what a ChatML-like template adds around each message


class WindowedChatModel(BaseChatModel):
    """A chat model with a small window that refuses a prompt that leaves less than
    `max_tokens` for its reply, as llama.cpp refuses one longer than its context. Tokens are
    words. Rewrites get a short question back, answers a long text; every prompt is kept."""

    n_ctx: int = 1024
    max_tokens: int = 256
    answer_words: int = 220
    prompts: list[tuple[str, int, list[BaseMessage]]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "windowed-fake"

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **_: Any) -> ChatResult:
        tokens = sum(
            self.get_num_tokens(str(m.content)) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages
        )
        kind = "rewrite" if messages[0].content == REWRITE_INSTRUCTIONS else "answer"
        self.prompts.append((kind, tokens, messages))
        if tokens + self.max_tokens > self.n_ctx:
            raise ValueError(f"Requested tokens ({tokens}) exceed context window of {self.n_ctx}")
        text = (
            "What about that topic in the harbour?"
            if kind == "rewrite"
            else " ".join(f"answer-word{i}" for i in range(self.answer_words))
        )
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


SOURCES = [
    Document(" ".join(f"fact{n}-{i}" for i in range(120)), metadata={"source": f"s{n}.md"})
    for n in range(2)
]


def test_twenty_long_exchanges_fit_the_window_for_rewrite_and_answer() -> None:
    model = WindowedChatModel()
    settings = Settings(max_answer_tokens=model.max_tokens)
    chain = rag.build_chain(settings, FixedRetriever(documents=SOURCES), model)
    history: list[BaseMessage] = []
    for turn in range(1, 21):
        question = f"Question {turn}: " + " ".join(f"detail{turn}-{i}" for i in range(60))
        result = chain.invoke({"question": question, "history": history})
        assert len(result["answer"].split()) == model.answer_words, turn
        history += [HumanMessage(question), AIMessage(result["answer"])]

    rewrites = [p for p in model.prompts if p[0] == "rewrite"]
    answers = [p for p in model.prompts if p[0] == "answer"]
    assert (len(rewrites), len(answers)) == (19, 20)  # the first question needs no rewrite
    budget = model.n_ctx - model.max_tokens
    assert max(tokens for _, tokens, _ in model.prompts) <= budget
    # Long ago the history outgrew the window: the oldest exchanges went, the last one stayed.
    _, _, last_rewrite = rewrites[-1]
    _, _, last_answer = answers[-1]
    contents = [str(m.content) for m in last_answer]
    assert isinstance(last_answer[0], SystemMessage)
    assert any(c.startswith("Question 19:") for c in contents)  # the last exchange
    assert not any(c.startswith("Question 1:") for c in contents)  # the oldest, dropped
    assert "Question 20:" in contents[-1]  # the question itself is never cut
    # The rewrite is shown the previous question and the follow-up only (chains/core/rewrite.py).
    assert isinstance(last_rewrite[0], SystemMessage)
    assert "Question 19:" in str(last_rewrite[-1].content)
    assert "Question 20:" in str(last_rewrite[-1].content)
    assert "Question 18:" not in " ".join(str(m.content) for m in last_rewrite)
    assert "<source id=" in str(last_answer[-1].content)  # sources still reach the model


def test_the_window_comes_from_what_the_model_reports() -> None:
    fake = GenericFakeChatModel(messages=iter([]))
    assert context_window(WindowedChatModel(n_ctx=3000)) == 3000  # llama.cpp's n_ctx
    profiled = GenericFakeChatModel(messages=iter([]), profile={"max_input_tokens": 128_000})
    assert context_window(profiled) == 128_000  # LangChain's model profile
    assert context_window(profiled, configured=16_000) == 16_000  # the smaller of the two
    assert context_window(fake, configured=6000) == 6000  # the setting when the model is silent

    from langchain_ollama import ChatOllama

    assert context_window(ChatOllama(model="llama3.2", num_ctx=8192)) == 8192


def test_an_unknown_window_is_an_error_that_names_the_setting_not_a_guess() -> None:
    fake = GenericFakeChatModel(messages=iter([]))
    with pytest.raises(BudgetError, match="set CHAT_CONTEXT_TOKENS"):
        context_window(fake)
    with pytest.raises(BudgetError, match="CHAT_CONTEXT_TOKENS"):
        rag.build_chain(Settings(), FixedRetriever(documents=SOURCES), fake)
    with pytest.raises(BudgetError, match="lower MAX_ANSWER_TOKENS"):
        rag.build_chain(
            Settings(chat_context_tokens=600, max_answer_tokens=512),
            FixedRetriever(documents=SOURCES),
            fake,
        )


def test_tokens_are_counted_by_the_model_when_it_can_never_by_a_download() -> None:
    assert token_counter(WindowedChatModel())("three short words") == 3
    custom = GenericFakeChatModel(messages=iter([]), custom_get_token_ids=lambda t: [0] * len(t))
    assert token_counter(custom)("abcd") == 4
    # LangChain's default get_num_tokens would load GPT-2's tokenizer from the hub.
    assert token_counter(GenericFakeChatModel(messages=iter([]))) is estimate_tokens


def test_a_question_longer_than_the_window_is_refused_in_words() -> None:
    with pytest.raises(BudgetError, match="Shorten the question"):
        fit_budget(
            budget=100,
            count=lambda text: len(text.split()),
            fixed="word " * 200,
            history=[],
            context=SOURCES,
            render_context=format_context,
        )
