"""What can fail while one question is answered, as one message a person can act on."""

from __future__ import annotations

from app.config import Settings
from app.errors import ConfigError, LocalragError
from app.models import registry
from app.store.base import ChunkStore
from chains.core.budget import BudgetError


def explain_failure(
    exc: BaseException, settings: Settings, store: ChunkStore, chat_provider: str
) -> LocalragError | None:
    """The model server down, slow or without the model, the prompt refused, the store
    unreachable or rebuilt under the session. None for anything else (a bug, shown as it is)."""
    if isinstance(exc, LocalragError):
        return exc
    if isinstance(exc, BudgetError):
        return ConfigError(str(exc))
    return store.explain(exc) or registry.explain(exc, settings, chat_provider, "chat")
