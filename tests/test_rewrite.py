"""The follow-up rewrite never hurts (chains/core/rewrite.py): a model that answers instead of
rewriting, drops the follow-up's words or names what nobody said is not searched for; the
user's own words are. (The embedded model held by its grammar: test_rewrite_embedded.py.)"""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from app.config import Settings
from chains import rag
from chains.core.events import Searched, answer_events
from chains.core.rewrite import (
    REWRITE_INSTRUCTIONS,
    check_rewrite,
    constrained,
    fallback_query,
    standalone,
)
from tests.fakes import FixedRetriever, scripted

pytestmark = pytest.mark.unit

FIRST = "What is the main telescope at the Corvane Hill observatory called?"
FOLLOW_UP = "Which company is re-aluminising its mirror?"
HISTORY: list[BaseMessage] = [
    HumanMessage(FIRST),
    AIMessage("The main instrument is a 610 mm reflecting telescope nicknamed Lamplighter [1]."),
]
DOCS = [Document("Its mirror is re-aluminised by Aldermoss Optics.", metadata={"source": "e.eml"})]


def searched_for(rewrite_reply: str, question: str = FOLLOW_UP, history=HISTORY) -> tuple:  # type: ignore[no-untyped-def,type-arg]
    """What the chain searched for, shown as "Searched for", and what the retriever got."""
    retriever = FixedRetriever(documents=DOCS)
    model = scripted(rewrite_reply, "Aldermoss Optics [1].")
    settings = Settings(answer_mode="generate", chat_context_tokens=4096)
    chain = rag.build_chain(settings, retriever, model)
    events = list(answer_events(chain.stream({"question": question, "history": history})))
    shown = next(e.question for e in events if isinstance(e, Searched))
    return shown, retriever.queries, model.seen[0]


@pytest.mark.parametrize(
    "reply",
    [
        # What SmolLM2 wrote under "Searched for" before (issue 22).
        "The company re-aluminising its mirror is a non-profit organization called the "
        "International Society of Corvane Hills, which works with volunteers.",
        "The answer is: 10.",
        "Aldermoss Optics.",
        "",
        "Which company is re-aluminising the mirror of the Royal Greenwich Observatory?",
        "What is the main telescope at the Corvane Hill observatory called?",  # dropped its words
    ],
)
def test_a_model_that_answers_instead_of_rewriting_is_not_searched_for(reply: str) -> None:
    shown, queries, _ = searched_for(reply)
    assert shown == f"{FIRST} {FOLLOW_UP}"  # the user's own words
    assert queries == [shown]


def test_a_sound_rewrite_is_searched_for() -> None:
    rewrite = (
        "Which company is re-aluminising the mirror of the Corvane Hill observatory's telescope?"
    )
    shown, queries, prompt = searched_for(rewrite)
    assert shown == rewrite
    assert queries == [rewrite]
    assert prompt[0].content == REWRITE_INSTRUCTIONS
    assert FIRST in prompt[-1].content  # the previous question and the follow-up, no answer
    assert FOLLOW_UP in prompt[-1].content
    assert "Lamplighter" not in prompt[-1].content


def test_a_label_the_model_copied_is_taken_off() -> None:
    rewrite = "Which company is re-aluminising the mirror of the Corvane Hill telescope?"
    shown, _, _ = searched_for(f"Question: {rewrite}\nIt is Aldermoss Optics.")
    assert shown == rewrite


def test_a_follow_up_that_stands_alone_is_searched_alone_when_the_rewrite_fails() -> None:
    own = "Who is the harbour master in Brindlemoor?"
    shown, queries, _ = searched_for("The harbour master is Ewan Tallisker.", question=own)
    assert shown == own
    assert queries == [own]


def test_without_history_the_model_is_not_asked_to_rewrite() -> None:
    shown, queries, prompt = searched_for("Aldermoss Optics [1].", history=[])
    assert shown == queries[0] == FOLLOW_UP
    assert prompt[0].content != REWRITE_INSTRUCTIONS  # the only call was the answer


@pytest.mark.parametrize(
    ("rewritten", "problem"),
    [
        ("Aldermoss Optics is the company.", "not a question"),
        ("What is it?", "it dropped the follow-up's words"),
        ("Which company is re-aluminising its mirror?", "it adds nothing from the conversation"),
        (
            "Which company is re-aluminising the mirror of the Hubble telescope?",
            "it names what the conversation did not: Hubble",
        ),
        ("Which company\nis re-aluminising the telescope's mirror?", "not a question"),
        (FIRST, "it dropped the follow-up's words"),
    ],
)
def test_the_check_names_what_is_wrong(rewritten: str, problem: str) -> None:
    assert check_rewrite(rewritten, FOLLOW_UP, HISTORY) == problem


def test_a_rewrite_that_repeats_the_previous_question_is_refused() -> None:
    history: list[BaseMessage] = [HumanMessage("Who started the Three Percenters?")]
    assert check_rewrite("Who started the Three Percenters?", "And what are they?", history) == (
        "it repeats the previous question"
    )
    assert check_rewrite("What are the Three Percenters?", "And what are they?", history) is None


def test_chinese_follow_ups_the_same_way() -> None:
    history: list[BaseMessage] = [
        HumanMessage("博物馆那只退休的看门狗叫什么？"),
        AIMessage("阿黄 [1]。"),
    ]
    follow_up = "那里的馆长是谁？"
    answered = standalone("馆长是许知秋。", follow_up, history)
    assert not answered.used_rewrite
    assert answered.query == "博物馆那只退休的看门狗叫什么？ 那里的馆长是谁？"
    good = standalone("博物馆的馆长是谁？", follow_up, history)
    assert good.used_rewrite
    assert good.query == "博物馆的馆长是谁？"
    assert fallback_query("入股合作社一股要多少钱？", history) == "入股合作社一股要多少钱？"


def test_only_a_model_that_takes_a_grammar_is_bound_to_one() -> None:
    model = scripted("x")
    assert constrained(model, FOLLOW_UP) is model  # a fake (or Ollama) model: as it is
