"""Fit what goes to the model into its context window, minus a reserve for what it writes:
the answer prompt (system prompt, history, sources, question) and the follow-up rewrite prompt
(its instructions, history, question). The oldest history goes first; the system prompt and
the question are never cut.

Where the numbers come from: the window from the model itself (`profile`, `num_ctx`, `n_ctx`,
an in-process llama.cpp context) or else from settings (CHAT_CONTEXT_TOKENS); token counts from
the model's own tokenizer where it has one that needs no download, else `estimate_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage

from app.text.writing_systems import HAN_KANA_WIDE, HANGUL_ALL

TokenCounter = Callable[[str], int]
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message


class BudgetError(ValueError):
    """The window is unknown, too small for the answer reserve, or the question alone does not
    fit: a setting or the question has to change, retrying will not help."""


# Han and kana; Hangul: byte-level tokenizers of English-centred models spend up to a token per
# UTF-8 byte (3) on a character they do not know.
_HAN_KANA = re.compile(f"[{HAN_KANA_WIDE}]")
_HANGUL = re.compile(f"[{HANGUL_ALL}]")


def estimate_tokens(text: str) -> int:
    """A cautious token count for a model whose tokenizer we cannot run, by script: ASCII
    averages about 4 characters per token in English (3 leaves room for numbers and names);
    a Han or kana character or CJK punctuation 2 tokens, a Hangul syllable 3, any other
    character 1. English counts exactly as it did before this estimate knew scripts.

    Measured with SmolLM2's tokenizer (an English-centred byte-level BPE, the worst case here):
    the Chinese sample passages take 1.73 tokens per character, Korean 2.0, Russian 0.76,
    English 0.23; counting `len // 3` would have put the Chinese at a fifth of its tokens, and
    Ollama cuts the start of a prompt that overflows: the system prompt."""
    ascii_chars = sum(ch.isascii() for ch in text)
    han_kana = len(_HAN_KANA.findall(text))
    hangul = len(_HANGUL.findall(text))
    other = len(text) - ascii_chars - han_kana - hangul
    return ascii_chars // 3 + 2 * han_kana + 3 * hangul + other + 1


def token_counter(model: BaseLanguageModel) -> TokenCounter:
    """The model's own tokenizer when it has one that runs here without downloading anything;
    otherwise `estimate_tokens`.

    Never LangChain's default `get_num_tokens`: it loads GPT-2's tokenizer from the hub (and
    integrations that only override `get_token_ids`, like OpenAI's, fetch their encodings).
    """
    tokenize = getattr(getattr(model, "client", None), "tokenize", None)
    if callable(tokenize):  # llama.cpp in-process (ChatLlamaCpp's client is a llama_cpp.Llama)
        return lambda text: len(tokenize(text.encode("utf-8"), add_bos=False, special=True))
    custom = getattr(model, "custom_get_token_ids", None)
    if callable(custom):  # a tokenizer the user handed to the model
        return lambda text: len(custom(text))
    if type(model).get_num_tokens is not BaseLanguageModel.get_num_tokens:
        return model.get_num_tokens  # the model's class counts its own tokens
    return estimate_tokens


def reported_context_window(model: BaseChatModel) -> int | None:
    """The window the model reports, in tokens, or None: its LangChain `profile`
    (`max_input_tokens`), an Ollama `num_ctx`, a llama.cpp `n_ctx` field or context."""
    profile = getattr(model, "profile", None)
    candidates = [profile.get("max_input_tokens") if isinstance(profile, dict) else None]
    candidates += [getattr(model, name, None) for name in ("num_ctx", "n_ctx")]
    n_ctx = getattr(getattr(model, "client", None), "n_ctx", None)
    if callable(n_ctx):
        candidates.append(n_ctx())
    return next((v for v in candidates if isinstance(v, int) and v > 0), None)


def context_window(model: BaseChatModel, configured: int | None = None) -> int:
    """The window the budget fits into: what the model reports, else `configured`
    (CHAT_CONTEXT_TOKENS); the smaller when both are known. Never a silent guess."""
    reported = reported_context_window(model)
    if reported is not None and configured is not None:
        return min(reported, configured)
    window = reported if reported is not None else configured
    if window is None:
        raise BudgetError(
            f"The chat model {type(model).__name__} does not report its context window: set "
            "CHAT_CONTEXT_TOKENS to the window of the model you use (for example 8192), so "
            "long conversations and sources are fitted to it."
        )
    return window


def prompt_budget(window: int, reserve: int) -> int:
    """Tokens left for a prompt when `reserve` are kept for the model's reply."""
    if window - reserve < 256:
        raise BudgetError(
            f"MAX_ANSWER_TOKENS ({reserve}) leaves {max(window - reserve, 0)} of the chat "
            f"model's {window}-token context window for the prompt; keep at least 256: lower "
            "MAX_ANSWER_TOKENS or use a larger window."
        )
    return window - reserve


@dataclass(frozen=True)
class Fitted:
    history: list[BaseMessage]
    context: list[Document]
    dropped_history: int
    dropped_context: int
    tokens: int  # what the fitted prompt counts


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
    the tail of the best chunk. `fixed` is what is never cut: system prompt and question; when
    it alone does not fit, BudgetError says so."""
    history, context = list(history), list(context)
    base = count(fixed) + MESSAGE_OVERHEAD * 2
    if base > budget:
        raise BudgetError(
            f"The question is too long for the chat model: with the instructions it needs "
            f"{base} tokens, and {budget} are left once the answer's share is reserved. "
            "Shorten the question (or lower MAX_ANSWER_TOKENS)."
        )
    history_tokens = [count(str(m.content)) + MESSAGE_OVERHEAD for m in history]

    def used() -> int:
        return base + sum(history_tokens) + (count(render_context(context)) if context else 0)

    dropped_history = dropped_context = 0
    while used() > budget and len(history) > 2:
        history, history_tokens = history[2:], history_tokens[2:]
        dropped_history += 2
    while used() > budget and len(context) > 1:
        context.pop()
        dropped_context += 1
    while used() > budget and history:
        dropped_history += len(history)
        history, history_tokens = [], []
    if used() > budget and context:
        best = context[0]
        text = best.page_content
        while text and used() > budget:
            text = text[: int(len(text) * 0.8)]
            context = [Document(id=best.id, page_content=text, metadata=best.metadata)]
        if not text:
            context, dropped_context = [], dropped_context + 1
    return Fitted(history, context, dropped_history, dropped_context, used())
