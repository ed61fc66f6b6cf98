"""The embedded SmolLM2, held by the rewrite's llama.cpp grammar (chains/core/rewrite.py),
writes one question: without it, it answered the follow-up 14 times of 14 (issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser

from app.config import Settings
from app.models.local import local_chat_model
from chains.core.rewrite import (
    CJK_QUESTION_GRAMMAR,
    QUESTION_GRAMMAR,
    QUESTION_STARTS,
    constrained,
    rewrite_messages,
)

pytestmark = pytest.mark.integration

HISTORY: list[BaseMessage] = [
    HumanMessage("What is the main telescope at the Corvane Hill observatory called?"),
    AIMessage("The main instrument is a 610 mm reflecting telescope nicknamed Lamplighter [1]."),
]


def test_the_grammar_bound_embedded_rewrite_is_one_question(tmp_path: Path) -> None:
    settings = Settings(model_cache_dir=tmp_path, local_chat_gguf_type="packaged")
    model = local_chat_model(settings, lambda _: None)
    follow_up = "Which company is re-aluminising its mirror?"
    bound = constrained(model, follow_up)
    assert bound.kwargs["grammar"] == QUESTION_GRAMMAR  # type: ignore[attr-defined]
    for seed in (1, 2, 3):
        rewrite = (bound.bind(seed=seed) | StrOutputParser()).invoke(
            rewrite_messages(follow_up, HISTORY)
        )
        assert rewrite.endswith("?"), rewrite
        assert "\n" not in rewrite
        assert rewrite.lower().startswith(QUESTION_STARTS), rewrite

    chinese = constrained(model, "那里的馆长是谁？")
    assert chinese.kwargs["grammar"] == CJK_QUESTION_GRAMMAR  # type: ignore[attr-defined]
    reply = (chinese | StrOutputParser()).invoke(
        rewrite_messages("那里的馆长是谁？", [HumanMessage("博物馆那只看门狗叫什么？")])
    )
    assert reply.endswith(("?", "？")), reply
    assert "\n" not in reply
