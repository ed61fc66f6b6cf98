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


# A Han, kana or Hangul character carries about what 3 Latin letters do (as in the splitter):
# "pandas 怎么读取 CSV 文件？" is a Chinese question, "How long is 听雨桥?" an English one.
WIDE_SCRIPTS = {"CJK": 3, "HIRAGANA": 3, "KATAKANA": 3, "HANGUL": 3}


def weighted_scripts(text: str) -> Counter[str]:
    """Letters per script, wide scripts counted 3 times."""
    return Counter({s: n * WIDE_SCRIPTS.get(s, 1) for s, n in scripts_in(text).items()})


def covers(model_scripts: Collection[str] | None, text: str) -> bool:
    """True when most of `text` (by weighted letters) is in scripts the model was trained on
    (None: any)."""
    if model_scripts is None:
        return True
    weights = weighted_scripts(text)
    total = sum(weights.values())
    if not total:
        return True  # digits and symbols alone: nothing says the model cannot read them
    return sum(n for s, n in weights.items() if s in model_scripts) * 2 >= total
