"""The Ollama provider over real HTTP, against `tests.ollama_server` on 127.0.0.1 only.

In-process tests drive the provider registry (`app.models.registry`) and the Ollama provider
(`app.models.ollama`) and read what the test server received. CLI tests run `python -m
app.ingest` / `python -m app.chat` in a subprocess, as a user would, and check the exit status,
the message and what reached the server.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings
from langchain_core.language_models import BaseChatModel

from app.config import Settings
from app.errors import ExitCode, ProviderError, StoreError
from app.models import registry
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings, ollama_model_info
from app.models.ollama import explain_ollama_failure, has_model_name, probe_ollama
from app.paths import SAMPLE_DOCS_DIR
from app.store import open_store
from app.store.library import Library, find_library, library_name
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding, fake_embedding

pytestmark = pytest.mark.integration

DIM = 32  # small vectors keep the in-process tests quick
DOC, QUERY = "search_document: ", "search_query: "
EMBED_ONLY = ("nomic-embed-text",)  # a server that lacks the chat model llama3.2
ANSWER = "Ottoline Vesk founded it [1]."
QUESTION = "Who founded Brindlemoor and dug the first salt pans?"

# CLI runs that parse files use one parse worker. With two, the pool sometimes closes while its
# second worker is still starting (small, fast files), and that worker prints a multiprocessing
# traceback (SemLock FileNotFoundError) on stderr: a parse-pool problem, not an Ollama one.
ONE_PARSE_WORKER = {"INGEST_WORKERS": "1"}

MakeSettings = Callable[..., Settings]
RunModule = Callable[..., Any]


@pytest.fixture
def server() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(embedding_dim=DIM) as srv:
        yield srv


@pytest.fixture
def plain_docs(tmp_path: Path) -> Path:
    """About 4,000 characters of the sample corpus in formats read without unstructured, so
    CLI runs that test an Ollama failure do not spend their time parsing Office files."""
    target = tmp_path / "plain-docs"
    target.mkdir()
    for sample, copy in [
        ("town/harbour-notice.txt", "harbour-notice.txt"),
        ("ferry/timetable.csv", "timetable.csv"),
        ("about-brindlemoor.md", "about-brindlemoor.txt"),
    ]:
        (target / copy).write_bytes((SAMPLE_DOCS_DIR / sample).read_bytes())
    return target


def ollama_embeddings(settings: Settings) -> ModelEmbeddings:
    embeddings, _ = registry.build_embeddings(settings, lambda line: None)
    assert embeddings.info.provider == "ollama"
    return embeddings


def ollama_chat_model(settings: Settings) -> BaseChatModel:
    model, capabilities, _ = registry.build_chat_model(settings, lambda line: None)
    assert capabilities.provider == "ollama"
    return model


def embed_inputs(server: OllamaTestServer) -> list[list[str]]:
    """The `input` list of every /api/embed request, in order."""
    return [r.json["input"] for r in server.requests_to("/api/embed") if r.json]


def chroma_dir() -> str:
    return os.environ["CHROMA_DIR"]  # set per test by the autouse fixture in conftest.py


def assert_clean_failure(result: Any, code: ExitCode, *needles: str) -> None:
    """Exit status `code`, each needle in stderr, and no traceback."""
    assert result.returncode == code, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


class Background:
    """`run_module(...)` in a thread, so a test can watch the server while the CLI runs."""

    def __init__(self, run_module: RunModule, *args: str, **env: str) -> None:
        self.result: Any = None
        self.ended = 0.0

        def target() -> None:
            try:
                self.result = run_module(*args, **env)
            finally:
                self.ended = time.monotonic()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def wait_until(self, condition: Callable[[], object], timeout: float = 300) -> float:
        """Poll until `condition()` is true while the CLI still runs; returns that moment."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.thread.join(0.02)
            assert self.thread.is_alive(), f"the CLI ended first: {self.result!r}"
            assert time.monotonic() < deadline, "the CLI did not get there in time"
        return time.monotonic()

    def finish(self) -> Any:
        self.thread.join()
        assert self.result is not None, "the CLI run raised"
        return self.result


