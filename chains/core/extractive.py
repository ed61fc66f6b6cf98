"""An answer made of the sources' own sentences: the ones that best answer the question, each
with its citation [n]. Nothing in it can be invented, so it is what a small model's answer is
replaced with when the support check fails, and what the embedded default answers with.

A sentence's score: the embedding model's similarity to the question (when there is one),
plus the share of the question's words it holds, plus a bonus when it holds the kind of fact
the question asks for ("how many" a number, "when" a date or time, "who" a name) that the
question does not already hold, and a bonus for a "Label: value" line whose label names what
the question asks ("Rent: £1,275 per month" for "what is the monthly rent", 主持人：林晓峰 for
由谁主持) — forms, invoices and notices read by OCR hold their facts that way. A sentence that
adds no word to the question (a heading that repeats it) is never picked.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from app.text.writing_systems import UNSPACED
from chains.core.context import number_sources
from chains.core.sentences import split_units
from chains.core.support import COMMON_WORDS, Evidence, check_against

# What a sentence's score adds up from (measured on the sample questions: docs/evaluation.md).
LEXICAL_WEIGHT = 1.0
KIND_BONUS = 0.25
LABEL_BONUS = 1.0  # measured on data/eval/scan-questions.jsonl (docs/evaluation.md)
TITLE_PENALTY = 0.2
SHORT_WORDS = 8  # "Corvane Hill Community Observatory": names a topic, answers nothing
SECOND_WITHIN = 0.05  # a second sentence is shown when it scores this close to the best
MAX_SENTENCES = 2
MAX_SENTENCE_CHARS = 400

_WORD = re.compile(rf"[{UNSPACED}]|[^\W_]+", re.UNICODE)
_UNSPACED_CHAR = re.compile(f"[{UNSPACED}]")

# The kind of fact a question asks for, by its wording (English and Chinese).
_ASKS = [
    (
        "number",
        re.compile(
            r"\bhow (?:many|much|long|big|far|old|high|tall|large|heavy|often)\b"
            r"|\bwhat (?:is the )?"
            r"(?:number|percentage|price|cost|capacity|size|population|length|height|depth"
            r"|width|weight|area|temperature|amount|total|rent|fee|fare|deposit|distance)\b"
            r"|多少|几[个位次人天年条座户家名件]|多长|多大|多高|多远",
            re.IGNORECASE,
        ),
    ),
    (
        "time",
        re.compile(
            r"\bwhen\b|\bwhat (?:time|date|day|year|month)\b|\bwhich (?:day|date|year|month)s?\b"
            r"|\bbetween which dates\b|\bfrom what date\b|\bon which days\b"
            r"|什么时候|何时|哪天|哪一天|几点|哪一年|哪年|几月|日期",
            re.IGNORECASE,
        ),
    ),
    (
        "name",
        re.compile(
            r"^\s*who\b|\bwho (?:is|was|are|were|leads|runs|founded|wrote)\b|\bwhose\b"
            r"|\bwhat (?:is|was|will) (?:the )?(?:name|called)|\bnamed?\b|\bcalled\b|\bnickname"
            r"|\bwhich (?:company|person|ferry|boat|vessel|town|firm|organisation|organization)\b"
            r"|谁|哪位|什么名字|叫什么",
            re.IGNORECASE,
        ),
    ),
]
_HOW_MANY = re.compile(r"\bhow many ([a-z-]+)(?: ([a-z-]+))?", re.IGNORECASE)
_YEAR = re.compile(r"1[5-9]\d\d|2[01]\d\d")
# Capitalised words in a row, allowing "of" and "the" inside: "Skerrow Coast Heritage Fund".
_NAME_PHRASE = re.compile(r"[A-Z][\w'-]*(?:\s+(?:(?:of|the|de|van|von)\s+)?[A-Z][\w'-]*)*")
# "Label: value" (half- or full-width colon), the label starting with a letter and at most
# 40 characters: "Questions about this invoice: Oriel Fenwick".
_LABELLED = re.compile(r"^\s*([^\W\d_][^:：|]{0,39}?)\s*[:：]\s*(\S.*)$")
# A Chinese label naming who did something: 主持人, 检测员, 承租方, 馆长.
_AGENT_LABEL = re.compile(r"[人员者方长]$")
# A value that starts with a person's name: "Felix Ambrose", "Ishaan Cole, Tidewater ...".
_NAME_FIRST = re.compile(r"^(?:Dr\.? |Mr\.? |Mrs\.? |Ms\.? )?[A-Z][a-z'-]+ [A-Z][a-z'-]+\b")
_WEEKDAYS = re.compile(
    r"\b(?:mon|tue|wed|thu|fri|sat|sun)(?:day|sday|nesday|rsday|urday)?\b|daily|weekend",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sentence:
    text: str
    source_number: int
    position: int  # order in the context, to show two sentences in reading order
    score: float = 0.0
    heading: bool = False


def asked_kind(question: str) -> str | None:
    """ "number", "time" or "name" when the question's wording asks for one, else None."""
    for kind, pattern in _ASKS:
        if pattern.search(question):
            return kind
    return None


