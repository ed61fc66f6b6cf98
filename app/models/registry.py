"""Which provider serves each model, and what the model can do.

A provider is one module in `app/models/` with a `PROVIDER` object (see `Provider`), listed in
`PROVIDERS`. It builds the embeddings and the chat model, says whether it can serve a model now
(for `auto`), explains its own failures, and hands back the chat model's capabilities, so the
rest of the app asks the capabilities, never the provider's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Literal, Protocol

from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError
from app.store.library import ModelAdvice

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from app.models.embeddings import ModelEmbeddings

Role = Literal["embedding", "chat"]
Notify = Callable[[str], None]

# Provider name -> module. A new provider is a module with a PROVIDER and a line here.
PROVIDERS = {
    "ollama": "app.models.ollama",
    "openai": "app.models.openai",
    "local": "app.models.local",
}
# `auto` takes the first of these that can serve the model now. `openai` only when
# OPENAI_BASE_URL is set (the user pointed the app at a server); the embedded models always can.
AUTO_ORDER = ("openai", "ollama", "local")


@dataclass(frozen=True)
class ChatCapabilities:
    """What the rest of the app needs to know of a chat model, whoever serves it."""

    provider: str
    name: str
    context_window: int  # tokens the prompt and the answer share
    default_k: int  # chunks per question when RETRIEVAL_K is not set
    # Runs in this process and must answer one question at a time (llama.cpp: one context
    # called from two threads aborts the interpreter).
    serialized: bool = False
    seeded: bool = False  # takes a sampling seed per generation (for reproducible evaluations)
    # How it answers when ANSWER_MODE is auto: "generate" (it writes, the support check
    # replaces what the sources do not hold) or "extract" (the sources' best sentences: a
    # model too small to write answers that hold up; docs/evaluation.md has the measurement).
    answering: Literal["generate", "extract"] = "generate"

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.name}"


@dataclass(frozen=True)
class Availability:
    """Whether a provider can serve a role's model now, and the line that says why."""

    ok: bool
    model: str
    reason: str
    fix: str = ""  # when not ok: what the user can do


class Provider(Protocol):
    name: str

    def model_name(self, settings: Settings, role: Role) -> str:
        """The model the settings name for this role."""
        ...

    def model_setting(self, role: Role) -> str:
        """The settings field that names the model for this role."""
        ...

    def availability(self, settings: Settings, role: Role) -> Availability: ...

    def embeddings(self, settings: Settings, notify: Notify) -> ModelEmbeddings: ...

    def chat_model(
        self, settings: Settings, notify: Notify
    ) -> tuple[BaseChatModel, ChatCapabilities]: ...

    def chat_capabilities(self, settings: Settings) -> ChatCapabilities:
        """Known before the model loads (a server is not asked)."""
        ...

    def prepare(self, settings: Settings, notify: Notify) -> None:
        """What a first question would otherwise wait for, made once now (cached)."""
        ...

    def explain(self, exc: BaseException, settings: Settings, role: Role) -> LocalragError | None:
        """A failure of this provider as one message a person can act on; None if not its own."""
        ...

    def settings_for(self, model: str) -> str:
        """The settings that select `model` (a name this provider serves)."""
        ...


@cache
def _load(module: str) -> Provider:
    provider: Provider = importlib.import_module(module).PROVIDER
    return provider


def provider(name: str) -> Provider:
    """The registered provider of that name; a ConfigError lists the others."""
    if name not in PROVIDERS:
        raise ConfigError(f"Unknown provider '{name}': use auto or one of {', '.join(PROVIDERS)}.")
    return _load(PROVIDERS[name])


@dataclass(frozen=True)
class ProviderChoice:
    provider: Provider
    model: str
    reason: str  # one line for the user: which and why


def choose(settings: Settings, role: Role) -> ProviderChoice:
    """Resolve `auto` (AUTO_ORDER); an explicit provider is checked up front and never falls
    back: if it cannot serve the model, ProviderError names the fix."""
    requested = settings.embedding_provider if role == "embedding" else settings.chat_provider
    setting = f"{role.upper()}_PROVIDER"
    if requested != "auto":
        chosen = provider(requested)
        found = chosen.availability(settings, role)
        if not found.ok:
            raise ProviderError(". ".join(part for part in (found.reason, found.fix) if part))
        return ProviderChoice(chosen, found.model, found.reason or f"{setting}={requested}")
    reasons: list[str] = []
    for name in AUTO_ORDER:
        candidate = provider(name)
        found = candidate.availability(settings, role)
        if found.ok:
            why = "; ".join(r for r in [*reasons, found.reason] if r)
            return ProviderChoice(candidate, found.model, why)
        if found.reason:
            reasons.append(found.reason)
    raise ProviderError(f"No provider can serve the {role} model: " + "; ".join(reasons))


def build_embeddings(settings: Settings, notify: Notify) -> tuple[ModelEmbeddings, str]:
    """The embedding model, and the line that says which and why."""
    choice = choose(settings, "embedding")
    return choice.provider.embeddings(settings, notify), choice.reason


def build_chat_model(
    settings: Settings, notify: Notify
) -> tuple[BaseChatModel, ChatCapabilities, str]:
    """The chat model loaded, its capabilities, and the line that says which and why."""
    choice = choose(settings, "chat")
    model, capabilities = choice.provider.chat_model(settings, notify)
    return model, capabilities, choice.reason


def prepare_chat(settings: Settings, notify: Notify) -> None:
    choose(settings, "chat").provider.prepare(settings, notify)


def explain(
    exc: BaseException, settings: Settings, provider_name: str, role: Role
) -> LocalragError | None:
    if provider_name not in PROVIDERS:
        return None
    return provider(provider_name).explain(exc, settings, role)


def advice(settings: Settings) -> Callable[[str], ModelAdvice]:
    """For a library another embedding model made (`provider/name`): the settings that select
    that model, and why its provider cannot serve it now (when it cannot)."""

    def advise(model: str) -> ModelAdvice:
        name, _, model_name = model.partition("/")
        if name not in PROVIDERS:
            return ModelAdvice(f"EMBEDDING_PROVIDER={name}")
        owner = provider(name)
        keep = owner.settings_for(model_name)
        wanted = settings.model_copy(update={owner.model_setting("embedding"): model_name})
        found = owner.availability(wanted, "embedding")
        if found.ok:
            return ModelAdvice(keep)
        # The fix goes mid-sentence ("To use your library, start it ..."), without the
        # alternative of another provider (which would not see the library either).
        fix = found.fix.split(", or use ")[0].rstrip(".")
        fix = fix[:1].lower() + fix[1:] if fix else f"set {keep}"
        return ModelAdvice(keep, found.reason or "its provider is not set up", fix)

    return advise
