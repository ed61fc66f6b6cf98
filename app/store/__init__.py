"""Storage: the vector store behind one seam (`base.py`), the library record, the keyword index
and the writer lock. `open_store` opens the store VECTOR_STORE names: the module
`app/store/<name>.py` (or a dotted module path of your own), whose `open_store(settings,
notify)` returns a `ChunkStore`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.config import Settings
    from app.store.base import ChunkStore


def open_store(settings: Settings, notify: Callable[[str], None] = lambda line: None) -> ChunkStore:
    name = settings.vector_store
    path = name if "." in name else f"app.store.{name}"
    try:
        valid = all(part.isidentifier() for part in path.split("."))
        module = importlib.import_module(path) if valid else None
    except ModuleNotFoundError as exc:
        if exc.name is None or not path.startswith(exc.name):
            raise  # the store's own dependency is missing: say which
        module = None
    if module is None or not hasattr(module, "open_store"):
        raise ConfigError(
            f"VECTOR_STORE={name}: there is no module {path} with an open_store(settings, "
            "notify); the store that ships is chroma (app/store/chroma.py)."
        )
    store: ChunkStore = module.open_store(settings, notify)
    return store
