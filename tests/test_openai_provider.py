"""The `openai` provider over real HTTP, against `tests.openai_server` on 127.0.0.1 only.

In-process tests drive `app.models.registry` and read what the test server received. CLI tests
run `python -m app.ingest` / `app.chat` / `app.serve` in a subprocess, as a user would, and
check the exit status, the message and what reached the server. The provider returns
langchain-openai's own classes, so LangChain's standard suites are theirs to run; what is ours
is checked here: task prefixes and batches (`ModelEmbeddings`), the settings sent, the `auto`
rules, the context window and the failures.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.config import Settings
from app.errors import ConfigError, ExitCode, ProviderError
from app.models import registry
from app.models.openai import list_models
from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR
from chains.core.budget import estimate_tokens, token_counter
from tests.fakes import bag_of_words_vector
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding, closed_port
from tests.openai_server import OpenAITestServer
from tests.serve_process import ServeProcess, serve_env

pytestmark = pytest.mark.integration

KEY = "sk-local-test-key-0123456789"
EMBED = "nomic-ai/nomic-embed-text-v1.5"  # as vLLM names it: the catalog knows its prefixes
CHAT = "Qwen/Qwen2.5-7B-Instruct"
WINDOW = 8192
DOC, QUERY = "search_document: ", "search_query: "
DIM = 256
ANSWER = "Ottoline Vesk founded it [1]."
QUESTION = "Who founded Brindlemoor and dug the first salt pans?"
# One parse worker: see tests/test_ollama_provider.py (a second worker that is still starting
# when the pool closes prints a multiprocessing traceback).
ONE_PARSE_WORKER = {"INGEST_WORKERS": "1"}

MakeSettings = Callable[..., Settings]
RunModule = Callable[..., Any]


@pytest.fixture(autouse=True)
def _fresh_model_list() -> Iterator[None]:
    """`GET /models` is asked once per process: each test starts its own servers."""
    list_models.cache_clear()
    yield
    list_models.cache_clear()


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(
        models=(EMBED, CHAT), max_model_len={CHAT: WINDOW}, api_key=KEY, reply=ANSWER
    ) as srv:
        yield srv


@pytest.fixture
def plain_docs(tmp_path: Path) -> Path:
    """About 4,000 characters of the sample corpus in formats read without unstructured."""
    target = tmp_path / "plain-docs"
    target.mkdir()
    for sample, copy in [
        ("town/harbour-notice.txt", "harbour-notice.txt"),
        ("ferry/timetable.csv", "timetable.csv"),
        ("about-brindlemoor.md", "about-brindlemoor.txt"),
    ]:
        (target / copy).write_bytes((SAMPLE_DOCS_DIR / sample).read_bytes())
    return target


def openai_settings(server: OpenAITestServer, **overrides: Any) -> dict[str, Any]:
    """Settings (as keyword arguments) that point the app at `server` with its key."""
    return {
        "openai_base_url": server.base_url,
        "openai_api_key": KEY,
        "openai_embedding_model": EMBED,
        "openai_chat_model": CHAT,
        **overrides,
    }


def openai_env(server: OpenAITestServer, **overrides: str) -> dict[str, str]:
    """The same as environment variables, for a CLI run."""
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": KEY,
        "OPENAI_EMBEDDING_MODEL": EMBED,
        "OPENAI_CHAT_MODEL": CHAT,
        **ONE_PARSE_WORKER,
        **overrides,
    }


def keys_sent(server: OpenAITestServer) -> set[str | None]:
    return {r.headers.get("authorization") for r in server.requests}


def assert_clean_failure(result: Any, code: ExitCode, *needles: str) -> None:
    """Exit status `code`, each needle in stderr, and no traceback."""
    assert result.returncode == code, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback address that accepts connections and never answers (a server that hangs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


# --- 1. What reaches the server ------------------------------------------------------------------


def test_documents_go_in_batches_of_embedding_batch_size_with_the_models_task_prefixes(
    server: OpenAITestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        embedding_provider="openai", embedding_batch_size=3, **openai_settings(server)
    )
    embeddings, reason = registry.build_embeddings(settings, lambda line: None)
    texts = [f"chunk number {i}: {'salt ' * i}" for i in range(7)]

    vectors = embeddings.embed_documents(texts)
    query = embeddings.embed_query("How long is the Long Mole?")

    assert embeddings.info.key == f"openai/{EMBED}"
    assert reason == f"the OpenAI-compatible server at {server.base_url} serves {EMBED}"
    sent = server.embedding_inputs()
    assert [len(batch) for batch in sent] == [
        3,
        3,
        1,
        1,
    ]  # ModelEmbeddings' batches, then the query
    assert [t for batch in sent[:3] for t in batch] == [DOC + t for t in texts]
    assert sent[3] == [QUERY + "How long is the Long Mole?"]
    assert {r.json["model"] for r in server.requests_to("/v1/embeddings") if r.json} == {EMBED}
    assert keys_sent(server) == {f"Bearer {KEY}"}
    # The vectors are the server's, in order (float32 on the wire).
    assert vectors[4] == pytest.approx(bag_of_words_vector(DOC + texts[4], DIM), abs=1e-6)
    assert query == pytest.approx(bag_of_words_vector(QUERY + "How long is the Long Mole?", DIM))


def test_a_model_without_task_prefixes_gets_the_text_unchanged(
    make_settings: MakeSettings,
) -> None:
    with OpenAITestServer() as srv:  # text-embedding-3-small, the setting's default
        settings = make_settings(embedding_provider="openai", openai_base_url=srv.base_url)
        embeddings, _ = registry.build_embeddings(settings, lambda line: None)
        embeddings.embed_documents(["Heron Square"])
        embeddings.embed_query("Where is the band concert?")

        assert srv.embedding_inputs() == [["Heron Square"], ["Where is the band concert?"]]


def test_chat_model_streams_with_the_model_the_key_and_max_completion_tokens(
    server: OpenAITestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(
        chat_provider="openai", max_answer_tokens=123, **openai_settings(server)
    )
    model, capabilities, reason = registry.build_chat_model(settings, lambda line: None)

    answer = "".join(chunk.text for chunk in model.stream("Where is Brindlemoor?"))

    assert answer == ANSWER
    assert capabilities.key == f"openai/{CHAT}"
    assert "serves" in reason
    (request,) = server.requests_to("/v1/chat/completions")
    assert request.json is not None
    assert request.json["model"] == CHAT
    assert request.json["max_completion_tokens"] == 123
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_prompts_are_counted_without_tiktoken(
    server: OpenAITestServer, make_settings: MakeSettings
) -> None:
    """ChatOpenAI's own counter fetches a tiktoken encoding from the internet, and a server's
    model has none: the budget uses the estimate."""
    settings = make_settings(chat_provider="openai", **openai_settings(server))
    model, _, _ = registry.build_chat_model(settings, lambda line: None)

    assert token_counter(model) is estimate_tokens


def test_no_key_configured_sends_none_to_the_model_list(make_settings: MakeSettings) -> None:
    with OpenAITestServer() as srv:
        settings = make_settings(chat_provider="openai", openai_base_url=srv.base_url)
        registry.choose(settings, "chat")
        (probe,) = srv.requests_to("/v1/models")
    assert "authorization" not in probe.headers


# --- 2. The context window -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "configured", "window"),
    [
        (WINDOW, None, WINDOW),  # the server says (vLLM's max_model_len)
        (None, 6000, 6000),  # it does not: CHAT_CONTEXT_TOKENS
        (WINDOW, 4096, 4096),  # both: the smaller
        (4096, WINDOW, 4096),
    ],
)
def test_context_window_comes_from_max_model_len_else_chat_context_tokens(
    make_settings: MakeSettings, listed: int | None, configured: int | None, window: int
) -> None:
    lengths = {CHAT: listed} if listed else {}
    with OpenAITestServer(models=(EMBED, CHAT), max_model_len=lengths) as srv:
        settings = make_settings(
            chat_provider="openai",
            openai_base_url=srv.base_url,
            openai_chat_model=CHAT,
            chat_context_tokens=configured,
        )
        model, capabilities, _ = registry.build_chat_model(settings, lambda line: None)

    assert capabilities.context_window == window
    if listed:  # the budget reads the model's profile: the server's window, not a guess
        assert model.profile is not None
        assert model.profile["max_input_tokens"] == window


def test_no_window_from_the_server_nor_the_settings_is_a_config_error(
    make_settings: MakeSettings,
) -> None:
    with OpenAITestServer(models=(CHAT,)) as srv:
        settings = make_settings(
            chat_provider="openai", openai_base_url=srv.base_url, openai_chat_model=CHAT
        )
        with pytest.raises(ConfigError, match="set CHAT_CONTEXT_TOKENS"):
            registry.build_chat_model(settings, lambda line: None)


def test_chat_without_a_known_window_exits_2_naming_chat_context_tokens(
    run_module: RunModule, plain_docs: Path
) -> None:
    with OpenAITestServer(models=(EMBED, CHAT), reply=ANSWER) as srv:  # no max_model_len
        result = run_module(
            "app.chat",
            "-q",
            QUESTION,
            **openai_env(srv, CHAT_PROVIDER="openai", DOCS_DIR=str(plain_docs)),
        )
        assert srv.requests_to("/v1/chat/completions") == []

    assert_clean_failure(result, ExitCode.CONFIG, "CHAT_CONTEXT_TOKENS", CHAT)


def sources_in_prompt(server: OpenAITestServer) -> int:
    (chat,) = server.requests_to("/v1/chat/completions")
    assert chat.json is not None
    return sum(m["content"].count("<source id=") for m in chat.json["messages"])


def test_the_servers_window_bounds_the_prompt(run_module: RunModule, tmp_path: Path) -> None:
    """A 1024-token max_model_len leaves room for fewer sources than an 8192-token one."""
    docs = tmp_path / "salt"
    docs.mkdir()
    for number in range(6):  # six chunks of ~150 tokens, each about the question's words
        (docs / f"salt-{number}.txt").write_text(
            f"Note {number}. Brindlemoor was founded by the people who dug the first salt pans. "
            + "The salt pans of Brindlemoor line the shore below the old town. " * 7,
            encoding="utf-8",
        )
    counts = {}
    for window in (8192, 1024):
        with OpenAITestServer(
            models=(EMBED, CHAT), max_model_len={CHAT: window}, reply=ANSWER
        ) as srv:
            result = run_module(
                "app.chat",
                "-q",
                QUESTION,
                **openai_env(
                    srv,
                    EMBEDDING_PROVIDER="openai",
                    CHAT_PROVIDER="openai",
                    DOCS_DIR=str(docs),
                    MAX_ANSWER_TOKENS="256",
                    CHROMA_DIR=str(tmp_path / f"chroma-{window}"),
                ),
            )
            assert result.returncode == ExitCode.OK, result.stderr
            counts[window] = sources_in_prompt(srv)
            (chat,) = srv.requests_to("/v1/chat/completions")
            assert chat.json is not None
            prompt = "".join(m["content"] for m in chat.json["messages"])
            assert len(prompt) / 4 + 256 <= window  # fits by the server's own count

    assert counts[8192] == 4  # RETRIEVAL_K's default for a server's model
    assert 1 <= counts[1024] < counts[8192]


# --- 3. The `auto` rules -------------------------------------------------------------------------


def test_auto_never_probes_an_openai_server_that_is_not_named(
    server: OpenAITestServer, ollama_server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(ollama_base_url=ollama_server.base_url)  # OPENAI_BASE_URL unset

    embedding = registry.choose(settings, "embedding")
    chat = registry.choose(settings, "chat")

    assert (embedding.provider.name, chat.provider.name) == ("ollama", "ollama")
    assert "OpenAI" not in embedding.reason + chat.reason
    assert server.requests == []
    assert list_models.cache_info().misses == 0  # not even tried elsewhere


def test_auto_without_openai_base_url_still_falls_back_to_local(
    server: OpenAITestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings()  # OLLAMA_BASE_URL: a closed port (conftest)

    for role in ("embedding", "chat"):
        choice = registry.choose(settings, role)
        assert choice.provider.name == "local"
        assert "Ollama is not answering" in choice.reason
        assert "OpenAI" not in choice.reason
    assert server.requests == []


def test_auto_picks_the_openai_server_for_both_roles_when_it_serves_both_models(
    server: OpenAITestServer, ollama_server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(ollama_base_url=ollama_server.base_url, **openai_settings(server))

    embedding = registry.choose(settings, "embedding")
    chat = registry.choose(settings, "chat")

    assert (embedding.provider.name, embedding.model) == ("openai", EMBED)
    assert (chat.provider.name, chat.model) == ("openai", CHAT)
    assert chat.reason == f"the OpenAI-compatible server at {server.base_url} serves {CHAT}"
    assert len(server.requests_to("/v1/models")) == 1  # one probe serves both roles
    assert ollama_server.requests_to("/api/tags") == []  # the first in AUTO_ORDER answered


def test_auto_falls_back_when_the_server_lacks_the_model_and_says_why(
    ollama_server: OllamaTestServer, make_settings: MakeSettings
) -> None:
    with OpenAITestServer(models=(CHAT,), max_model_len={CHAT: WINDOW}) as srv:
        settings = make_settings(
            ollama_base_url=ollama_server.base_url,
            openai_base_url=srv.base_url,
            openai_embedding_model=EMBED,
            openai_chat_model=CHAT,
        )
        embedding = registry.choose(settings, "embedding")
        chat = registry.choose(settings, "chat")

    assert embedding.provider.name == "ollama"
    assert f"does not serve the model '{EMBED}' (it lists {CHAT})" in embedding.reason
    assert "Ollama at" in embedding.reason  # and why Ollama was taken
    assert chat.provider.name == "openai"


@pytest.mark.parametrize("role", ["embedding", "chat"])
def test_explicit_openai_without_the_model_names_the_setting_to_change(
    make_settings: MakeSettings, role: str
) -> None:
    with OpenAITestServer(models=("some-other-model",)) as srv:
        settings = make_settings(openai_base_url=srv.base_url, **{f"{role}_provider": "openai"})
        with pytest.raises(ProviderError) as caught:
            registry.choose(settings, role)  # type: ignore[arg-type]

    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.PROVIDER
    assert "it lists some-other-model" in message
    assert f"Set OPENAI_{role.upper()}_MODEL to one it serves" in message
    assert f"{role.upper()}_PROVIDER=local" in message


def test_server_down_auto_falls_back_explicit_fails_fast_with_the_fix(
    make_settings: MakeSettings,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"

    auto = registry.choose(make_settings(openai_base_url=url), "embedding")
    assert auto.provider.name == "local"
    assert f"The OpenAI-compatible server at {url} is not answering" in auto.reason

    list_models.cache_clear()
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        registry.choose(make_settings(openai_base_url=url, chat_provider="openai"), "chat")
    assert time.monotonic() - started < 5  # a bound on a hang, not a benchmark
    assert f"{url} is not answering" in str(caught.value)
    assert "point OPENAI_BASE_URL at it" in str(caught.value)
    assert "CHAT_PROVIDER=local" in str(caught.value)


def test_a_server_that_hangs_is_given_up_after_the_probe_timeout(
    make_settings: MakeSettings, silent_url: str
) -> None:
    settings = make_settings(
        openai_base_url=silent_url, embedding_provider="openai", ollama_probe_timeout=1
    )
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"not answering \(no answer within 1 s\)"):
        registry.choose(settings, "embedding")
    assert time.monotonic() - started < 4  # 1 s, and room for a loaded machine


def test_a_refused_key_is_named_as_such_not_as_a_server_down(
    server: OpenAITestServer, make_settings: MakeSettings
) -> None:
    settings = make_settings(**openai_settings(server, openai_api_key="sk-wrong-key-000000"))

    auto = registry.choose(settings, "embedding")
    assert auto.provider.name == "local"
    assert "refused the key (HTTP 401)" in auto.reason

    explicit = settings.model_copy(update={"embedding_provider": "openai"})
    with pytest.raises(ProviderError, match="Set OPENAI_API_KEY to a key it accepts"):
        registry.choose(explicit, "embedding")


def test_a_server_that_does_not_list_its_models_is_used_and_a_missing_model_explained(
    make_settings: MakeSettings,
) -> None:
    with OpenAITestServer(models=(EMBED,), list_models=False) as srv:
        settings = make_settings(
            openai_base_url=srv.base_url, openai_embedding_model="not-served-embed"
        )
        choice = registry.choose(settings, "embedding")
        assert choice.provider.name == "openai"
        assert "does not list its models" in choice.reason

        embeddings, _ = registry.build_embeddings(settings, lambda line: None)
        with pytest.raises(ProviderError) as caught:
            embeddings.embed_query("Anyone there?")

    message = str(caught.value)
    assert "does not serve the model 'not-served-embed'" in message
    assert "OPENAI_EMBEDDING_MODEL" in message
    assert "Traceback" not in message


def test_ollamas_v1_names_with_latest_serve_the_bare_name(make_settings: MakeSettings) -> None:
    with OpenAITestServer(models=("nomic-embed-text:latest",)) as srv:
        settings = make_settings(
            openai_base_url=srv.base_url, openai_embedding_model="nomic-embed-text"
        )
        assert registry.choose(settings, "embedding").provider.name == "openai"


# --- 4. Ingest, chat and serve through the CLI ---------------------------------------------------


def test_ingest_under_auto_embeds_with_the_named_server_and_says_why(
    server: OpenAITestServer, run_module: RunModule, plain_docs: Path
) -> None:
    result = run_module(
        "app.ingest", str(plain_docs), **openai_env(server, EMBEDDING_BATCH_SIZE="4")
    )

    assert result.returncode == ExitCode.OK, result.stderr
    assert (
        f"Embeddings: openai/{EMBED} (the OpenAI-compatible server at {server.base_url} "
        f"serves {EMBED})"
    ) in result.stderr
    sent = server.embedding_inputs()
    assert sent, "nothing was embedded"
    assert all(1 <= len(batch) <= 4 for batch in sent)
    assert all(text.startswith(DOC) for batch in sent for text in batch)
    assert any("Brindlemoor" in text for batch in sent for text in batch)
    assert {r.json["model"] for r in server.requests_to("/v1/embeddings") if r.json} == {EMBED}
    assert keys_sent(server) == {f"Bearer {KEY}"}
    assert KEY not in result.stdout + result.stderr


def test_ingest_falls_back_to_ollama_when_the_server_lacks_the_model(
    run_module: RunModule, plain_docs: Path
) -> None:
    with (
        OpenAITestServer(models=(CHAT,)) as srv,
        OllamaTestServer(embedding_dim=DIM) as ollama,
    ):
        result = run_module(
            "app.ingest",
            str(plain_docs),
            **openai_env(srv, OLLAMA_BASE_URL=ollama.base_url),
        )
        assert srv.requests_to("/v1/embeddings") == []
        assert ollama.requests_to("/api/embed")

    assert result.returncode == ExitCode.OK, result.stderr
    assert "Embeddings: ollama/nomic-embed-text (" in result.stderr
    assert f"does not serve the model '{EMBED}'" in result.stderr


def test_explicit_openai_ingest_with_the_server_down_exits_4_with_the_fix(
    run_module: RunModule, plain_docs: Path
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    result = run_module(
        "app.ingest", str(plain_docs), EMBEDDING_PROVIDER="openai", OPENAI_BASE_URL=url
    )

    assert_clean_failure(
        result, ExitCode.PROVIDER, f"{url} is not answering", "OPENAI_BASE_URL", "=local"
    )
    assert time.monotonic() - started < 60  # the probe's seconds plus Python's start


def test_explicit_openai_ingest_without_openai_base_url_names_it(
    run_module: RunModule, plain_docs: Path
) -> None:
    result = run_module("app.ingest", str(plain_docs), EMBEDDING_PROVIDER="openai")

    assert_clean_failure(result, ExitCode.PROVIDER, "Set OPENAI_BASE_URL")


@pytest.mark.parametrize("later", ["unset", "down"])
def test_a_library_the_server_embedded_is_not_hidden_when_the_server_is_not_there(
    server: OpenAITestServer, run_module: RunModule, plain_docs: Path, later: str
) -> None:
    """Ingested with the server; later OPENAI_BASE_URL is unset (or the server is down) and
    `auto` takes the embedded model: refused, naming what brings the library back."""
    made = run_module("app.ingest", str(plain_docs), **openai_env(server))
    assert made.returncode == ExitCode.OK, made.stderr
    url = "" if later == "unset" else f"http://127.0.0.1:{closed_port()}/v1"

    result = run_module("app.ingest", str(plain_docs), **openai_env(server, OPENAI_BASE_URL=url))

    fix = "set OPENAI_BASE_URL" if later == "unset" else "start it (or point OPENAI_BASE_URL"
    assert_clean_failure(
        result, ExitCode.PROVIDER, f"embedded with openai/{EMBED}, but ", fix, "--rebuild"
    )
    assert "but ," not in result.stderr
    assert "library, or use" not in result.stderr


def test_chat_answers_from_the_server_with_sources(
    server: OpenAITestServer, run_module: RunModule, sample_docs: Path
) -> None:
    result = run_module(
        "app.chat",
        "-q",
        QUESTION,
        **openai_env(
            server,
            EMBEDDING_PROVIDER="openai",
            CHAT_PROVIDER="openai",
            DOCS_DIR=str(sample_docs),
            MAX_ANSWER_TOKENS="300",
        ),
    )

    assert result.returncode == ExitCode.OK, result.stderr
    answer, _, sources = result.stdout.partition("Sources:")
    assert ANSWER in answer
    assert "[1] docs/about-brindlemoor.md" in sources.splitlines()
    assert f"Chat model: openai/{CHAT} (the OpenAI-compatible server" in result.stderr

    (chat,) = server.requests_to("/v1/chat/completions")
    assert chat.json is not None
    assert chat.json["model"] == CHAT
    assert chat.json["max_completion_tokens"] == 300
    assert chat.json["stream"] is True
    last_user = [m for m in chat.json["messages"] if m["role"] == "user"][-1]["content"]
    assert QUESTION in last_user
    assert '<source id="1" name="docs/about-brindlemoor.md">' in last_user
    *documents, query = server.embedding_inputs()  # the first-run ingest, then the question
    assert documents
    assert all(text.startswith(DOC) for batch in documents for text in batch)
    assert query == [QUERY + QUESTION]
    assert keys_sent(server) == {f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "docs"
    folder.mkdir()
    (folder / "ferry.txt").write_text(
        "Ferry timetable. The first ferry leaves the harbour at 06:40 on weekdays.", "utf-8"
    )
    (folder / "bakery.txt").write_text(
        "Bakery prices. A loaf of rye bread costs three crowns at the bakery.", "utf-8"
    )
    return folder


def test_serve_answers_an_openai_request_with_the_openai_provider(
    server: OpenAITestServer, corpus: Path, tmp_path: Path
) -> None:
    # A reply the sources hold: the answer check keeps it as it is.
    server.reply = "The first ferry leaves the harbour at 06:40 on weekdays [1]."
    env = serve_env(
        tmp_path / "chroma",
        EMBEDDING_PROVIDER="openai",
        CHAT_PROVIDER="openai",
        DOCS_DIR=str(corpus),
        **openai_env(server),
    )
    with ServeProcess(env) as app:
        client = openai.OpenAI(base_url=app.url + "/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(
            model="rag",
            messages=[{"role": "user", "content": "When does the first ferry leave the harbour?"}],
        )
        log = "".join(app.log)

    text = completion.choices[0].message.content or ""
    assert text.startswith(server.reply), log
    assert "- [1] `docs/ferry.txt`" in text
    (chat,) = server.requests_to("/v1/chat/completions")
    assert chat.json is not None
    assert chat.json["model"] == CHAT
    assert chat.headers["authorization"] == f"Bearer {KEY}"
    assert f"Chat model: openai/{CHAT}" in log


# --- 5. Failures while answering -----------------------------------------------------------------


def start_module(module: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """`python -m MODULE ARGS` running, so a test can change the server while it runs."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition: Callable[[], object], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert process.poll() is None, f"the CLI ended first: {process.communicate()}"
        assert time.monotonic() < deadline, "the CLI did not get there in time"
        time.sleep(0.02)


