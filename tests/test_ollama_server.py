"""The Ollama test server, driven through the real clients: ollama.Client and langchain_ollama."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
from langchain_ollama import ChatOllama, OllamaEmbeddings

from tests.ollama_server import (
    CONTEXT_LENGTH_ERROR,
    OllamaTestServer,
    bag_of_words_embedding,
    closed_port,
    estimate_tokens,
    fake_embedding,
    split_reply,
)

pytestmark = pytest.mark.integration

REPLY = "Paris is the capital  of France.\n"
DIM = 64


@pytest.fixture
def server() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(embedding_dim=DIM, context_length=64, reply=REPLY) as srv:
        yield srv


@pytest.fixture
def client(server: OllamaTestServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url) as c:
        yield c


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- helpers ---------------------------------------------------------------------------------


def test_split_reply_keeps_whitespace_with_the_next_word() -> None:
    assert split_reply("Hello big  world\n") == ["Hello", " big", "  world\n"]
    assert split_reply("  lead") == ["  lead"]
    assert split_reply("   ") == ["   "]
    assert split_reply("") == []
    assert "".join(split_reply(REPLY)) == REPLY


def test_estimate_tokens_is_characters_over_four_rounded_up() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


def test_bag_of_words_embedding_rewards_shared_words() -> None:
    doc = bag_of_words_embedding("The capital of France is Paris.", DIM)
    near = bag_of_words_embedding("capital of France", DIM)
    far = bag_of_words_embedding("Photosynthesis in green plants", DIM)
    assert math.isclose(sum(v * v for v in doc), 1.0)
    assert _cosine(doc, near) > _cosine(doc, far) + 0.3


def test_closed_port_refuses_connections() -> None:
    with ollama.Client(host=f"http://127.0.0.1:{closed_port()}", timeout=2) as c:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="Failed to connect to Ollama"):
            c.list()
    assert time.monotonic() - started < 1.5


# --- listing and metadata --------------------------------------------------------------------


def test_version_root_and_unknown_route(server: OllamaTestServer) -> None:
    assert httpx.get(f"{server.base_url}/api/version").json() == {"version": "0.12.0"}
    assert httpx.get(f"{server.base_url}/").text == "Ollama is running"
    missing = httpx.get(f"{server.base_url}/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")


def test_list_reports_configured_models_with_tags(
    server: OllamaTestServer, client: ollama.Client
) -> None:
    listed = client.list()
    assert [m.model for m in listed.models] == ["nomic-embed-text:latest", "llama3.2:latest"]
    embed, chat = listed.models
    assert embed.details is not None
    assert embed.details.family == "nomic-bert"
    assert chat.details is not None
    assert chat.details.quantization_level == "Q4_K_M"
    assert embed.size
    assert embed.digest
    assert embed.modified_at is not None
    raw = httpx.get(f"{server.base_url}/api/tags").json()["models"][0]
    assert raw["name"] == raw["model"] == "nomic-embed-text:latest"
    assert [r.path for r in server.requests] == ["/api/tags", "/api/tags"]


@pytest.mark.parametrize("name", ["llama3.2", "llama3.2:latest"])
def test_show_accepts_name_with_or_without_latest(client: ollama.Client, name: str) -> None:
    shown = client.show(name)
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 131072
    assert shown.modelfile
    assert shown.template
    assert shown.parameters
    assert shown.details is not None
    assert shown.details.family == "llama"


def test_show_embedding_model_reports_configured_context(client: ollama.Client) -> None:
    shown = client.show("nomic-embed-text")
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["nomic-bert.context_length"] == 64
    assert shown.modelinfo["nomic-bert.embedding_length"] == DIM


def test_show_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.show("mistral")
    assert info.value.status_code == 404
    assert info.value.error == "model 'mistral' not found"


# --- /api/embed ------------------------------------------------------------------------------


def test_embed_vectors_have_configured_dimension_and_are_deterministic(
    server: OllamaTestServer, client: ollama.Client
) -> None:
    first = client.embed("nomic-embed-text", ["alpha", "beta"])
    second = client.embed("nomic-embed-text:latest", "alpha")
    alpha, beta = (list(v) for v in first.embeddings)
    assert len(alpha) == len(beta) == DIM
    assert list(second.embeddings[0]) == alpha == fake_embedding("alpha", DIM)
    assert math.isclose(sum(v * v for v in alpha), 1.0)
    assert abs(_cosine(alpha, beta)) < 0.5
    assert first.model == "nomic-embed-text"
    assert first.prompt_eval_count == estimate_tokens("alpha") + estimate_tokens("beta")
    bodies = [r.json for r in server.requests_to("/api/embed")]
    assert bodies == [
        {"model": "nomic-embed-text", "input": ["alpha", "beta"]},
        {"model": "nomic-embed-text:latest", "input": "alpha"},
    ]


def test_embed_dimensions_truncates_and_renormalises(client: ollama.Client) -> None:
    vector = list(client.embed("nomic-embed-text", "alpha", dimensions=8).embeddings[0])
    assert len(vector) == 8
    assert math.isclose(sum(v * v for v in vector), 1.0)


def test_langchain_embeddings_send_null_options_and_get_vectors(
    server: OllamaTestServer,
) -> None:
    embedder = OllamaEmbeddings(
        model="nomic-embed-text", base_url=server.base_url, validate_model_on_init=True
    )
    vectors = embedder.embed_documents(["one", "two", "one"])
    assert [len(v) for v in vectors] == [DIM, DIM, DIM]
    assert vectors[0] == vectors[2] != vectors[1]
    assert embedder.embed_query("one") == vectors[0]
    (first, *_) = server.requests_to("/api/embed")
    assert first.json is not None
    assert first.json["input"] == ["one", "two", "one"]
    # OllamaEmbeddings sends every option, unset ones as null: the server must not trip on them.
    assert first.json["options"]["num_ctx"] is None


def test_over_long_input_is_400_with_the_context_length_message(
    server: OllamaTestServer, client: ollama.Client
) -> None:
    fits, too_long = "x" * (4 * 64), "x" * (4 * 64 + 1)
    assert len(client.embed("nomic-embed-text", [fits]).embeddings) == 1
    with pytest.raises(ollama.ResponseError) as info:
        client.embed("nomic-embed-text", ["short", too_long])
    assert (info.value.status_code, info.value.error) == (400, CONTEXT_LENGTH_ERROR)


def test_num_ctx_lowers_the_embed_limit(server: OllamaTestServer) -> None:
    embedder = OllamaEmbeddings(model="nomic-embed-text", base_url=server.base_url, num_ctx=8)
    assert len(embedder.embed_documents(["x" * 32])) == 1
    with pytest.raises(ollama.ResponseError, match="exceeds the context length") as info:
        embedder.embed_documents(["x" * 33])
    assert info.value.status_code == 400


def test_embed_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.embed("all-minilm", "text")
    assert info.value.status_code == 404
    assert info.value.error == 'model "all-minilm" not found, try pulling it first'


# --- /api/chat -------------------------------------------------------------------------------


def test_client_chat_stream_sends_one_chunk_per_piece_then_done(
    server: OllamaTestServer, client: ollama.Client
) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    parts = list(client.chat("llama3.2", messages, stream=True, options={"num_ctx": 8192}))
    *pieces, last = parts
    assert [p.message.content for p in pieces] == split_reply(REPLY)
    assert all(p.done is False and p.message.role == "assistant" for p in pieces)
    assert last.done is True
    assert last.done_reason == "stop"
    assert last.message.content == ""
    assert last.eval_count == len(pieces)
    assert last.prompt_eval_count == estimate_tokens(messages[0]["content"])
    assert last.total_duration
    assert last.load_duration is not None
    assert last.eval_duration
    assert last.prompt_eval_duration is not None
    assert last.created_at
    (recorded,) = server.requests_to("/api/chat")
    assert recorded.json is not None
    assert recorded.json["stream"] is True
    assert recorded.json["options"] == {"num_ctx": 8192}
    assert recorded.json["messages"] == messages


def test_client_chat_without_stream_returns_the_whole_message(client: ollama.Client) -> None:
    response = client.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert response.message.content == REPLY
    assert response.done is True
    assert response.done_reason == "stop"


def test_chat_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        list(client.chat("mistral", [{"role": "user", "content": "hi"}], stream=True))
    assert info.value.status_code == 404
    assert "not found" in info.value.error


def test_chat_with_embedding_model_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("nomic-embed-text", [{"role": "user", "content": "hi"}])
    assert (info.value.status_code, info.value.error) == (
        400,
        '"nomic-embed-text" does not support chat',
    )


def test_chatollama_stream_with_scripted_reply(server: OllamaTestServer) -> None:
    def echo(body: dict[str, Any]) -> str:
        return "You asked: " + str(body["messages"][-1]["content"])

    server.reply = echo
    chat = ChatOllama(model="llama3.2", base_url=server.base_url, num_ctx=4096, temperature=0.1)
    chunks = list(chat.stream("Where is the Louvre?"))
    assert "".join(str(c.content) for c in chunks) == "You asked: Where is the Louvre?"
    assert chat.invoke("Hi").content == "You asked: Hi"
    (first, _) = server.requests_to("/api/chat")
    assert first.json is not None
    assert first.json["stream"] is True
    assert first.json["options"] == {"num_ctx": 4096, "temperature": 0.1}


def test_broken_reply_callable_is_a_500_not_a_hang_up(
    server: OllamaTestServer, client: ollama.Client
) -> None:
    def broken(body: dict[str, Any]) -> str:
        raise KeyError("nope")

    server.reply = broken
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("llama3.2", [{"role": "user", "content": "hi"}])
    assert info.value.status_code == 500


# --- slowness and shutdown -------------------------------------------------------------------


def test_delay_makes_a_short_client_timeout_fire(server: OllamaTestServer) -> None:
    server.delay = 5.0
    embedder = OllamaEmbeddings(
        model="nomic-embed-text", base_url=server.base_url, client_kwargs={"timeout": 0.5}
    )
    chat = ChatOllama(model="llama3.2", base_url=server.base_url, client_kwargs={"timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        embedder.embed_query("slow")
    with pytest.raises(httpx.TimeoutException):
        list(chat.stream("slow"))
    assert time.monotonic() - started < 3
    assert [r.path for r in server.requests] == ["/api/embed", "/api/chat"]
    server.delay = 0.0
    assert len(embedder.embed_query("fast")) == DIM


def test_stop_is_prompt_with_a_delayed_request_in_flight() -> None:
    srv = OllamaTestServer(delay=30.0).start()
    base_url = srv.base_url
    with ollama.Client(host=base_url, timeout=0.3) as c, pytest.raises(httpx.TimeoutException):
        c.embed("nomic-embed-text", "in flight")
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 1.0
    with ollama.Client(host=base_url, timeout=2) as c, pytest.raises(ConnectionError):
        c.list()