def words(text: str) -> set[str]:
    """Content words, lower case: Latin words without common ones, unspaced scripts as
    character bigrams (and single characters for one-character words)."""
    tokens = _WORD.findall(text.lower())
    found = {
        t
        for t in tokens
        if not _UNSPACED_CHAR.fullmatch(t) and t not in COMMON_WORDS and (len(t) > 1 or t.isdigit())
    }
    found = {_stem(t) for t in found}
    unspaced = "".join(t if _UNSPACED_CHAR.fullmatch(t) else " " for t in tokens)
    for run in unspaced.split():
        found |= {run[i : i + 2] for i in range(len(run) - 1)} or {run}
    return found


def _stem(word: str) -> str:
    for suffix in ("'s", "ies", "es", "s", "ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


class SentenceRanker:
    """Ranks the sentences of retrieved chunks for a question. `embeddings` (optional) is the
    library's embedding model: sentence vectors are cached, since the same chunks come back
    for related questions."""

    def __init__(self, embeddings: Embeddings | None = None, cache_size: int = 2048) -> None:
        self.embeddings = embeddings
        self._cache: OrderedDict[str, list[float]] = OrderedDict()
        self._cache_size = cache_size

    def vector(self, text: str) -> list[float]:
        assert self.embeddings is not None
        cached = self._cache.get(text)
        if cached is None:
            cached = self.embeddings.embed_query(text)
            self._cache[text] = cached
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return cached

    def rank(self, question: str, documents: Sequence[Document]) -> list[Sentence]:
        """Candidate sentences, best first."""
        candidates = candidate_sentences(documents)
        if not candidates:
            return []
        asked = words(question)
        kind = asked_kind(question)
        counted = counted_noun(question)
        question_facts = Evidence([question])
        similarity = self._similarity(question)
        held_by = [words(c.text) for c in candidates]
        # A question word most sentences hold (the town's name) tells them apart less than
        # one only a few hold (inverse document frequency over these sentences).
        weight = {
            w: math.log(1 + len(candidates) / (1 + sum(w in held for held in held_by)))
            for w in asked
        }
        total = sum(weight.values())
        scored = []
        for sentence, held in zip(candidates, held_by, strict=True):
            if not held - asked:
                continue  # repeats the question (a heading): answers nothing
            lexical = sum(weight[w] for w in held & asked) / total if total else 0.0
            score = similarity(sentence.text) + LEXICAL_WEIGHT * lexical
            labelled = label_bonus(sentence.text, question, kind, question_facts)
            if not labelled and (sentence.heading or _title(sentence.text)):
                score -= TITLE_PENALTY  # a label line's capitals name its value, not a topic
            elif kind and _holds_new(kind, sentence.text, question, question_facts):
                score += KIND_BONUS
                if counted and _counts(sentence.text, counted):
                    score += KIND_BONUS  # "6,925 visitors" for "how many visitors"
            score += labelled
            scored.append(replace(sentence, score=score))
        return sorted(scored, key=lambda s: -s.score)

    def _similarity(self, question: str) -> Callable[[str], float]:
        if self.embeddings is None:
            return lambda text: 0.0
        q = self.vector(question)
        return lambda text: _cosine(q, self.vector(text))


def candidate_sentences(documents: Sequence[Document]) -> list[Sentence]:
    """Every sentence of the chunks, numbered as the sources are (`number_sources`); a table
    row carries its header, so "Kittiwake Dawn | 88 | 580" says which column is which."""
    found: list[Sentence] = []
    seen: set[str] = set()
    for source in number_sources(list(documents)):
        for chunk in source.chunks:
            header = ""
            for unit in split_units(chunk.page_content):
                text = unit.text
                if " | " in text and ":" not in text and not header:
                    header = text  # the first row of a table names its columns
                    continue
                if " | " not in text:
                    header = ""
                shown = f"{header} / {text}" if header and " | " in text else text
                if len(shown) > MAX_SENTENCE_CHARS or shown in seen:
                    continue
                seen.add(shown)
                found.append(Sentence(shown, source.number, len(found), heading=unit.heading))
    return found


def counted_noun(question: str) -> str | None:
    """What a "how many" question counts ("visitors", "passenger journeys"; 多少人: 人), as
    a pattern that finds it just after a number in a sentence; None for other questions."""
    english = _HOW_MANY.search(question)
    if english:
        nouns = [n for n in english.groups() if n and n.lower() not in COMMON_WORDS]
        stems = "|".join(re.escape(_stem(n.lower())) for n in nouns)
        return rf"\d[\d,.]*\s+(?:[\w-]+\s+){{0,2}}(?:{stems})" if stems else None
    chinese = re.search(r"多少([\u4e00-\u9fff])|几([\u4e00-\u9fff])", question)
    if chinese:
        unit = chinese.group(1) or chinese.group(2)
        return rf"\d[\d,.]*\s*{re.escape(unit)}"
    return None


def label_bonus(text: str, question: str, kind: str | None, question_facts: Evidence) -> float:
    """LABEL_BONUS when `text` is "Label: value", the label names what the question asks
    (most of its words are the question's, or start the same: Coordinator / coordinates) and the
    value holds what was asked: a new fact of the asked kind (a date for "when"), a person
    for "who" (a name first, or a role's label: 主持人), else any word the question lacks."""
    labelled = _LABELLED.match(text)
    if labelled is None:
        return 0.0
    label, value = labelled.group(1).strip(), labelled.group(2)
    asked = words(question)
    if not words(value) - asked:
        return 0.0
    if kind == "name" and not (_AGENT_LABEL.search(label) or _NAME_FIRST.match(value)):
        return 0.0
    if kind in ("number", "time") and not _holds_new(kind, value, question, question_facts):
        return 0.0
    named = words(label)
    held = [w for w in named if w in asked or any(_same_start(w, a) for a in asked)]
    # Most of the label is in the question: "Invoice number", 检测员; not a title that shares
    # one word with it (岚溪雾芽茶专业合作社：我们的故事 for 合作社有几户).
    return LABEL_BONUS if named and 2 * len(held) >= len(named) else 0.0


def _same_start(a: str, b: str) -> bool:
    """Coordinator / coordinates, Surveyor / survey: five letters in common."""
    return len(a) >= 5 and len(b) >= 5 and a[:5] == b[:5]


def _counts(text: str, counted: str) -> bool:
    return re.search(counted, text, re.IGNORECASE) is not None


def _holds_new(kind: str, text: str, question: str, question_facts: Evidence) -> bool:
    """The sentence holds a fact of `kind` that the question does not: a count for "how
    many" (not a year), a date, time or weekday for "when", a name for "who" that is not part
    of a name the question uses ("Community" in "Corvane Hill Community Observatory")."""
    if kind == "time" and _WEEKDAYS.search(text):
        return True
    new = check_against(text, question_facts).unsupported
    if kind == "number":
        return any(f.kind == "number" and not _YEAR.fullmatch(f.text) for f in new)
    if kind == "time":
        return any(f.kind in ("date", "time") or _YEAR.fullmatch(f.text) for f in new)
    asked = words(question)
    phrases = [words(phrase) for phrase in _NAME_PHRASE.findall(text)]
    return any(held and not held & asked for held in phrases) and any(
        f.kind in ("name", "quote") for f in new
    )


def _title(text: str) -> bool:
    """No digit, and every longer word capitalised, or a short line that ends no sentence:
    a heading or a name on its own ("Brindlemoor: a short guide to the town")."""
    if re.search(r"\d", text):
        return False
    long_words = re.findall(r"[^\W\d_]{4,}", text)
    if long_words and all(w[0].isupper() for w in long_words):
        return True
    return len(text.split()) < SHORT_WORDS and not re.search(r"[.!?\u3002\uff01\uff1f]$", text)


def pick(ranked: Sequence[Sentence]) -> list[Sentence]:
    """The best sentence, and the next ones that score nearly as well, in reading order."""
    if not ranked:
        return []
    best = ranked[0].score
    chosen = [s for s in ranked[:MAX_SENTENCES] if s.score >= best - SECOND_WITHIN]
    return sorted(chosen, key=lambda s: s.position)


def render(sentences: Sequence[Sentence]) -> str:
    """Sentences as an answer, each followed by its citation: "… [2]"."""
    parts = []
    for sentence in sentences:
        text = sentence.text.rstrip()
        parts.append(f"{text} [{sentence.source_number}]")
    return " ".join(parts) if all(" | " not in s.text for s in sentences) else "\n".join(parts)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