def revoke_key(srv: OpenAITestServer) -> None:
    srv.api_key = "sk-a-new-key-000000000000"


def remove_model(srv: OpenAITestServer) -> None:
    srv.models = (EMBED,)


FAILURES: dict[str, tuple[Callable[[OpenAITestServer], None], tuple[str, ...]]] = {
    "key revoked": (revoke_key, ("refused the key (HTTP 401", "OPENAI_API_KEY")),
    "model removed": (remove_model, (f"does not serve the model '{CHAT}'", "OPENAI_CHAT_MODEL")),
    "server gone": (OpenAITestServer.stop, ("is not answering", "CHAT_PROVIDER=local")),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failure_before_the_answer_is_one_message_and_exit_4(
    failure: str, plain_docs: Path
) -> None:
    """The probe saw the model and took the key; by the time the question is sent, the key is
    revoked, the model gone or the server down. Embeddings come from Ollama, so only the chat
    request meets the change."""
    change, needles = FAILURES[failure]
    with (
        OpenAITestServer(models=(EMBED, CHAT), max_model_len={CHAT: WINDOW}, api_key=KEY) as srv,
        OllamaTestServer(embedding_dim=DIM, embedder=bag_of_words_embedding) as ollama,
    ):
        process = start_module(
            "app.chat",
            "-q",
            QUESTION,
            **openai_env(
                srv,
                EMBEDDING_PROVIDER="ollama",
                CHAT_PROVIDER="openai",
                OLLAMA_BASE_URL=ollama.base_url,
                DOCS_DIR=str(plain_docs),
            ),
        )
        # The first /api/embed (the first-run ingest) comes after the chat model is resolved.
        wait_until(lambda: ollama.requests_to("/api/embed"), process)
        change(srv)
        stdout, stderr = process.communicate(timeout=120)
        chats = srv.requests_to("/v1/chat/completions")

    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert len(chats) == (0 if failure == "server gone" else 1)  # sent once, no retry
    assert ANSWER not in stdout
    assert_clean_failure(result, ExitCode.PROVIDER, srv.base_url, *needles)


def test_a_slow_server_is_given_up_after_ollama_timeout(
    run_module: RunModule, plain_docs: Path
) -> None:
    delay = 4
    with (
        OpenAITestServer(
            models=(EMBED, CHAT), max_model_len={CHAT: WINDOW}, delay=delay, reply=ANSWER
        ) as srv,
        OllamaTestServer(embedding_dim=DIM) as ollama,
    ):
        result = run_module(
            "app.chat",
            "-q",
            QUESTION,
            **openai_env(
                srv,
                EMBEDDING_PROVIDER="ollama",
                CHAT_PROVIDER="openai",
                OLLAMA_BASE_URL=ollama.base_url,
                OLLAMA_TIMEOUT="1",
                DOCS_DIR=str(plain_docs),
            ),
        )
        chats = srv.requests_to("/v1/chat/completions")

    assert len(chats) == 1  # no retry: one OLLAMA_TIMEOUT, not two
    assert_clean_failure(result, ExitCode.PROVIDER, "within 1 s (OLLAMA_TIMEOUT")


def test_a_server_gone_mid_answer_is_one_message_and_exit_4(plain_docs: Path) -> None:
    with (
        OpenAITestServer(
            models=(EMBED, CHAT), max_model_len={CHAT: WINDOW}, reply=ANSWER, piece_delay=0.3
        ) as srv,
        OllamaTestServer(embedding_dim=DIM) as ollama,
    ):
        process = start_module(
            "app.chat",
            "-q",
            QUESTION,
            **openai_env(
                srv,
                EMBEDDING_PROVIDER="ollama",
                CHAT_PROVIDER="openai",
                OLLAMA_BASE_URL=ollama.base_url,
                DOCS_DIR=str(plain_docs),
            ),
        )
        wait_until(lambda: srv.pieces_sent >= 3, process)  # the role and two words are out
        srv.stop()
        stdout, stderr = process.communicate(timeout=120)

    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert srv.streams_completed == 0
    assert ANSWER not in stdout
    assert_clean_failure(result, ExitCode.PROVIDER, "is not answering")


@pytest.mark.parametrize(
    ("status", "said", "needles"),
    [
        (
            400,
            "This model's maximum context length is 4096 tokens. However, you requested "
            "5000 tokens.",
            ("context window", "CHAT_CONTEXT_TOKENS"),
        ),
        (429, "Rate limit reached for requests", ("limiting requests (HTTP 429",)),
        (503, "The server is overloaded.", ("answered HTTP 503", "The server is overloaded.")),
    ],
)
def test_other_refusals_say_what_the_server_said_and_what_to_do(
    server: OpenAITestServer,
    make_settings: MakeSettings,
    status: int,
    said: str,
    needles: tuple[str, ...],
) -> None:
    settings = make_settings(chat_provider="openai", **openai_settings(server))
    model, _, _ = registry.build_chat_model(settings, lambda line: None)
    server.error = (status, said)

    with pytest.raises(openai.APIStatusError) as caught:
        model.invoke("Anyone there?")
    explained = registry.explain(caught.value, settings, "openai", "chat")

    assert isinstance(explained, ProviderError)
    for needle in needles:
        assert needle in str(explained)
    assert "Error code:" not in str(explained)  # the client's wrapping is not repeated