# --- 1. Task prefixes ----------------------------------------------------------------------------


@pytest.mark.unit
def test_task_prefixes_are_looked_up_without_the_model_tag() -> None:
    assert ollama_model_info("nomic-embed-text", 2048).document_prefix == DOC
    assert ollama_model_info("nomic-embed-text:latest", 2048).query_prefix == QUERY
    unknown = ollama_model_info("all-minilm", 2048)
    assert (unknown.document_prefix, unknown.query_prefix) == ("", "")


@pytest.mark.parametrize("model", ["nomic-embed-text", "nomic-embed-text:latest"])
def test_nomic_documents_and_queries_reach_ollama_with_their_task_prefixes(
    server: OllamaTestServer, make_settings: MakeSettings, model: str
) -> None:
    settings = make_settings(
        embedding_provider="ollama", ollama_base_url=server.base_url, ollama_embedding_model=model
    )
    embeddings = ollama_embeddings(settings)

    embeddings.embed_documents(["The Long Mole is 612 metres long.", "Founded in 1742."])
    embeddings.embed_query("How long is the Long Mole?")

    assert embed_inputs(server) == [
        [DOC + "The Long Mole is 612 metres long.", DOC + "Founded in 1742."],
        [QUERY + "How long is the Long Mole?"],
    ]
    assert {r.json["model"] for r in server.requests_to("/api/embed") if r.json} == {model}


def test_model_without_task_prefixes_gets_the_text_unchanged(
    make_settings: MakeSettings,
) -> None:
    with OllamaTestServer(models=("all-minilm",), embedding_dim=DIM) as srv:
        settings = make_settings(
            embedding_provider="ollama",
            ollama_base_url=srv.base_url,
            ollama_embedding_model="all-minilm",
        )
        embeddings = ollama_embeddings(settings)
        documents = embeddings.embed_documents(["Heron Square"])
        query = embeddings.embed_query("Where is the band concert?")

        assert embed_inputs(srv) == [["Heron Square"], ["Where is the band concert?"]]
    assert documents == [fake_embedding("Heron Square", DIM)]
    assert query == fake_embedding("Where is the band concert?", DIM)


# --- 2. Batching ---------------------------------------------------------------------------------


def test_documents_go_in_batches_of_embedding_batch_size_and_keep_their_order(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        embedding_provider="ollama", ollama_base_url=server.base_url, embedding_batch_size=3
    )
    texts = [f"chunk number {i}: {'salt ' * i}" for i in range(7)]

    vectors = ollama_embeddings(settings).embed_documents(texts)

    sent = embed_inputs(server)
    assert [len(batch) for batch in sent] == [3, 3, 1]
    assert [text for batch in sent for text in batch] == [DOC + t for t in texts]
    assert vectors == [fake_embedding(DOC + t, DIM) for t in texts]


# --- 3. num_ctx, num_predict and timeout ---------------------------------------------------------


def test_chat_model_sends_num_ctx_and_num_predict_from_settings(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        chat_provider="ollama",
        ollama_base_url=server.base_url,
        ollama_num_ctx=4096,
        max_answer_tokens=123,
    )
    model = ollama_chat_model(settings)

    answer = "".join(chunk.text for chunk in model.stream("Where is Brindlemoor?"))

    assert answer == server.reply
    (request,) = server.requests_to("/api/chat")
    assert request.json is not None
    assert request.json["model"] == "llama3.2"
    assert request.json["options"]["num_ctx"] == 4096
    assert request.json["options"]["num_predict"] == 123


def test_embeddings_send_ollama_embedding_num_ctx(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        embedding_provider="ollama", ollama_base_url=server.base_url, ollama_embedding_num_ctx=1024
    )
    embeddings = ollama_embeddings(settings)
    embeddings.embed_documents(["a", "b"])
    embeddings.embed_query("c")

    requests = server.requests_to("/api/embed")
    assert len(requests) == 2
    assert [r.json["options"]["num_ctx"] for r in requests if r.json] == [1024, 1024]


