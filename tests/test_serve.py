"""`python -m app.serve` over real HTTP: a real uvicorn process on 127.0.0.1, the Ollama test
server as chat and embedding model, and real clients (the `openai` package, LangChain's
`ChatOpenAI`, raw SSE). The chat model's reply is a function of the request, so every answer can
be checked against its own question and its own sources.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from app.paths import PROJECT_ROOT
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, ollama_env, serve_env

pytestmark = pytest.mark.integration

TOKEN = "a-test-token-of-32-characters-xx"
DOCS = {  # each file says its topic's words twice, so bag-of-words retrieval finds it
    "ferry.txt": "Ferry timetable. The first ferry leaves the harbour at 06:40 on weekdays; "
    "the ferry is back in the harbour by night.",
    "observatory.txt": "Observatory notes. The telescope mirror measures 610 mm across. "
    "How wide is a telescope mirror at an observatory? Wide enough.",
    "bakery.txt": "Bakery prices. A loaf of rye bread costs three crowns at the bakery; "
    "rye bread is what a loaf there means.",
    "lighthouse.txt": "Lighthouse log. The lighthouse lamp flashes white every nine seconds; "
    "how often the lamp flashes is set by the lighthouse keeper.",
}
TOPICS = {  # question words -> the file that holds the answer
    "When does the first ferry leave the harbour": "docs/ferry.txt",
    "How wide is the telescope mirror at the observatory": "docs/observatory.txt",
    "What does a loaf of rye bread cost at the bakery": "docs/bakery.txt",
    "How often does the lighthouse lamp flash": "docs/lighthouse.txt",
}
QUESTION_LINE = re.compile(r"Question: (.*)\Z", re.S)
FIRST_SOURCE = re.compile(r'<source id="1" name="([^"]+)">')


class Script:
    """The chat model's behaviour: answers name their question and first source; `hold` keeps
    each request busy for a while, so overlapping requests can be counted."""

    def __init__(self) -> None:
        self.hold = 0.0
        self.words = 0  # > 0: answer with this many extra words (a long stream)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def reply(self, body: dict[str, Any]) -> str:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.hold)
            messages = body["messages"]
            last = messages[-1]["content"]
            if messages[0]["content"].startswith("Rewrite"):
                # A rewrite as the check accepts one: a question keeping the follow-up's words.
                follow_up = last.split("Follow-up: ", 1)[-1].split("\n", 1)[0]
                return follow_up.removeprefix("And ").rstrip("?") + ", standalone?"
            question = QUESTION_LINE.search(last)
            source = FIRST_SOURCE.search(last)
            answer = (
                f"Answer to «{question.group(1).strip() if question else '?'}» "
                f"from {source.group(1) if source else 'nothing'} [1]."
            )
            return answer + "".join(f" word{i}" for i in range(self.words))
        finally:
            with self.lock:
                self.in_flight -= 1

    def reset(self) -> None:
        self.hold, self.words, self.most_in_flight = 0.0, 0, 0


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def ollama(script: Script) -> Iterator[OllamaTestServer]:
    with OllamaTestServer(reply=script.reply, embedder=bag_of_words_embedding) as server:
        yield server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "docs"  # the source's label: `docs/...`
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def start(tmp: Path, ollama: OllamaTestServer, corpus: Path, **settings: str) -> ServeProcess:
    env = ollama_env(
        tmp / "chroma",
        ollama.base_url,
        corpus,
        **settings,
    )
    return ServeProcess(env).start()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, ollama: OllamaTestServer, corpus: Path
) -> Iterator[ServeProcess]:
    """The default server: loopback, no token, Ollama's 4 answers at once."""
    process = start(tmp_path_factory.mktemp("serve"), ollama, corpus)
    yield process
    assert process.stop() == 0, "".join(process.log)


