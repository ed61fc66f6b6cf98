"""Opening the shared resources (app/session/resources.py): the chat model loads while the store
opens, and its failure still stops the start before anything is ingested. Run on the in-memory
store (VECTOR_STORE=tests.fakes), so nothing here needs Chroma."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel

import app.session.resources
from app.config import Settings
from app.errors import ProviderError
from app.models.embeddings import ModelEmbeddings
from app.models.registry import ChatCapabilities
from app.session.conversation import start_conversation
from app.store.base import ChunkStore
from tests.fakes import MemoryStore, fake_embeddings

pytestmark = pytest.mark.unit


def embeddings_only(settings: Settings) -> ModelEmbeddings:
    embeddings, _ = fake_embeddings(settings)
    return embeddings


def tiny_docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper feeds the gulls at dawn.")
    return docs


def memory_settings(tmp_path: Path, **fields: Any) -> Settings:
    return Settings(docs_dir=tiny_docs(tmp_path), vector_store="tests.fakes", **fields)


def test_the_chat_model_loads_while_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat model's loader waits until the store has been opened: opened one after the
    other (model first, as before), this would never finish."""
    store_opened = threading.Event()
    loaded_in: list[str] = []
    real_open_store = app.session.resources.open_store

    def open_store(settings: Settings, *args: Any) -> ChunkStore:
        store = real_open_store(settings, *args)
        store_opened.set()
        return store

    def load_chat_model(settings: Settings) -> tuple[Any, ChatCapabilities]:
        loaded_in.append(threading.current_thread().name)
        assert store_opened.wait(timeout=60), "the store was not opened meanwhile"
        model = GenericFakeChatModel(messages=iter(["Gulls."]))
        return model, ChatCapabilities("fake", "fake-chat", 2048, default_k=2)

    monkeypatch.setattr(app.session.resources, "open_store", open_store)
    monkeypatch.setattr(app.session.resources, "open_chat_model", load_chat_model)
    monkeypatch.setattr(app.session.resources, "open_embeddings", embeddings_only)
    settings = memory_settings(tmp_path, chat_context_tokens=2048)
    resources = app.session.resources.open_resources(settings)
    try:
        assert loaded_in
        assert loaded_in[0] != threading.main_thread().name
        assert isinstance(resources.store, MemoryStore)  # VECTOR_STORE chose the seam's fake
        assert resources.capabilities.name == "fake-chat"
        assert resources.collection.count() == 1  # the empty store got the docs first
        assert resources.keyword_index.sources() == [f"{resources.library.sources[0].label}/a.txt"]
        conversation = start_conversation(resources, "rag")
        assert conversation.chain is not None
    finally:
        resources.close()


def test_a_chat_model_that_fails_stops_the_start_before_an_ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingested: list[Any] = []

    def missing_model(settings: Settings) -> Any:
        raise ProviderError("Ollama does not have the model 'llama3.2'.")

    monkeypatch.setattr(app.session.resources, "open_chat_model", missing_model)
    monkeypatch.setattr(app.session.resources, "open_embeddings", embeddings_only)
    monkeypatch.setattr(
        app.session.resources, "ingest_first_run", lambda *a, **k: ingested.append(a)
    )
    with pytest.raises(ProviderError, match="does not have the model"):
        app.session.resources.open_resources(memory_settings(tmp_path))
    assert ingested == []
