"""Which writing systems a text is in, and whether an embedding model was trained on them.

A script is the first word of each letter's Unicode name (LATIN, CJK, HIRAGANA, HANGUL, THAI,
CYRILLIC...), so no table has to be kept up to date.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Collection


def scripts_in(text: str) -> Counter[str]:
    """Letters per script; digits, punctuation and spaces are in no script."""
    return Counter(
        unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
        for ch in text
        if unicodedata.category(ch).startswith("L")
    )


def covers(model_scripts: Collection[str] | None, text: str) -> bool:
    """True when most letters of `text` are in scripts the model was trained on (None: any)."""
    if model_scripts is None:
        return True
    counts = scripts_in(text)
    letters = sum(counts.values())
    if not letters:
        return True  # digits and symbols alone: nothing says the model cannot read them
    return sum(n for s, n in counts.items() if s in model_scripts) * 2 >= letters
