"""A follow-up made to stand alone for retrieval, without ever searching for an answer.

The model is shown the previous question and the follow-up, with two worked examples, and
asked for one question; a model that takes a grammar (the embedded llama.cpp one) can only
write one line ending in "?" (or "？"), starting like a question. What it writes is then
checked: one question, keeping the follow-up's own words, naming nothing the conversation
did not name, and adding something from it. A rewrite that fails is not used: retrieval
searches for the previous question and the follow-up together (a follow-up with a reference
to resolve, like "and the second one?") or for the follow-up alone (one that stands on its
own). Either way what is searched for, and shown as "Searched for", is a question the model
wrote and the check passed, or the user's own words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable

from app.text.writing_systems import dominant_language
from chains.core.extractive import words
from chains.core.support import check_support

REWRITE_INSTRUCTIONS = """\
Rewrite the user's follow-up question so it can be understood without the conversation: \
keep its words, and replace references such as "it", "there" or "the second one" with what \
they refer to in the previous question. Reply with one question only; never answer it.

Previous question: Who founded the bakery on Mill Street?
Follow-up: When did she retire?
Question: When did the founder of the bakery on Mill Street retire?

Previous question: What does the Lakeside library lend besides books?
Follow-up: And what are its opening hours?
Question: What are the opening hours of the Lakeside library?

Previous question: 老街面包店是谁创办的？
Follow-up: 她什么时候退休的？
Question: 老街面包店的创办人什么时候退休的？"""

REWRITE_REQUEST = "Previous question: {previous}\nFollow-up: {question}\nQuestion:"
PREVIOUS_CHARS = 600  # a very long previous question is cut: the rewrite needs its topic

# A question in English starts like one; the grammar below forces one of these starts.
QUESTION_STARTS = (
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "when",
    "where",
    "why",
    "how",
    "is",
    "are",
    "was",
    "were",
    "do",
    "does",
    "did",
    "can",
    "could",
    "will",
    "would",
    "should",
    "has",
    "have",
    "had",
    "in which",
    "on which",
    "at what",
    "for how",
    "from what",
    "to whom",
)
_STARTS = " | ".join(f'"{start.capitalize()} "' for start in QUESTION_STARTS)
# GBNF (llama.cpp grammars): one line that starts like a question and ends with "?".
QUESTION_GRAMMAR = f"""root ::= start [^\\n?]{{1,150}} "?"
start ::= {_STARTS}"""
# For a follow-up in Chinese, Japanese or Korean: one line ending with a question mark.
CJK_QUESTION_GRAMMAR = """root ::= [^\\n?？]{1,80} [?？]"""
REWRITE_MAX_TOKENS = 80

# A follow-up that needs the conversation: it refers back, or says too little on its own.
_REFERS_BACK = re.compile(
    r"\b(?:it|its|it's|they|them|their|there|he|him|his|she|her|this|that|these|those|one|ones"
    r"|former|latter|same|other|another|what about|how about)\b"
    r"|它|他|她|那里|这里|那个|这个|那些|这些|那一|这一|其|该|还有|呢",
    re.IGNORECASE,
)
_SHORT_FOLLOW_UP = 3  # content words; fewer cannot name their own topic
# Chinese, Japanese and Korean drop the topic freely ("成年人的门票多少钱？"): a follow-up of
# this many characters or fewer is taken to need the one before.
_SHORT_CJK_FOLLOW_UP = 10
_LABEL = re.compile(
    r"^\s*(?:standalone|rewritten|previous|follow-up|new)?\s*question\s*[:：]\s*", re.IGNORECASE
)


@dataclass(frozen=True)
class Standalone:
    """What retrieval searches for after a follow-up, and how it was decided."""

    query: str  # searched for, and shown as "Searched for"
    rewritten: str  # what the model wrote ("" when it was not asked)
    used_rewrite: bool
    reason: str = ""  # why the rewrite was not used


def previous_question(history: Sequence[BaseMessage]) -> str:
    """The user's last question before the follow-up ("" when there is none)."""
    for message in reversed(history):
        if isinstance(message, HumanMessage) and message.text.strip():
            return message.text.strip()[:PREVIOUS_CHARS]
    return ""


