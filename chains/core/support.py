"""Is an answer supported by the sources it was given? The facts a reader would act on — names,
numbers, dates, times and quoted strings — must appear in the sources (or in the question the
user asked), after normalisation: "4,318" is 4318, "3 to 28 March 2025" holds 2025-03-03,
"8:30 pm" is 20:30, "十二" is 12, "Brindlemoor's" is Brindlemoor.

Lexical on purpose: measured on the embedded model's answers to the sample questions
(docs/evaluation.md, "Answers you can trust"), the embedding model's sentence similarity
did not separate invented answers from sound ones, and a fact the sources do not hold is what
a reader cannot check for themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

NOT_SUPPORTED = "the model's wording was not supported by the sources"

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        1,
    )
    for name in names
}
_MONTH = r"(?:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[5-9]\d\d|2[01]\d\d)"
_RANGE = r"\s*(?:-|\u2013|\u2014|to|until|till|and|through)\s*"

# Dates, most specific first; each match is consumed so its numbers are not numbers again.
_DATE_PATTERNS = [
    # 2025-03-03, 2025-07-15T17:22:00
    re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?=\b|T)"),
    # 2025年3月3日, 3月3日
    re.compile(r"(?:(?P<y>\d{4})\s*年\s*)?(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]"),
    # 3 to 28 March 2025, 3-28 March
    re.compile(
        rf"\b(?P<d>{_DAY}){_RANGE}(?P<d2>{_DAY})\s+(?:of\s+)?(?P<mn>{_MONTH})(?:,?\s+(?P<y>{_YEAR}))?\b",
        re.IGNORECASE,
    ),
    # 3 March 2025, 3rd of March
    re.compile(
        rf"\b(?P<d>{_DAY})\s+(?:of\s+)?(?P<mn>{_MONTH})(?:,?\s+(?P<y>{_YEAR}))?\b", re.IGNORECASE
    ),
    # March 3, 2025; March 3-28
    re.compile(
        rf"\b(?P<mn>{_MONTH})\s+(?P<d>{_DAY})(?:{_RANGE}(?P<d2>{_DAY}))?(?:,?\s+(?P<y>{_YEAR}))?\b",
        re.IGNORECASE,
    ),
]
# 07:15, 8:30 pm, 8.30 pm, 9 am (a dot or no minutes only with am/pm: "£2.50" is not a time).
_TIME = re.compile(
    r"(?<![\d.,])\b(?P<h>[01]?\d|2[0-3])"
    r"(?::(?P<min>[0-5]\d)|(?:\.(?P<dmin>[0-5]\d))?(?=\s*[ap]\.?m\b))"
    r"(?:\s*(?P<ampm>[ap]\.?m)\b\.?)?(?!\d)",
    re.IGNORECASE,
)
# 4,318 / 4 318 / 4'318 / 1.8 / 12000 (a comma followed by three digits groups thousands).
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])(?:\d{1,3}(?:[,\u00a0\u202f' ]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?!\d)"
)
# Codes: Latin letters and digits together ("9A", "SD-2", "A380"), checked as written.
_CODE = re.compile(
    r"(?<![A-Za-z0-9_.-])(?=[A-Za-z0-9.-]*\d)(?=[A-Za-z0-9.-]*[A-Za-z])"
    r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?![A-Za-z0-9])"
)
_CHINESE_NUMBER = re.compile("[零〇一二两三四五六七八九十百千万亿]+")
_CITATION = re.compile(r"\[\d+(?:\s*[,-]\s*\d+)*\]")
_QUOTED = re.compile(
    r"\"([^\"\n]{3,80})\"|\u201c([^\u201d\n]{3,80})\u201d|[「『《]([^」』》\n]{2,40})[」』》]"
)
_NAME_WORD = re.compile(r"(?<![\w'])[A-Z][\w'\u2019-]*[\w]|(?<![\w'])[A-Z](?![\w'])")
_WORD = re.compile(r"[\w'\u2019-]+")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[-*•]\s+|\(\s*|\"\s*)$")

NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "million": 1_000_000,
    "dozen": 12,
    "once": 1,
    "twice": 2,
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "half": 0.5,
}
_CHINESE_DIGITS = {"零": 0, "\u3007": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CHINESE_DIGITS |= {"六": 6, "七": 7, "八": 8, "九": 9}
_CHINESE_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words a sentence may start with that are not names. Capitalised words elsewhere are names.
COMMON_WORDS = _word_set(
    """a about above according after again against all also although always am an and answer
    another any are around as at based be because been before being below between both but by
    can cannot certainly could did do does done during each either else even every for from
    further had has have having he her here hers him his how however i if in indeed instead
    into is it its just last later let like many may maybe me meanwhile more most much must my
    neither next no none nor not note nothing now of off often on once one only or other our
    out over overall please perhaps rather since so some sorry still such sure than thank thanks
    that the their them then there therefore these they this those though through thus to too
    unfortunately under unless until up upon us usually very was we well were what whatever
    when where whether which while who whom whose why will with within without would yes yet
    you your source sources document documents question shall should might ought need
    needs"""
)


@dataclass(frozen=True)
class Fact:
    """One checkable statement in an answer: its text as written and its kind."""

    text: str
    kind: str  # "number" | "date" | "time" | "code" | "name" | "quote"


@dataclass(frozen=True)
class Support:
    """The facts found in an answer and those the sources do not hold."""

    facts: tuple[Fact, ...]
    unsupported: tuple[Fact, ...]

    @property
    def supported(self) -> bool:
        return not self.unsupported

    def describe(self) -> str:
        return ", ".join(f"{f.kind} {f.text!r}" for f in self.unsupported)


@dataclass(frozen=True)
class _Date:
    day: int
    month: int
    year: int | None


class Evidence:
    """What the sources (and the question) hold, normalised once, to check facts against."""

    def __init__(self, texts: Iterable[str]) -> None:
        text = "\n".join(texts)
        self.text = _fold(text)
        self.dates: set[_Date] = set()
        self.times: set[tuple[int, int]] = set()
        rest = _take_dates(text, lambda date, _: self.dates.add(date))
        rest = _take_times(rest, lambda time, _: self.times.add(time))
        self.numbers = {value for value, _ in _numbers(rest)}
        # A date's and a time's parts are numbers the sources hold, too ("the 3rd", "at 7").
        for date in self.dates:
            self.numbers |= {Decimal(date.day), Decimal(date.month)}
            if date.year is not None:
                self.numbers.add(Decimal(date.year))
        for hour, minute in self.times:
            self.numbers |= {Decimal(hour), Decimal(minute)}
        self.numbers |= {
            Decimal(str(v)) for w, v in NUMBER_WORDS.items() if _has_word(self.text, w)
        }
        self.words = set(_WORD.findall(self.text))
        self.compact = _compact(self.text)

    def holds_number(self, value: Decimal) -> bool:
        return value in self.numbers

    def holds_date(self, date: _Date) -> bool:
        for known in self.dates:
            if (known.day, known.month) != (date.day, date.month):
                continue
            if date.year is None or known.year == date.year:
                return True
            if known.year is None and Decimal(date.year) in self.numbers:
                return True
        return False

    def holds_time(self, time: tuple[int, int]) -> bool:
        return time in self.times

    def holds_code(self, code: str) -> bool:
        return _compact(code) in self.compact

    def holds_text(self, text: str) -> bool:
        return _fold(text) in self.text

    def holds_name(self, word: str) -> bool:
        folded = _fold(word)
        for form in {folded, re.sub(r"['\u2019]s$", "", folded), folded.rstrip("'\u2019")}:
            if form in self.words:
                return True
            # Plurals, possessives and hyphenated parts: Perseid / Perseids, Re-aluminising.
            if len(form) >= 4 and any(
                (w.startswith(form) and len(w) - len(form) <= 2)
                or (form.startswith(w) and len(form) - len(w) <= 2 and len(w) >= 4)
                for w in self.words
            ):
                return True
            if "-" in form and all(self.holds_name(part) for part in form.split("-") if part):
                return True
        return False


def check_support(answer: str, sources: Sequence[str], question: str = "") -> Support:
    """The answer's facts and those that neither the sources nor the question hold."""
    evidence = Evidence([*sources, question])
    return check_against(answer, evidence)


