"""Which chains exist: a name, a one-line description and a builder with one signature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from langchain_core.language_models import BaseChatModel
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable

from chains import rag

if TYPE_CHECKING:
    from app.config import Settings

ChainBuilder = Callable[["Settings", BaseRetriever, BaseChatModel], Runnable]


@dataclass(frozen=True)
class ChainSpec:
    name: str
    description: str
    build: ChainBuilder


def _spec(name: str, module: ModuleType) -> ChainSpec:
    return ChainSpec(name, module.DESCRIPTION, module.build_chain)


CHAINS: dict[str, ChainSpec] = {spec.name: spec for spec in [_spec("rag", rag)]}


def get_chain(name: str) -> ChainSpec:
    try:
        return CHAINS[name]
    except KeyError:
        raise ValueError(
            f"Unknown chain {name!r}. Available: {', '.join(sorted(CHAINS))}."
        ) from None