def test_text_over_the_embedding_num_ctx_is_refused_with_the_knobs_named(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    # The server allows 2048 tokens, but the client asks for a 128-token window.
    settings = make_settings(
        embedding_provider="ollama", ollama_base_url=server.base_url, ollama_embedding_num_ctx=128
    )
    with pytest.raises(ProviderError) as caught:
        ollama_embeddings(settings).embed_documents(["x" * 600])  # 150 tokens with the prefix

    message = str(caught.value)
    assert "CHUNK_SIZE (now 800)" in message
    assert "OLLAMA_EMBEDDING_NUM_CTX (now 128)" in message


def test_ollama_timeout_bounds_an_embedding_request(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        embedding_provider="ollama", ollama_base_url=server.base_url, ollama_timeout=0.5
    )
    embeddings = ollama_embeddings(settings)
    server.delay = 3

    started = time.monotonic()
    with pytest.raises(ProviderError, match="OLLAMA_TIMEOUT"):
        embeddings.embed_documents(["slow"])
    assert time.monotonic() - started < 2.5  # gave up near 0.5 s, not after the 3 s delay


def test_ollama_timeout_bounds_a_chat_request(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        chat_provider="ollama", ollama_base_url=server.base_url, ollama_timeout=0.5
    )
    model = ollama_chat_model(settings)
    server.delay = 3

    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException) as caught:
        model.invoke("Anyone there?")
    assert time.monotonic() - started < 2.5

    explained = explain_ollama_failure(caught.value, settings, "chat")
    assert isinstance(explained, ProviderError)
    assert "within 0.5 s (OLLAMA_TIMEOUT)" in str(explained)


# --- 4. Choosing the provider --------------------------------------------------------------------