def check_against(answer: str, evidence: Evidence) -> Support:
    facts: list[Fact] = []
    unsupported: list[Fact] = []

    def note(fact: Fact, held: bool) -> None:
        facts.append(fact)
        if not held:
            unsupported.append(fact)

    text = _CITATION.sub(" ", answer)
    for match in _QUOTED.finditer(text):
        quoted = next(g for g in match.groups() if g)
        note(Fact(quoted, "quote"), evidence.holds_text(quoted))

    rest = _take_dates(
        text, lambda date, written: note(Fact(written, "date"), evidence.holds_date(date))
    )
    rest = _take_times(
        rest, lambda time, written: note(Fact(written, "time"), evidence.holds_time(time))
    )
    for match in _CODE.finditer(rest):
        note(Fact(match.group(0), "code"), evidence.holds_code(match.group(0)))
    rest = _CODE.sub(lambda m: " " * len(m.group(0)), rest)
    for value, written in _numbers(rest):
        note(Fact(written, "number"), evidence.holds_number(value))
    for word in _names(rest):
        note(Fact(word, "name"), evidence.holds_name(word))
    return Support(tuple(facts), tuple(unsupported))


# --- extraction ------------------------------------------------------------------------------


def _compact(text: str) -> str:
    return re.sub(r"[\s-]", "", text.lower())


