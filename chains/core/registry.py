"""Which chains exist: every module in chains/ that defines DESCRIPTION and build_chain.

A chain module exposes `DESCRIPTION` (one line), `RETRIEVAL` (the mode, k and fetch_k it wants;
settings and flags override them) and `build_chain(settings, retriever, model) -> Runnable`.
`python -m app.new_chain NAME` writes one; it is found here without further registration.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable

import chains

if TYPE_CHECKING:
    from app.config import Settings

ChainBuilder = Callable[["Settings", BaseRetriever, BaseChatModel], Runnable]
DEFAULT_CHAIN = "rag"


@dataclass(frozen=True)
class ChainSpec:
    name: str
    description: str
    build: ChainBuilder
    retrieval: dict[str, Any] = field(default_factory=dict)


@cache
def all_chains() -> dict[str, ChainSpec]:
    found: dict[str, ChainSpec] = {}
    for module_info in pkgutil.iter_modules(chains.__path__):
        module = importlib.import_module(f"chains.{module_info.name}")
        if hasattr(module, "build_chain") and hasattr(module, "DESCRIPTION"):
            found[module_info.name] = ChainSpec(
                module_info.name,
                module.DESCRIPTION,
                module.build_chain,
                dict(getattr(module, "RETRIEVAL", {})),
            )
    # The default first, then alphabetical.
    return dict(sorted(found.items(), key=lambda item: (item[0] != DEFAULT_CHAIN, item[0])))


def get_chain(name: str) -> ChainSpec:
    try:
        return all_chains()[name]
    except KeyError:
        raise ValueError(f"Unknown chain {name!r}. Available: {', '.join(all_chains())}.") from None
