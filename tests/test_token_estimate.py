"""The token estimate for models whose tokenizer cannot run here counts by script, so a Chinese
conversation with Chinese sources still fits the window, system prompt included, when counted
by a real tokenizer (SmolLM2's, an English-centred byte-level BPE: the worst case we can run)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from app.config import Settings
from app.paths import SAMPLE_BEIR_ZH
from chains import rag
from chains.core import budget
from tests.fakes import FixedRetriever

pytestmark = pytest.mark.integration

WINDOW, RESERVE = 2048, 512
TEMPLATE_TOKENS_PER_MESSAGE = 5  # ChatML markers around each message
PASSAGES = [
    json.loads(line)["text"]
    for line in (SAMPLE_BEIR_ZH / "corpus.jsonl").read_text("utf-8").splitlines()
]


@pytest.fixture(scope="module")
def smollm2_tokens() -> Callable[[str], int]:
    from llama_cpp import Llama

    from app.models.local import local_chat_model_path

    vocab = Llama(model_path=local_chat_model_path(), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))


class SilentModel(BaseChatModel):
    """A chat model that reports no tokenizer (as Ollama's), so the chain estimates; it keeps
    every prompt it is sent and answers in Chinese."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "silent-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **_: Any) -> ChatResult:
        self.prompts.append(messages)
        reply = "竹编市集在听雨桥两岸举行，需要二十四名志愿者[1]。" * 6
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


def converse(turns: int) -> SilentModel:
    """A Chinese conversation over long Chinese sources in a 2,048-token window."""
    model = SilentModel()
    sources = [
        Document("".join(PASSAGES[i : i + 4]), metadata={"source": f"博物馆/资料{i}.md"})
        for i in range(0, 24, 4)
    ]
    settings = Settings(chat_context_tokens=WINDOW, max_answer_tokens=RESERVE)
    chain = rag.build_chain(settings, FixedRetriever(documents=sources), model)
    history: list[BaseMessage] = []
    for turn in range(turns):
        question = f"第{turn + 1}个问题：" + PASSAGES[turn % len(PASSAGES)][:60] + "这是什么意思？"
        answer = chain.invoke({"question": question, "history": history})["answer"]
        history += [HumanMessage(question), AIMessage(answer)]
    return model


def prompt_tokens(messages: list[BaseMessage], count: Callable[[str], int]) -> int:
    return sum(count(str(m.content)) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages)


def test_a_chinese_conversation_fits_the_window_by_a_real_tokenizer(
    smollm2_tokens: Callable[[str], int],
) -> None:
    model = converse(turns=6)
    assert len(model.prompts) == 11  # 6 answers, 5 follow-up rewrites
    for messages in model.prompts:
        assert isinstance(messages[0], SystemMessage)  # never cut
        assert prompt_tokens(messages, smollm2_tokens) <= WINDOW - RESERVE
    last = model.prompts[-1]
    assert "<source id=" in str(last[-1].content)  # sources still reach the model
    assert "第6个问题" in str(last[-1].content)  # and the question, whole


def test_counting_characters_would_have_overflowed_the_window(
    smollm2_tokens: Callable[[str], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same conversation with the old estimate (a token per 3 characters): the prompts
    it lets through are several times the window, and a server cuts their start."""
    monkeypatch.setattr(budget, "estimate_tokens", lambda text: len(text) // 3 + 1)
    model = converse(turns=6)
    worst = max(prompt_tokens(m, smollm2_tokens) for m in model.prompts)
    assert worst > WINDOW


@pytest.mark.unit
def test_the_estimate_counts_by_script() -> None:
    assert budget.estimate_tokens("The ferry leaves the quay.") == 26 // 3 + 1
    assert budget.estimate_tokens("听雨桥有多长？") == 2 * 7 + 1
    assert budget.estimate_tokens("휴관") == 3 * 2 + 1
    assert budget.estimate_tokens("Привет") == 6 + 1
