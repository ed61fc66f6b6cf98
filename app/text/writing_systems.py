"""Which writing systems a text is in, and whether an embedding model was trained on them.

A script is the first word of each letter's Unicode name (LATIN, CJK, HIRAGANA, HANGUL, THAI,
CYRILLIC...), so no table has to be kept up to date.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Collection

# Character classes (for regular expressions), the one place that lists these ranges.
# Han (with extension A and compatibility ideographs), kana, CJK symbols and full-width forms.
HAN_KANA_WIDE = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
HANGUL_SYLLABLES = "\uac00-\ud7af"
HANGUL_ALL = "\u1100-\u11ff\u3130-\u318f" + HANGUL_SYLLABLES
HAN_KANA = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, Han (with its
# extension A, compatibility and supplementary planes) and Hangul (whose spaces separate
# phrases with their particles attached, so bigrams help there too).
UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
# One of these carries about what 3 Latin characters do (a Chinese character is one MiniLM word
# piece, an English one about a fifth of one).
WIDE_CHARACTER = re.compile(f"[{HAN_KANA_WIDE}{HANGUL_SYLLABLES}]")


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


# Scripts whose text has no spaces between words (Han, kana, Hangul: the CJK family) and the
# language a question in them is answered in.
CJK_LANGUAGE = {"CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja", "HANGUL": "ko"}


def dominant_language(text: str) -> str:
    """ "zh", "ja" or "ko" when most of the text (by weighted letters) is in that CJK language,
    else "" (a spaced script). Any kana makes Han text Japanese."""
    weights = weighted_scripts(text)
    if weights["HIRAGANA"] or weights["KATAKANA"]:
        weights["HIRAGANA"] = sum(weights.pop(s, 0) for s in ("HIRAGANA", "KATAKANA", "CJK"))
    if not weights:
        return ""
    top = max(weights, key=lambda s: weights[s])
    return CJK_LANGUAGE.get(top, "")