@pytest.fixture(scope="module")
def strict_server(
    tmp_path_factory: pytest.TempPathFactory, ollama: OllamaTestServer, corpus: Path
) -> Iterator[ServeProcess]:
    """A token, one answer at a time, one request waiting, two origins allowed."""
    process = start(
        tmp_path_factory.mktemp("strict"),
        ollama,
        corpus,
        API_TOKEN=TOKEN,
        SERVE_CONCURRENCY="1",
        SERVE_QUEUE_SIZE="1",
        SERVE_CORS_ORIGINS="http://app.example, http://other.example/",
    )
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh_script(script: Script) -> Iterator[None]:
    script.reset()
    yield
    script.reset()


def client(server: ServeProcess, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """Parse text/event-stream by hand: (event name, decoded JSON data)."""
    event, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def ask_native(server: ServeProcess, **body: Any) -> list[tuple[str, Any]]:
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


# --- OpenAI compatibility ---------------------------------------------------------------------


def test_models_are_the_chains(server: ServeProcess) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["rag", "research", "support"]
    assert all(m.object == "model" and m.owned_by == "localrag" for m in models.data)


def test_openai_client_gets_a_whole_answer_with_numbered_and_machine_readable_sources(
    server: ServeProcess,
) -> None:
    completion = client(server).chat.completions.create(
        model="rag",
        messages=[
            {"role": "system", "content": "You are a pirate."},  # below the chain's own prompt
            {"role": "user", "content": "When does the first ferry leave the harbour?"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "rag"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    text = choice.message.content or ""
    assert text.startswith(
        "Answer to «When does the first ferry leave the harbour?» from docs/ferry.txt [1]."
    )
    assert "\n\nSources:\n- [1] `docs/ferry.txt`\n" in text
    sources = (completion.model_extra or {})["sources"]
    assert sources[0]["number"] == 1
    assert sources[0]["file"] == "docs/ferry.txt"
    assert sources[0]["page"] is None
    assert 0 < sources[0]["score"] <= 1
    assert len(sources) == len(DOCS)  # k = 4 for Ollama models, one chunk per file
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


def test_openai_client_streams_chunks_that_add_up_to_the_whole_answer(
    server: ServeProcess,
) -> None:
    question = "How wide is the telescope mirror at the observatory?"
    messages: Any = [{"role": "user", "content": question}]
    whole = client(server).chat.completions.create(model="rag", messages=messages)
    stream = client(server).chat.completions.create(
        model="rag", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == whole.choices[0].message.content
    assert len(with_choices) > 5  # token by token, not one piece
    last = with_choices[-1]
    assert last.choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in with_choices[:-1]] == [None] * (
        len(with_choices) - 1
    )
    assert (last.model_extra or {})["sources"][0]["file"] == "docs/observatory.txt"
    usage_chunk = chunks[-1]  # asked for with include_usage: after the last choice, no choices
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.total_tokens > 0


def test_langchain_chat_openai_works_unchanged_and_history_is_the_conversation(
    server: ServeProcess, ollama: OllamaTestServer
) -> None:
    chat = ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model="rag", max_retries=0)
    first = chat.invoke("What does a loaf of rye bread cost at the bakery?")
    assert "from docs/bakery.txt [1]." in str(first.content)
    assert "- [1] `docs/bakery.txt`" in str(first.content)

    ollama.clear_requests()
    pieces = list(
        chat.stream(
            [
                HumanMessage("What does a loaf of rye bread cost at the bakery?"),
                AIMessage(str(first.content)),  # with the sources block, as clients send it back
                HumanMessage("And how often does the lighthouse lamp flash?"),
            ]
        )
    )
    streamed = "".join(str(p.content) for p in pieces)
    assert len(pieces) > 5
    assert "from docs/lighthouse.txt [1]." in streamed
    rewrite, answer = ollama.requests_to("/api/chat")
    assert rewrite.json is not None
    assert answer.json is not None
    search = ollama.requests_to("/api/embed")[-1].json
    assert search is not None
    assert search["input"] == [  # retrieval searched for the rewritten follow-up
        "search_query: how often does the lighthouse lamp flash, standalone?"
    ]
    assert rewrite.json["messages"][0]["content"].startswith("Rewrite")
    history = [m["content"] for m in answer.json["messages"][1:-1]]
    assert history[0] == "What does a loaf of rye bread cost at the bakery?"
    assert history[1].endswith("from docs/bakery.txt [1].")  # the sources block was taken off


# --- The native stream ------------------------------------------------------------------------


def test_native_stream_sends_question_sources_tokens_then_done(server: ServeProcess) -> None:
    events = ask_native(server, question="How often does the lighthouse lamp flash?")
    names = [name for name, _ in events]
    assert names[:2] == ["question", "sources"]
    assert names[-1] == "done"
    assert set(names[2:-1]) == {"token"}
    assert len(names) > 6
    assert events[0][1] == {"standalone_question": "How often does the lighthouse lamp flash?"}
    sources = events[1][1]
    assert sources["not_found"] is False
    assert sources["sources"][0] == {
        "number": 1,
        "file": "docs/lighthouse.txt",
        "page": None,
        "score": sources["sources"][0]["score"],
        "chunk_ids": sources["sources"][0]["chunk_ids"],
        "passage": DOCS["lighthouse.txt"],  # the chunk the model was given: the whole file
    }
    assert len(sources["sources"][0]["chunk_ids"]) >= 1
    done = events[-1][1]
    assert done["answer"] == "".join(data["text"] for name, data in events if name == "token")
    assert "from docs/lighthouse.txt [1]." in done["answer"]
    assert done["usage"]["total_tokens"] > 0


def test_chains_and_health_describe_the_server(server: ServeProcess) -> None:
    chains = httpx.get(server.url + "/api/chains").json()
    assert [c["name"] for c in chains] == ["rag", "research", "support"]
    assert [c["default"] for c in chains] == [True, False, False]
    assert all(c["description"] for c in chains)
    health = httpx.get(server.url + "/api/health").json()
    assert health["chat_model"] == "ollama/llama3.2"
    assert health["embedding_model"] == "ollama/nomic-embed-text"
    assert health["store"]["chunks"] == len(DOCS)
    generation = health["generation"]
    assert {k: generation[k] for k in ("slots", "queue", "running", "waiting")} == {
        "slots": 4,
        "queue": 16,
        "running": 0,
        "waiting": 0,
    }
    assert generation["seconds_per_answer"] is None or generation["seconds_per_answer"] > 0
    assert health["limits"] == {
        "question_chars": 4000,
        "history_messages": 40,
        "history_chars": 40000,
    }


def test_files_lists_every_file_with_its_status_a_page_at_a_time(server: ServeProcess) -> None:
    listing = httpx.get(server.url + "/api/files").json()
    assert [row["file"] for row in listing["files"]] == sorted(f"docs/{name}" for name in DOCS)
    assert {row["status"] for row in listing["files"]} == {"indexed"}
    assert all(row["chunks"] == 1 and row["pages"] == 1 for row in listing["files"])
    assert listing["counts"] == {"indexed": len(DOCS), "ocr": 0, "skipped": 0, "failed": 0}
    page = httpx.get(
        server.url + "/api/files", params={"source": "docs", "limit": 2, "offset": 1}
    ).json()
    assert (page["total"], len(page["files"])) == (len(DOCS), 2)
    assert page["files"] == listing["files"][1:3]
    assert httpx.get(server.url + "/api/files", params={"status": "ocr"}).json()["files"] == []
    wrong = httpx.get(server.url + "/api/files", params={"status": "lost"})
    assert wrong.status_code == 422
    missing = httpx.get(server.url + "/api/files", params={"source": "elsewhere/a.txt"})
    assert missing.status_code == 404
    assert missing.json()["param"] == "source"
    assert "docs" in missing.json()["detail"]


def test_a_filter_applies_to_its_own_request_only(server: ServeProcess) -> None:
    question = "When does the first ferry leave the harbour?"
    with ThreadPoolExecutor(2) as pool:
        filtered = pool.submit(ask_native, server, question=question, where=["file=bakery.txt"])
        free = pool.submit(ask_native, server, question=question)
    only_bakery = dict(filtered.result())["sources"]["sources"]
    assert [s["file"] for s in only_bakery] == ["docs/bakery.txt"]
    assert dict(free.result())["sources"]["sources"][0]["file"] == "docs/ferry.txt"


# --- Concurrency --------------------------------------------------------------------------


def test_eight_parallel_requests_each_get_their_own_answer(
    server: ServeProcess, script: Script
) -> None:
    script.hold = 0.4
    asks = [(f"{words} (request {i})?", source) for i, (words, source) in enumerate(TOPICS.items())]
    asks += [(f"{words} (request {i + 4})?", src) for i, (words, src) in enumerate(TOPICS.items())]

    def ask(number: int) -> str:
        question, _ = asks[number]
        if number % 2:  # half through the OpenAI route, half through the native one
            done = dict(ask_native(server, question=question))["done"]
            return str(done["answer"])
        reply = client(server).chat.completions.create(
            model="rag", messages=[{"role": "user", "content": question}]
        )
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    for (question, source), answer in zip(asks, answers, strict=True):
        assert answer.startswith(f"Answer to «{question}» from {source} [1].")
    assert script.most_in_flight >= 2  # Ollama answers run side by side...
    assert script.most_in_flight <= 4  # ...at most SERVE_CONCURRENCY's default of 4


def test_one_at_a_time_and_a_full_queue_answers_503_with_retry_after(
    strict_server: ServeProcess, script: Script
) -> None:
    script.hold = 1.5
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def ask(number: int) -> httpx.Response:
        time.sleep(0.2 * number)  # the first two are admitted before the others arrive
        body = {"model": "rag", "messages": [{"role": "user", "content": f"ferry {number}?"}]}
        return httpx.post(
            strict_server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60
        )

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(ask, range(4)))
    assert [r.status_code for r in responses] == [200, 200, 503, 503]
    for busy in responses[2:]:
        assert int(busy.headers["Retry-After"]) >= 1
        error = busy.json()["error"]
        assert "The server is busy" in error["message"]
        assert "SERVE_QUEUE_SIZE=1" in error["message"]
    for number, answered in enumerate(responses[:2]):
        assert f"ferry {number}?" in answered.json()["choices"][0]["message"]["content"]
    assert script.most_in_flight == 1  # one answer at a time, the second waited


def test_a_request_that_waits_for_its_turn_is_told_so_then_answered(
    strict_server: ServeProcess, script: Script
) -> None:
    script.hold = 1.0
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def ask(question: str) -> list[tuple[str, Any]]:
        with httpx.stream(
            "POST",
            strict_server.url + "/api/chat",
            json={"question": question},
            headers=headers,
            timeout=60,
        ) as response:
            return list(sse_events(response))

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, "How often does the lighthouse lamp flash?")
        time.sleep(0.3)
        second = pool.submit(ask, "What does a loaf of rye bread cost at the bakery?")
    assert first.result()[0][0] == "question"  # went straight in
    waited = second.result()
    assert waited[0][0] == "queued"
    assert waited[0][1]["ahead"] == 0
    assert waited[0][1]["wait_seconds"] >= 0
    assert [name for name, _ in waited[1:3]] == ["question", "sources"]
    assert "from docs/bakery.txt [1]." in dict(waited)["done"]["answer"]


def test_the_embedded_models_answer_parallel_clients_one_at_a_time(tmp_path: Path) -> None:
    """The offline default, for real: SmolLM2 in llama.cpp (whose context aborts the
    interpreter if two calls overlap) and MiniLM. Three clients at once all get answers."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ferry.txt").write_text(DOCS["ferry.txt"], encoding="utf-8")
    (docs / "bakery.txt").write_text(DOCS["bakery.txt"], encoding="utf-8")
    env = serve_env(
        tmp_path / "chroma",
        EMBEDDING_PROVIDER="local",
        CHAT_PROVIDER="local",
        DOCS_DIR=str(docs),
        INGEST_WORKERS="1",
        MAX_ANSWER_TOKENS="24",
        SCORE_THRESHOLD="-1",  # always ask the model: that is what is tested
    )
    with ServeProcess(env) as local:
        questions = ["When does the first ferry leave?", "What does rye bread cost?"] * 2

        def ask(question: str) -> Any:
            return client(local).chat.completions.create(
                model="rag", messages=[{"role": "user", "content": question}]
            )

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, questions))
        health = httpx.get(local.url + "/api/health").json()
    assert health["chat_model"] == "local/SmolLM2-135M-Instruct"
    assert health["generation"]["slots"] == 1
    for question, answer in zip(questions, answers, strict=True):
        expected = f"{docs.name}/ferry.txt" if "ferry" in question else f"{docs.name}/bakery.txt"
        assert (answer.model_extra or {})["sources"][0]["file"] == expected
        text = answer.choices[0].message.content or ""
        assert text.split("\n\nSources:")[0].strip()  # the model wrote something
    assert local.stop() == 0


def test_a_client_that_disconnects_stops_its_generation(
    server: ServeProcess, ollama: OllamaTestServer, script: Script
) -> None:
    script.words = 400
    ollama.piece_delay = 0.02  # 8 s for the whole reply
    dropped_before = ollama.streams_dropped
    try:
        with httpx.stream(
            "POST", server.url + "/api/chat", json={"question": "ferry?"}, timeout=30
        ) as response:
            for name, _ in sse_events(response):
                if name == "token":
                    break  # hang up at the first token
        deadline = time.monotonic() + 10
        while ollama.streams_dropped == dropped_before and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ollama.piece_delay = 0.0
    assert ollama.streams_dropped == dropped_before + 1  # our server hung up on the model
    sent = ollama.pieces_sent
    time.sleep(0.3)
    assert ollama.pieces_sent == sent  # and no more tokens were generated
    generation = httpx.get(server.url + "/api/health").json()["generation"]
    assert generation["running"] == generation["waiting"] == 0


def test_a_whole_answer_also_stops_when_its_client_leaves(
    server: ServeProcess, ollama: OllamaTestServer, script: Script
) -> None:
    script.words = 400
    ollama.piece_delay = 0.02
    dropped_before = ollama.streams_dropped
    body = {"model": "rag", "messages": [{"role": "user", "content": "ferry?"}]}
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1.0)
        deadline = time.monotonic() + 10
        while ollama.streams_dropped == dropped_before and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ollama.piece_delay = 0.0
    assert ollama.streams_dropped == dropped_before + 1


# --- Errors a person can act on -------------------------------------------------------------


def test_a_model_server_failure_mid_answer_is_an_error_event_with_the_fix(
    server: ServeProcess, ollama: OllamaTestServer
) -> None:
    models = ollama.models
    ollama.models = ("nomic-embed-text:latest",)  # llama3.2 "deleted" while serving
    messages: Any = [{"role": "user", "content": "ferry?"}]
    try:
        events = ask_native(server, question="ferry?")
        with pytest.raises(openai.APIError) as caught:
            list(
                client(server).chat.completions.create(model="rag", messages=messages, stream=True)
            )
        with pytest.raises(openai.APIStatusError) as whole:
            client(server).chat.completions.create(model="rag", messages=messages)
    finally:
        ollama.models = models
    name, data = events[-1]
    assert name == "error"
    assert "does not have the model 'llama3.2'" in data["message"]
    assert "ollama pull llama3.2" in data["message"]
    assert data["status"] == 502
    assert "ollama pull llama3.2" in caught.value.message
    assert whole.value.status_code == 502
    assert "ollama pull llama3.2" in whole.value.message


def test_a_store_rebuilt_under_the_server_is_followed(server: ServeProcess) -> None:
    rebuild = subprocess.run(
        [sys.executable, "-m", "app.ingest", "--rebuild"],
        cwd=PROJECT_ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuild.returncode == 0, rebuild.stderr
    question = "When does the first ferry leave the harbour?"
    # The next request follows the library to the rebuilt collection (the old one is gone).
    events = dict(ask_native(server, question=question))
    assert "error" not in events, events
    assert events["sources"]["sources"][0]["file"] == "docs/ferry.txt"
    assert "from docs/ferry.txt [1]." in events["done"]["answer"]
    health = httpx.get(server.url + "/api/health").json()
    assert health["store"]["collection"].endswith(".2")


def test_unknown_chain_is_404_naming_the_ones_there_are(server: ServeProcess) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "Unknown chain 'gpt-4o'. Available: rag, research, support." in str(caught.value)
    response = httpx.post(server.url + "/api/chat", json={"question": "hi", "chain": "nope"})
    assert response.status_code == 404
    assert "Available: rag, research, support" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"question": "unterminated', "body", "JSON decode error"),
        (b"{}", "question", "Field required"),
        (b'{"questoin": "typo"}', "questoin", "Extra inputs are not permitted"),
        (b'{"question": "hi", "history": [{"role": "bot", "content": "x"}]}', "history", "role"),
        (b'{"question": "hi", "where": ["colour=red"]}', "where[0]", "file=PATH"),
        (b'{"question": ""}', "question", "at least 1 character"),
    ],
)
def test_bad_input_to_the_native_route_is_4xx_naming_the_field(
    server: ServeProcess, body: bytes, field: str, words: str
) -> None:
    response = httpx.post(
        server.url + "/api/chat", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    payload = response.json()
    message = payload.get("message") or payload["detail"]
    assert field in message or field == payload.get("param")
    assert words in message
    assert "Traceback" not in response.text


def test_bad_input_to_the_openai_route_is_an_openai_error_naming_the_field(
    server: ServeProcess,
) -> None:
    url = server.url + "/v1/chat/completions"
    wrong_type = httpx.post(url, json={"model": "rag", "messages": [{"role": "user"}, 5]})
    assert wrong_type.status_code == 422
    error = wrong_type.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[1]"
    not_a_question = httpx.post(
        url,
        json={
            "model": "rag",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ],
        },
    )
    assert not_a_question.status_code == 400
    assert "last message must come from the user" in not_a_question.json()["error"]["message"]
    image = httpx.post(
        url,
        json={
            "model": "rag",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        },
    )
    assert image.status_code == 400
    assert image.json()["error"]["param"] == "messages[0].content"


def test_limits_on_question_and_history_are_413_with_the_setting_to_change(
    server: ServeProcess,
) -> None:
    long = httpx.post(server.url + "/api/chat", json={"question": "x" * 4001})
    assert long.status_code == 413
    assert long.json()["param"] == "question"
    assert "4,001 characters" in long.json()["detail"]
    assert "SERVE_MAX_QUESTION_CHARS" in long.json()["detail"]
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * 21
    chatty = httpx.post(server.url + "/api/chat", json={"question": "hi", "history": history})
    assert chatty.status_code == 413
    assert "SERVE_MAX_HISTORY_MESSAGES" in chatty.json()["detail"]
    wordy = [
        {"role": "user", "content": "w" * 20001},
        {"role": "assistant", "content": "w" * 20001},
    ]
    verbose = httpx.post(server.url + "/api/chat", json={"question": "hi", "history": wordy})
    assert verbose.status_code == 413
    assert "SERVE_MAX_HISTORY_CHARS" in verbose.json()["detail"]
    huge = httpx.post(
        server.url + "/api/chat",
        content=b'{"question": "' + b"x" * (2 << 20) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    with pytest.raises(openai.APIStatusError) as caught:
        client(server).chat.completions.create(
            model="rag", messages=[{"role": "user", "content": "x" * 4001}]
        )
    assert caught.value.status_code == 413
    assert "SERVE_MAX_QUESTION_CHARS" in caught.value.message
    generation = httpx.get(server.url + "/api/health").json()["generation"]
    assert generation["running"] == generation["waiting"] == 0  # refused requests left no place


# --- Safe by default ------------------------------------------------------------------------


def test_a_token_is_checked_on_every_route(strict_server: ServeProcess) -> None:
    url = strict_server.url
    routes = [
        ("GET", "/v1/models", None),
        ("POST", "/v1/chat/completions", {"model": "rag", "messages": []}),
        ("GET", "/api/health", None),
        ("GET", "/api/chains", None),
        ("POST", "/api/chat", {"question": "hi"}),
        ("GET", "/openapi.json", None),
    ]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}):
            response = httpx.request(method, url + path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "API_TOKEN" in response.text
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(url + "/v1/models", headers=good).status_code == 200
    assert httpx.get(url + "/openapi.json", headers=good).json()["info"]["title"] == "localrag"
    # The page holds no data and is where a person types the token: served without it.
    assert httpx.get(url + "/").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client(strict_server, api_key="wrong").models.list()
    assert client(strict_server, api_key=TOKEN).models.list().data[0].id == "rag"


def test_requests_naming_another_host_are_refused_on_loopback(server: ServeProcess) -> None:
    """A page whose domain is re-pointed at 127.0.0.1 (DNS rebinding) sends its own Host."""
    response = httpx.get(server.url + "/api/health", headers={"Host": "attacker.example"})
    assert response.status_code == 400
    assert "only on loopback" in response.json()["detail"]
    assert httpx.get(server.url + "/api/health", headers={"Host": "localhost"}).status_code == 200


def test_no_cors_unless_configured(server: ServeProcess) -> None:
    preflight = httpx.options(
        server.url + "/v1/chat/completions",
        headers={
            "Origin": "http://example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = httpx.get(server.url + "/v1/models", headers={"Origin": "http://example.org"})
    assert "access-control-allow-origin" not in simple.headers


def test_configured_origins_may_call_from_a_browser(strict_server: ServeProcess) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            strict_server.url + "/api/chat",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    allowed = preflight("http://other.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://other.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = preflight("http://elsewhere.example")
    assert "access-control-allow-origin" not in refused.headers
    # A page elsewhere that shows a cited page can read what the picture says about itself.
    simple = httpx.get(
        strict_server.url + "/v1/models",
        headers={"Origin": "http://other.example", "Authorization": f"Bearer {TOKEN}"},
    )
    assert "x-passage-marked" in simple.headers["access-control-expose-headers"].lower()


def test_the_page_forbids_scripts_other_than_its_own(server: ServeProcess) -> None:
    page = httpx.get(server.url + "/")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'sha256-" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "connect-src 'self'" in policy
    assert "innerHTML" not in page.text.replace("never through innerHTML", "")


def test_binding_beyond_loopback_without_a_token_is_refused(
    run_module: Any, tmp_path: Path
) -> None:
    result = run_module(
        "app.serve", "--host", "0.0.0.0", "--port", "0", CHROMA_DIR=str(tmp_path), timeout=120
    )
    assert result.returncode == 2
    assert "set API_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Embeddings:" not in result.stderr  # refused before any model was loaded


def test_a_port_in_use_is_a_clear_error(run_module: Any, server: ServeProcess) -> None:
    port = server.url.rsplit(":", 1)[1]
    result = run_module("app.serve", "--port", port, timeout=120)
    assert result.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr
