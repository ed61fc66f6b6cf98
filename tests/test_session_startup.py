"""Opening a session (app/session/conversation.py): the chat model loads while the store
opens, and its failure still stops the session before anything is ingested."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import GenericFakeChatModel

import app.session.conversation
from app.config import Settings
from app.errors import ProviderError
from app.models.chat_model import ChatModelInfo
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings

pytestmark = pytest.mark.unit


def fake_embeddings(settings: Settings) -> ModelEmbeddings:
    return ModelEmbeddings(
        EmbeddingModelInfo("fake", "fake-16"),
        lambda: DeterministicFakeEmbedding(size=16),
        batch_size=8,
    )


def tiny_docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The lighthouse keeper feeds the gulls at dawn.")
    return docs


def test_the_chat_model_loads_while_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat model's loader waits until the store has been connected: opened one after the
    other (model first, as before), this would never finish."""
    store_connected = threading.Event()
    loaded_in: list[str] = []
    real_connect = app.session.conversation.connect

    def connect(settings: Settings) -> Any:
        client = real_connect(settings)
        store_connected.set()
        return client

    def load_chat_model(settings: Settings) -> tuple[Any, ChatModelInfo]:
        loaded_in.append(threading.current_thread().name)
        assert store_connected.wait(timeout=60), "the store was not opened meanwhile"
        model = GenericFakeChatModel(messages=iter(["Gulls."]))
        return model, ChatModelInfo("fake", "fake-chat", 2048, default_k=2)

    monkeypatch.setattr(app.session.conversation, "connect", connect)
    monkeypatch.setattr(app.session.conversation, "chat_model_for", load_chat_model)
    monkeypatch.setattr(app.session.conversation, "embeddings_for", fake_embeddings)
    settings = Settings(docs_dir=tiny_docs(tmp_path), chat_context_tokens=2048)
    session = app.session.conversation.open_session(settings, "rag", [])
    assert loaded_in
    assert loaded_in[0] != threading.main_thread().name
    assert session.chain is not None
    assert session.collection.count() == 1  # the empty store got the docs first


def test_a_chat_model_that_fails_stops_the_session_before_an_ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingested: list[Path] = []

    def missing_model(settings: Settings) -> Any:
        raise ProviderError("Ollama does not have the model 'llama3.2'.")

    monkeypatch.setattr(app.session.conversation, "chat_model_for", missing_model)
    monkeypatch.setattr(app.session.conversation, "embeddings_for", fake_embeddings)
    monkeypatch.setattr(
        app.session.conversation, "ingest_first_run", lambda *a: ingested.append(a[0])
    )
    with pytest.raises(ProviderError, match="does not have the model"):
        app.session.conversation.open_session(Settings(docs_dir=tiny_docs(tmp_path)), "rag", [])
    assert ingested == []
