"""A fast deterministic embedding provider for benchmarks of the app's own work.

`python benchmarks/library_scale.py` runs `python -m app.ingest` through `run_ingest` below with
EMBEDDING_PROVIDER=hashing: the provider is registered in the child process before app.ingest
starts, exactly as a provider module in `app.models.registry.PROVIDERS` is. Each text becomes a
384-d unit vector of hashed word counts (no model, ~0.1 ms a chunk), so what a benchmark times
is discovery, parsing, splitting, the store and the bookkeeping, not a model.
"""

from __future__ import annotations

import runpy
import sys
import zlib

import numpy as np
from langchain_core.embeddings import Embeddings

from app.config import Settings
from app.errors import ConfigError, LocalragError
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings
from app.models.registry import Availability, ChatCapabilities, Notify, Role

NAME = "hashing"
MODEL = "hash-384"
DIMENSION = 384


class HashingEmbeddings(Embeddings):
    def _vector(self, text: str) -> list[float]:
        buckets = [zlib.crc32(word.encode()) % DIMENSION for word in text.lower().split()]
        counts = np.bincount(buckets or [0], minlength=DIMENSION).astype(np.float32)
        return (counts / (np.linalg.norm(counts) or 1.0)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


class HashingProvider:
    name = NAME

    def model_name(self, settings: Settings, role: Role) -> str:
        return MODEL

    def model_setting(self, role: Role) -> str:
        return "embedding_provider"

    def availability(self, settings: Settings, role: Role) -> Availability:
        if role != "embedding":
            return Availability(False, MODEL, "the hashing provider only embeds")
        return Availability(True, MODEL, "EMBEDDING_PROVIDER=hashing (benchmark)")

    def embeddings(self, settings: Settings, notify: Notify) -> ModelEmbeddings:
        info = EmbeddingModelInfo(NAME, MODEL, dimension=DIMENSION)
        return ModelEmbeddings(info, HashingEmbeddings, batch_size=64)

    def chat_model(self, settings: Settings, notify: Notify) -> tuple[object, ChatCapabilities]:
        raise ConfigError("the hashing provider has no chat model")

    def chat_capabilities(self, settings: Settings) -> ChatCapabilities:
        return ChatCapabilities(NAME, MODEL, 2048, 4)

    def prepare(self, settings: Settings, notify: Notify) -> None:
        return None

    def explain(self, exc: BaseException, settings: Settings, role: Role) -> LocalragError | None:
        return None

    def settings_for(self, model: str) -> str:
        return "EMBEDDING_PROVIDER=hashing"


PROVIDER = HashingProvider()


def register() -> None:
    from app.models.registry import PROVIDERS

    PROVIDERS[NAME] = __name__ if __name__ != "__main__" else "benchmarks.support.hashing_embedder"


def run_ingest() -> None:
    """`python -m benchmarks.support.hashing_embedder ARGS` = `python -m app.ingest ARGS`, with the
    hashing provider registered."""
    register()
    sys.argv[0] = "app.ingest"
    runpy.run_module("app.ingest", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    run_ingest()