def test_auto_picks_ollama_for_both_roles_when_the_server_has_both_models(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(ollama_base_url=server.base_url)

    embedding = registry.choose(settings, "embedding")
    chat = registry.choose(settings, "chat")

    assert (embedding.provider.name, embedding.model) == ("ollama", "nomic-embed-text")
    assert (chat.provider.name, chat.model) == ("ollama", "llama3.2")
    assert embedding.reason == f"Ollama at {server.base_url} has nomic-embed-text"
    assert chat.reason == f"Ollama at {server.base_url} has llama3.2"
    assert len(server.requests_to("/api/tags")) == 1  # one probe per process serves both roles


def test_auto_falls_back_to_local_chat_when_the_server_lacks_the_chat_model(
    make_settings: MakeSettings,
) -> None:
    with OllamaTestServer(models=EMBED_ONLY) as srv:
        settings = make_settings(ollama_base_url=srv.base_url)
        embedding = registry.choose(settings, "embedding")
        chat = registry.choose(settings, "chat")

    assert embedding.provider.name == "ollama"
    assert chat.provider.name == "local"
    assert "`ollama pull llama3.2`" in chat.reason


def test_auto_falls_back_to_local_when_nothing_listens(make_settings: MakeSettings) -> None:
    with OllamaTestServer() as srv:
        up = make_settings(ollama_base_url=srv.base_url)
        assert registry.choose(up, "embedding").provider.name == "ollama"
        url = srv.base_url
    probe_ollama.cache_clear()  # the probe is cached per process; the server is gone now

    down = make_settings(ollama_base_url=url)
    for role in ("embedding", "chat"):
        choice = registry.choose(down, role)
        assert choice.provider.name == "local"
        assert f"not answering at {url}" in choice.reason


@pytest.mark.parametrize("role", ["embedding", "chat"])
def test_explicit_ollama_with_nothing_listening_fails_fast_with_the_fix(
    make_settings: MakeSettings, role: str
) -> None:
    settings = make_settings(**{f"{role}_provider": "ollama"})  # OLLAMA_BASE_URL: a closed port

    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        registry.choose(settings, role)
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert settings.ollama_base_url in message
    assert "ollama serve" in message
    assert f"{role.upper()}_PROVIDER=local" in message
    assert elapsed < 5  # a bound on a hang, not a benchmark


@pytest.mark.parametrize(
    ("role", "model"), [("embedding", "nomic-embed-text"), ("chat", "llama3.2")]
)
def test_explicit_ollama_without_the_model_says_which_model_to_pull(
    make_settings: MakeSettings, role: str, model: str
) -> None:
    with OllamaTestServer(models=()) as srv:
        settings = make_settings(ollama_base_url=srv.base_url, **{f"{role}_provider": "ollama"})
        with pytest.raises(ProviderError) as caught:
            registry.choose(settings, role)

    assert f"ollama pull {model}" in str(caught.value)
    assert f"{role.upper()}_PROVIDER=local" in str(caught.value)


def test_embedding_model_removed_after_the_probe_is_reported_as_missing(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(embedding_provider="ollama", ollama_base_url=server.base_url)
    embeddings = ollama_embeddings(settings)
    server.models = ("llama3.2:latest",)  # `ollama rm nomic-embed-text` while the app runs

    with pytest.raises(ProviderError, match="ollama pull nomic-embed-text"):
        embeddings.embed_documents(["Tanner's Row"])


def test_server_going_away_during_a_request_is_reported_as_down(
    server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(embedding_provider="ollama", ollama_base_url=server.base_url)
    embeddings = ollama_embeddings(settings)
    embeddings.embed_query("warm up the connection")
    server.delay = 30
    threading.Timer(0.5, server.stop).start()  # Ollama dies while the request waits

    started = time.monotonic()
    with pytest.raises(ProviderError, match="ollama serve"):
        embeddings.embed_documents(["Corvane Hill"])
    assert time.monotonic() - started < 10


# --- 5. Errors at run time, through the CLI ------------------------------------------------------


def test_ingest_with_ollama_down_exits_4_with_the_fix(
    run_module: RunModule, sample_docs: Path
) -> None:
    result = run_module("app.ingest", str(sample_docs), EMBEDDING_PROVIDER="ollama")

    assert_clean_failure(
        result, ExitCode.PROVIDER, "not answering", "ollama serve", "EMBEDDING_PROVIDER=local"
    )


def test_ingest_without_the_embedding_model_exits_4_and_says_pull(
    run_module: RunModule, sample_docs: Path
) -> None:
    with OllamaTestServer(models=("llama3.2",)) as srv:
        result = run_module(
            "app.ingest",
            str(sample_docs),
            EMBEDDING_PROVIDER="ollama",
            OLLAMA_BASE_URL=srv.base_url,
        )
        assert srv.requests_to("/api/embed") == []

    assert_clean_failure(result, ExitCode.PROVIDER, "ollama pull nomic-embed-text")


def test_ingest_against_a_slow_server_stops_at_the_first_timeout(
    run_module: RunModule, plain_docs: Path
) -> None:
    # One chunk per request, 100-character chunks: the 4,000 characters make 40 requests or
    # more, so a run that waited out each 3 s delay would take two minutes or more.
    delay = 3
    with OllamaTestServer(delay=delay) as srv:
        started = time.monotonic()
        run = Background(
            run_module,
            "app.ingest",
            str(plain_docs),
            EMBEDDING_PROVIDER="ollama",
            OLLAMA_BASE_URL=srv.base_url,
            OLLAMA_TIMEOUT="1",
            EMBEDDING_BATCH_SIZE="1",
            CHUNK_SIZE="100",
            CHUNK_OVERLAP="0",
            **ONE_PARSE_WORKER,
        )
        first_request = run.wait_until(lambda: srv.requests_to("/api/embed"))
        result = run.finish()
        embed_requests = len(srv.requests_to("/api/embed"))

    assert_clean_failure(result, ExitCode.PROVIDER, "within 1 s (OLLAMA_TIMEOUT)")
    assert embed_requests == 1  # no retry, no next batch
    assert run.ended - first_request < 2 * delay  # gave up after ~1 s and exited
    assert run.ended - started < 60  # bounds a hang, well under 40 x 3 s


def test_ingest_of_chunks_over_the_context_length_exits_4_and_writes_nothing(
    run_module: RunModule, plain_docs: Path
) -> None:
    # 64 tokens is 256 characters for the test server; 1000-character chunks do not fit.
    with OllamaTestServer(context_length=64) as srv:
        result = run_module(
            "app.ingest",
            str(plain_docs),
            EMBEDDING_PROVIDER="ollama",
            OLLAMA_BASE_URL=srv.base_url,
            CHUNK_SIZE="1000",
            **ONE_PARSE_WORKER,
        )
        assert srv.requests_to("/api/embed"), "the refusal must come from the server"

    assert_clean_failure(result, ExitCode.PROVIDER, "context length", "CHUNK_SIZE (now 1000)")
    client = chromadb.PersistentClient(
        path=chroma_dir(), settings=ChromaSettings(anonymized_telemetry=False)
    )
    counts = {c.name: c.count() for c in client.list_collections()}
    assert all(count == 0 for count in counts.values()), counts


def test_chat_streams_the_answer_and_its_sources_from_ollama(
    run_module: RunModule, sample_docs: Path
) -> None:
    with OllamaTestServer(embedder=bag_of_words_embedding, reply=ANSWER) as srv:
        result = run_module(
            "app.chat",
            "-q",
            QUESTION,
            EMBEDDING_PROVIDER="ollama",
            CHAT_PROVIDER="ollama",
            OLLAMA_BASE_URL=srv.base_url,
            OLLAMA_NUM_CTX="4096",
            DOCS_DIR=str(sample_docs),
            **ONE_PARSE_WORKER,
        )
        chats = srv.requests_to("/api/chat")
        sent = embed_inputs(srv)

    assert result.returncode == ExitCode.OK, result.stderr
    answer, _, sources = result.stdout.partition("Sources:")
    assert ANSWER in answer
    assert "[1] docs/about-brindlemoor.md" in sources.splitlines()

    (chat,) = chats
    assert chat.json is not None
    assert chat.json["stream"] is True
    assert chat.json["options"]["num_ctx"] == 4096
    last_user = [m for m in chat.json["messages"] if m["role"] == "user"][-1]["content"]
    assert QUESTION in last_user
    assert '<source id="1" name="docs/about-brindlemoor.md">' in last_user

    # The auto-ingest embedded documents; the retriever then embedded the question.
    *documents, query = sent
    assert documents
    assert all(text.startswith(DOC) for batch in documents for text in batch)
    assert query == [QUERY + QUESTION]


def test_chat_without_the_chat_model_exits_4_and_says_pull(
    run_module: RunModule, plain_docs: Path
) -> None:
    with OllamaTestServer(models=EMBED_ONLY) as srv:
        result = run_module(
            "app.chat",
            "-q",
            QUESTION,
            EMBEDDING_PROVIDER="ollama",
            CHAT_PROVIDER="ollama",
            OLLAMA_BASE_URL=srv.base_url,
            DOCS_DIR=str(plain_docs),
            **ONE_PARSE_WORKER,
        )
        assert srv.requests_to("/api/chat") == []

    assert_clean_failure(result, ExitCode.PROVIDER, "ollama pull llama3.2", "CHAT_PROVIDER=local")


def test_chat_model_removed_while_chat_runs_exits_4_and_says_pull(
    run_module: RunModule, plain_docs: Path
) -> None:
    """The probe saw llama3.2; it is gone by the time the question is sent (`ollama rm`)."""
    with OllamaTestServer(reply=ANSWER) as srv:
        run = Background(
            run_module,
            "app.chat",
            "-q",
            QUESTION,
            EMBEDDING_PROVIDER="ollama",
            CHAT_PROVIDER="ollama",
            OLLAMA_BASE_URL=srv.base_url,
            DOCS_DIR=str(plain_docs),
            **ONE_PARSE_WORKER,
        )
        # The first /api/embed comes after the probe and well before the question is asked.
        run.wait_until(lambda: srv.requests_to("/api/embed"))
        srv.models = ("nomic-embed-text:latest",)
        result = run.finish()
        chats = srv.requests_to("/api/chat")

    assert len(chats) == 1  # the question was sent, and refused
    assert ANSWER not in result.stdout
    assert_clean_failure(result, ExitCode.PROVIDER, "ollama pull llama3.2")


# --- 6. One collection per embedding model -------------------------------------------------------


@pytest.mark.unit
def test_default_collection_name_differs_per_embedding_model(make_settings: MakeSettings) -> None:
    settings = make_settings()
    infos = [
        ollama_model_info("nomic-embed-text", 2048),
        ollama_model_info("mxbai-embed-large", 512),
        ollama_model_info("all-minilm", 256),
        EmbeddingModelInfo("local", "all-MiniLM-L6-v2"),
    ]
    names = [library_name(settings, info.key) for info in infos]
    assert len(set(names)) == len(infos)


def make_library(settings: Settings, info: EmbeddingModelInfo, dimension: int) -> Library:
    """A library of `info`'s vectors holding one source and its collection."""
    store = open_store(settings)
    library = Library.create(store, library_name(settings, info.key), info.key)
    library.add(SAMPLE_DOCS_DIR)
    library.save()
    store.create_collection(library.record.active, info.key, dimension)
    return library


def test_switching_embedding_model_never_opens_the_other_models_collection(
    make_settings: MakeSettings,
) -> None:
    nomic = ollama_model_info("nomic-embed-text", 2048)
    minilm = ollama_model_info("all-minilm", 256)
    settings = make_settings()
    library = make_library(settings, nomic, 768)
    store = open_store(settings)

    assert library_name(settings, minilm.key) != library.name
    assert Library.find(store, library_name(settings, minilm.key)) is None
    found = find_library(store, settings, nomic.key)
    assert found is not None
    opened = found.collection()
    assert opened is not None
    assert opened.name == library.record.active
    assert opened.model == nomic.key
    # The other model's run finds the library and refuses it, rather than open it.
    with pytest.raises(ProviderError, match="was embedded with ollama/nomic-embed-text"):
        find_library(store, settings, minilm.key, advice=registry.advice(settings))


def test_shared_collection_name_refuses_another_models_vectors_and_says_what_to_do(
    make_settings: MakeSettings, ollama_server: OllamaTestServer
) -> None:
    nomic = ollama_model_info("nomic-embed-text", 2048)
    minilm = ollama_model_info("all-minilm", 256)
    settings = make_settings(collection_name="shared", ollama_base_url=ollama_server.base_url)
    make_library(settings, nomic, 768)
    store = open_store(settings)

    with pytest.raises(StoreError) as caught:
        find_library(store, settings, minilm.key, advice=registry.advice(settings))

    message = str(caught.value)
    assert "'shared'" in message
    assert nomic.key in message
    assert minilm.key in message
    assert "OLLAMA_EMBEDDING_MODEL=nomic-embed-text" in message  # how to keep using it
    assert "COLLECTION_NAME" in message
    assert "python -m app.ingest --rebuild" in message


def test_a_library_whose_provider_is_down_is_a_provider_error_naming_model_and_fixes(
    make_settings: MakeSettings,
) -> None:
    """Ollama embedded the library yesterday; today nothing listens and `auto` picks the
    embedded model: the run is refused (exit 4), never given an empty library of its own."""
    nomic = ollama_model_info("nomic-embed-text", 2048)
    local = EmbeddingModelInfo("local", "all-MiniLM-L6-v2")
    settings = make_settings()  # conftest: OLLAMA_BASE_URL is a closed port
    make_library(settings, nomic, 768)

    store = open_store(settings)
    with pytest.raises(ProviderError) as caught:
        find_library(store, settings, local.key, advice=registry.advice(settings))

    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.PROVIDER
    assert "ollama/nomic-embed-text" in message
    assert "Ollama is not answering" in message
    assert "ollama serve" in message
    assert "python -m app.ingest --rebuild" in message
    # A rebuild under the embedded model may go ahead: it re-embeds the library's sources.
    assert find_library(store, settings, local.key, rebuild=True) is None


@pytest.mark.unit
def test_the_same_model_with_or_without_its_latest_tag_shares_one_collection(
    make_settings: MakeSettings,
) -> None:
    assert has_model_name("nomic-embed-text:latest", "nomic-embed-text")  # Ollama: one model
    bare = ollama_model_info("nomic-embed-text", 2048)
    tagged = ollama_model_info("nomic-embed-text:latest", 2048)
    settings = make_settings()

    assert tagged.key == bare.key
    assert library_name(settings, tagged.key) == library_name(settings, bare.key)
