"""What the app says when the documents lack the answer, in one place: the prompts ask the model
for DONT_KNOW, the chain says NOT_FOUND itself when retrieval found nothing relevant, and the
evaluation recognises both (`says_unknown`)."""

from __future__ import annotations

import re

from app.text.writing_systems import dominant_language

# What every shipped prompt asks the model to reply when the sources lack the answer.
DONT_KNOW = "I don't know based on your documents."
DONT_KNOW_RULE = (
    f'If the sources do not contain the answer, reply "{DONT_KNOW}" in the language of the '
    "question, and do not guess."
)
# What the chain answers, without asking the model, when nothing reached the threshold.
NOT_FOUND = "I could not find this in your documents. The nearest passages are listed below."
NOT_FOUND_BY_LANGUAGE = {
    "zh": "在你的文档中没有找到答案。下面列出的是最接近的段落。",
    "ja": "ドキュメントの中に答えが見つかりませんでした。最も近い箇所を下に示します。",
    "ko": "문서에서 답을 찾지 못했습니다. 가장 가까운 구절을 아래에 표시합니다.",
}
# "I don't know" as models write it in the languages the app answers in: English, Chinese
# (simplified and traditional), Japanese, Korean.
UNKNOWN = re.compile(
    r"don't know|don\u2019t know|do not know|not found|could not find"
    r"|不知道|无法回答|無法回答|没有找到|沒有找到|找不到|未找到|没有提到|沒有提到|未提及|没有相关|沒有相關"
    r"|わかりません|分かりません|見つかりません|모르겠습니다|모릅니다|찾지 못했습니다",
    re.IGNORECASE,
)


def not_found_message(question: str) -> str:
    """NOT_FOUND in the question's language."""
    return NOT_FOUND_BY_LANGUAGE.get(dominant_language(question), NOT_FOUND)


def says_unknown(answer: str) -> bool:
    """The answer says the documents lack it: the chain's own message, or the model's words."""
    text = answer.strip()
    return text.startswith((NOT_FOUND, *NOT_FOUND_BY_LANGUAGE.values())) or bool(
        UNKNOWN.search(text)
    )