def _fold(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def _has_word(folded: str, word: str) -> bool:
    return re.search(rf"\b{word}\b", folded) is not None


def _take_dates(text: str, found: Callable[[_Date, str], object]) -> str:
    """Calls `found(date, as_written)` for every date; returns the text with the dates blanked
    out, so their parts are not read as numbers again."""
    for pattern in _DATE_PATTERNS:

        def replace(match: re.Match[str]) -> str:
            for date in _dates_of(match):
                found(date, match.group(0))
            return " " * len(match.group(0))

        text = pattern.sub(replace, text)
    return text


def _dates_of(match: re.Match[str]) -> list[_Date]:
    groups = match.groupdict()
    month = int(groups["m"]) if groups.get("m") else MONTHS[groups["mn"].lower().rstrip(".")]
    year = int(groups["y"]) if groups.get("y") else None
    days = [groups["d"], groups.get("d2")]
    dates = []
    for day in days:
        if day:
            number = int(re.sub(r"\D", "", day))
            if 1 <= number <= 31 and 1 <= month <= 12:
                dates.append(_Date(number, month, year))
    return dates


def _take_times(text: str, found: Callable[[tuple[int, int], str], object]) -> str:
    """Calls `found((hour, minute), as_written)` for every time (24-hour); returns the text
    with the times blanked out."""

    def add(hour: int, minute: int, ampm: str | None, written: str) -> None:
        if ampm and ampm.lower().startswith("p") and hour < 12:
            hour += 12
        if ampm and ampm.lower().startswith("a") and hour == 12:
            hour = 0
        found((hour, minute), written)

    def replace(match: re.Match[str]) -> str:
        minute = int(match["min"] or match["dmin"] or 0)
        written = match.group(0).strip()
        if written.endswith(".") and "." not in written[:-1]:
            written = written[:-1]  # "9 pm." ends a sentence; "9 p.m." keeps its dots
        add(int(match["h"]), minute, match["ampm"], written)
        return " " * len(match.group(0))

    return _TIME.sub(replace, text)


def _numbers(text: str) -> list[tuple[Decimal, str]]:
    """Every number in `text` with its value: digits with or without thousands separators,
    decimals, Chinese numerals."""
    found: list[tuple[Decimal, str]] = []
    for match in _NUMBER.finditer(text):
        written = match.group(0)
        try:
            value = Decimal(re.sub(r"[,\u00a0\u202f' ]", "", written))
        except InvalidOperation:
            continue
        found.append((value.normalize(), written))
    for match in _CHINESE_NUMBER.finditer(text):
        number = chinese_number(match.group(0))
        if number is not None:
            found.append((Decimal(number), match.group(0)))
    return found


def chinese_number(text: str) -> int | None:
    """十二 -> 12, 一百零八 -> 108, 三万 -> 30000, 二〇二五 -> 2025; None if not a number."""
    if not text or any(ch not in _CHINESE_DIGITS and ch not in _CHINESE_UNITS for ch in text):
        return None
    if all(ch in _CHINESE_DIGITS for ch in text):  # digit by digit: 二〇二五
        return int("".join(str(_CHINESE_DIGITS[ch]) for ch in text))
    total, section, digit = 0, 0, 0
    for ch in text:
        if ch in _CHINESE_DIGITS:
            digit = _CHINESE_DIGITS[ch]
        else:
            unit = _CHINESE_UNITS[ch]
            if unit >= 10_000:
                section = (section + digit) * unit
                total += section
                section = 0
            else:
                section += (digit or 1) * unit
            digit = 0
    return total + section + digit


def _names(text: str) -> list[str]:
    """Capitalised words, but not common words ("The", "However") and not a sentence's first
    word when it stands alone: "Boats must listen..." starts with a common noun, "Ewan
    Tallisker signs..." with a name whose second word is checked. ALL-CAPS words count."""
    names = []
    for match in _NAME_WORD.finditer(text):
        word = match.group(0)
        if len(word) < 2 or word == "I":
            continue
        if word.lower() in COMMON_WORDS and not word.isupper():
            continue  # "The" mid-sentence after a colon or in a title: still a common word
        starts = _SENTENCE_START.search(text[: match.start()]) is not None
        after = text[match.end() : match.end() + 2]
        if starts and not word.isupper() and not re.match(r"\s[A-Z]", after):
            continue
        names.append(word)
    return names
