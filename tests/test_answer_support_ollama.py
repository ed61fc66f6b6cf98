"""The Ollama path keeps generating (its capabilities say `generate`), and its answers go
through the same check over real HTTP (tests/ollama_server.py): an invented fact is replaced
by the sources' sentences, a supported answer stands, and a rewrite that answers the
follow-up is not searched for."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage

from app.config import Settings
from app.models import registry
from chains import rag
from chains.core.events import AnswerReplaced, answer_events, collect
from chains.core.rewrite import REWRITE_INSTRUCTIONS
from chains.core.support import NOT_SUPPORTED
from tests.fakes import FixedRetriever
from tests.ollama_server import OllamaTestServer

pytestmark = pytest.mark.integration

NOTICE = Document(
    "Maintenance dredging of the Inner Basin will take place from 3 March to 28 March 2025. "
    "All vessels must keep a listening watch on VHF channel 71.",
    metadata={"source": "town/harbour-notice.txt"},
)
QUESTION = "Between which dates is the Inner Basin being dredged?"


def reply(body: dict[str, Any]) -> str:
    messages = body["messages"]
    if messages[0]["content"] == REWRITE_INSTRUCTIONS:
        return "The answer is: channel 16."  # answers instead of rewriting
    if "radio" in messages[-1]["content"].rsplit("Question:", 1)[-1]:
        return "Listen on VHF channel 71 [1]."
    return "It is being dredged between 2019 and 2023 [1]."


def test_ollama_answers_are_checked_and_replaced_when_they_invent() -> None:
    with OllamaTestServer(reply=reply) as server:
        settings = Settings(ollama_base_url=server.base_url, chat_provider="ollama")
        model, capabilities = registry.provider("ollama").chat_model(settings, lambda _: None)
        assert capabilities.answering == "generate"
        settings = settings.model_copy(update={"answer_mode": capabilities.answering})
        retriever = FixedRetriever(documents=[NOTICE])
        chain = rag.build_chain(settings, retriever, model)

        invented = list(answer_events(chain.stream({"question": QUESTION})))
        replaced = [e for e in invented if isinstance(e, AnswerReplaced)]
        assert [e.reason for e in replaced] == [NOT_SUPPORTED]
        assert "3 March to 28 March 2025. [1]" in replaced[0].text

        history = [HumanMessage(QUESTION), AIMessage(replaced[0].text)]
        follow_up = "Which radio channel should boats use during the works?"
        answer = collect(answer_events(chain.stream({"question": follow_up, "history": history})))
        assert answer.searched == follow_up  # the model's answer was not searched for
        assert retriever.queries[-1] == follow_up
        assert answer.text == "Listen on VHF channel 71 [1]."  # supported: it stands
        assert answer.replaced_reason is None