def rewrite_messages(question: str, history: Sequence[BaseMessage]) -> list[BaseMessage]:
    return [
        SystemMessage(REWRITE_INSTRUCTIONS),
        HumanMessage(
            REWRITE_REQUEST.format(previous=previous_question(history), question=question)
        ),
    ]


def constrained(model: BaseChatModel, question: str) -> Runnable:
    """The model, bound to write one short question where it takes a grammar (the embedded
    llama.cpp model: `grammar` is one of its fields); other models as they are."""
    if "grammar" not in type(model).model_fields:
        return model
    cjk = dominant_language(question) != ""
    return model.bind(
        grammar=CJK_QUESTION_GRAMMAR if cjk else QUESTION_GRAMMAR, max_tokens=REWRITE_MAX_TOKENS
    )


def needs_context(question: str) -> bool:
    """The follow-up refers back ("its", "there", "and the second one?") or is too short to
    name its own topic."""
    if _REFERS_BACK.search(question):
        return True
    if dominant_language(question):
        return len(re.sub(r"[\W\d_]", "", question)) <= _SHORT_CJK_FOLLOW_UP
    return len(words(question)) < _SHORT_FOLLOW_UP


def fallback_query(question: str, history: Sequence[BaseMessage]) -> str:
    """The user's own words: the previous question and the follow-up, when the follow-up needs
    them; the follow-up alone when it stands on its own."""
    previous = previous_question(history)
    if previous and needs_context(question):
        return f"{previous} {question}"
    return question


def clean(rewritten: str) -> str:
    """The first non-empty line, without a label the model copied ("Question: ...")."""
    for line in rewritten.strip().splitlines():
        line = _LABEL.sub("", line.strip()).strip().strip('"\u201c\u201d')
        if line:
            return line
    return ""


def is_question(text: str, follow_up: str) -> bool:
    """One line ending with a question mark; in English, starting like a question."""
    if "\n" in text or not text.rstrip().endswith(("?", "？")):
        return False
    if dominant_language(text) or dominant_language(follow_up):
        return True
    lowered = re.sub(r"^\s*and\s+", "", text.lower())
    if not any(lowered.startswith(start + " ") for start in QUESTION_STARTS):
        # A follow-up that itself starts like an English question expects one back.
        asked = re.sub(r"^\s*and\s+", "", follow_up.lower())
        return not any(asked.startswith(start + " ") for start in QUESTION_STARTS)
    return True


def _tokens(text: str) -> list[str]:
    """Every word, question words included ("How long is X?" is not "What is X?")."""
    return re.findall(r"\w+", text.lower())


def check_rewrite(rewritten: str, question: str, history: Sequence[BaseMessage]) -> str | None:
    """Why the rewrite must not be searched for, or None when it may be."""
    if not rewritten:
        return "the model wrote nothing"
    if not is_question(rewritten, question):
        return "not a question"
    held = words(rewritten)
    own = words(question)
    if own:
        dropped = own - held
        # Words: at most one may go ("there" replaced). Character pairs of Chinese,
        # Japanese or Korean are finer: a third may (那里的 replaced by 博物馆的).
        most = len(own) / 3 if dominant_language(question) else min(1, len(own) / 3)
        if len(dropped) > most:
            return "it dropped the follow-up's words"
    previous = previous_question(history)
    if previous and _tokens(rewritten) == _tokens(previous):
        return "it repeats the previous question"
    said = [m.text for m in history] + [question]
    invented = check_support(rewritten, said).unsupported
    if invented:
        return "it names what the conversation did not: " + ", ".join(f.text for f in invented)
    earlier = set().union(*(words(text) for text in said[:-1])) if said[:-1] else set()
    if needs_context(question) and not (held - own) & earlier:
        return "it adds nothing from the conversation"
    if len(rewritten) > 3 * len(question) + 200:
        return "too long"
    return None


def standalone(rewritten: str, question: str, history: Sequence[BaseMessage]) -> Standalone:
    """The model's rewrite if it passes `check_rewrite`, else `fallback_query`."""
    text = clean(rewritten)
    problem = check_rewrite(text, question, history)
    if problem is None:
        return Standalone(text, rewritten, used_rewrite=True)
    return Standalone(fallback_query(question, history), rewritten, False, problem)
