"""Source text cut into the units an answer can quote: sentences of prose, rows of a table,
lines of a list or a header block. PDF text keeps its hard line breaks inside sentences, so
lines are joined again unless they look like units of their own."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.text.writing_systems import HAN_KANA

# A sentence ends at . ! ? (or their full-width forms) before a space and a capital, digit,
# quote or bracket; full-width ones end a sentence wherever they are.
_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"'\u201d\u2019)]*\s+(?=[\"'\u201c\u2018(\[A-Z0-9])|(?<=[。！？；])"
)
# Words after which a full stop does not end a sentence.
_ABBREVIATIONS = re.compile(
    r"(?:\b(?:Dr|Mr|Mrs|Ms|Prof|St|No|Nos|Vol|Fig|pp|approx|ca|e\.g|i\.e|etc|vs)|\b[A-Z])\.$"
)
_HEADING_CHARS = 60  # a shorter line without closing punctuation is a unit of its own
_KEY_VALUE = re.compile(r"^[\w][\w .'-]{0,30}:\s")
_CLOSED = re.compile(f"[.!?:;。！？；…][\"'\u201d\u2019)]*$|[{HAN_KANA}]$")


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a text; `heading`: a title or signature line (its lines joined
    with commas), which names a topic or a person more often than it answers anything."""

    text: str
    heading: bool = False


def split_sentences(text: str) -> list[str]:
    """The quotable units of `text`, in order, stripped; empty ones dropped."""
    return [unit.text for unit in split_units(text)]


def split_units(text: str) -> list[Unit]:
    """`split_sentences`, saying which units are headings."""
    units: list[Unit] = []

    def prose_done(prose: list[str]) -> None:
        units.extend(Unit(s) for s in _sentences(" ".join(prose)))
        prose.clear()

    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        prose: list[str] = []
        heading: list[str] = []
        for index, line in enumerate(lines):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if _heading(line, following):
                prose_done(prose)
                heading.append(line)  # a signature's lines belong together: name, title
                continue
            if heading:
                units.append(Unit(", ".join(heading), heading=True))
                heading = []
            if _own_unit(line):
                prose_done(prose)
                units.append(Unit(line))
            else:
                prose.append(line)
                if _CLOSED.search(line):
                    prose_done(prose)
        prose_done(prose)
        if heading:
            units.append(Unit(", ".join(heading), heading=True))
    return [u for u in units if u.text]


def _own_unit(line: str) -> bool:
    """A table row, a key: value line or a bullet."""
    return " | " in line or bool(_KEY_VALUE.match(line)) or line[:2] in ("- ", "* ", "\u2022 ")


def _heading(line: str, following: str) -> bool:
    """A short line that does not end a sentence, starts like a title and is not continued
    by the next line (which then starts anew): a heading or a signature line. A PDF's
    short last line of a paragraph continues with a lower-case word."""
    if _own_unit(line) or len(line) >= _HEADING_CHARS or _CLOSED.search(line):
        return False
    starts_anew = not following or not following[0].islower()
    return (line[0].isupper() or line[0].isdigit()) and starts_anew


def _sentences(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].rstrip()
        if _ABBREVIATIONS.search(candidate):
            continue  # "Dr. Ilse Farrowby": not an end
        pieces.append(candidate)
        start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]
