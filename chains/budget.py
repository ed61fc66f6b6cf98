"""Fit system prompt, history, context and question into the model's window, minus a reserve
for the answer. The system prompt is never cut."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

TokenCounter = Callable[[str], int]
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message


def token_counter(model: BaseChatModel) -> TokenCounter:
    """The model's own tokenizer when it runs in-process; otherwise a cautious estimate.

    Never LangChain's default `get_num_tokens`: it loads GPT-2's tokenizer from the hub.
    """
    tokenize = getattr(getattr(model, "client", None), "tokenize", None)
    if callable(tokenize):
        return lambda text: len(tokenize(text.encode("utf-8"), add_bos=False, special=True))
    # English averages about 4 characters per token; 3 leaves room for numbers and names.
    return lambda text: len(text) // 3 + 1


def context_window(model: BaseChatModel, default: int = 2048) -> int:
    for name in ("num_ctx", "n_ctx"):
        value = getattr(model, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


@dataclass(frozen=True)
class Fitted:
    history: list[BaseMessage]
    context: list[Document]
    dropped_history: int
    dropped_context: int


def fit_budget(
    *,
    budget: int,
    count: TokenCounter,
    fixed: str,
    history: list[BaseMessage],
    context: list[Document],
    render_context: Callable[[list[Document]], str],
) -> Fitted:
    """Drop, in this order, until everything fits: the oldest history (keeping the last
    exchange), the lowest-ranked chunks (keeping the best one), the last exchange, and finally
    the tail of the best chunk. `fixed` is what is never cut: system prompt and question."""
    history, context = list(history), list(context)
    base = count(fixed) + MESSAGE_OVERHEAD * 2

    def used() -> int:
        turns = sum(count(str(m.content)) + MESSAGE_OVERHEAD for m in history)
        return base + turns + count(render_context(context))

    dropped_history = dropped_context = 0
    while used() > budget and len(history) > 2:
        history = history[2:]
        dropped_history += 2
    while used() > budget and len(context) > 1:
        context.pop()
        dropped_context += 1
    while used() > budget and history:
        dropped_history += len(history)
        history = []
    if used() > budget and context:
        best = context[0]
        text = best.page_content
        while text and used() > budget:
            text = text[: int(len(text) * 0.8)]
            context = [Document(id=best.id, page_content=text, metadata=best.metadata)]
        if not text:
            context, dropped_context = [], dropped_context + 1
    return Fitted(history, context, dropped_history, dropped_context)
