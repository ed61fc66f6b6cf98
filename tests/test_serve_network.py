"""`python -m app.serve` under a bad network (issue 16, findings 10 and 13): clients that send
nothing, their headers a byte at a time, a body that never ends, far too many connections, or
read nothing of their answer; requests that wait in the queue. Real server processes on
127.0.0.1, raw sockets and httpx, the Ollama test server as the model."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, ollama_env

pytestmark = pytest.mark.integration

TOKEN = "a-network-test-token-0123456789ab"
DOCS = {
    "ferry.txt": "Ferry timetable. The first ferry leaves the harbour at 06:40 on weekdays.",
    "bakery.txt": "Bakery prices. A loaf of rye bread costs three crowns at the bakery.",
}


class Model:
    """The chat model's replies: a question with "slow" in it makes the model think for `hold`
    seconds first; `words` makes every answer long (each word `width` characters more)."""

    def __init__(self) -> None:
        self.hold = 0.0
        self.words = 0
        self.width = 0

    def reply(self, body: dict[str, Any]) -> str:
        last = str(body["messages"][-1]["content"])
        if body["messages"][0]["content"].startswith("Rewrite"):
            return last
        if "slow" in last:
            time.sleep(self.hold)
        padding = "x" * self.width
        return "The answer [1]." + "".join(f" word{i}{padding}" for i in range(self.words))


@pytest.fixture(scope="module")
def model() -> Model:
    return Model()


@pytest.fixture(autouse=True)
def _reset(model: Model) -> Iterator[None]:
    yield
    model.hold, model.words, model.width = 0.0, 0, 0


@pytest.fixture(scope="module")
def ollama(model: Model) -> Iterator[OllamaTestServer]:
    with OllamaTestServer(reply=model.reply, embedder=bag_of_words_embedding) as server:
        yield server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def start(
    tmp: Path, ollama: OllamaTestServer, corpus: Path, *args: str, **settings: str
) -> ServeProcess:
    env = ollama_env(
        tmp / "chroma",
        ollama.base_url,
        corpus,
        **settings,
    )
    return ServeProcess(env, *args).start()


@pytest.fixture(scope="module")
def one_slot(
    tmp_path_factory: pytest.TempPathFactory, ollama: OllamaTestServer, corpus: Path
) -> Iterator[ServeProcess]:
    """Default connection limits; one answer at a time (as with the embedded model)."""
    process = start(
        tmp_path_factory.mktemp("one"), ollama, corpus, SERVE_CONCURRENCY="1", SERVE_QUEUE_SIZE="4"
    )
    yield process
    assert process.stop() == 0, "".join(process.log)


@pytest.fixture(scope="module")
def quick(
    tmp_path_factory: pytest.TempPathFactory, ollama: OllamaTestServer, corpus: Path
) -> Iterator[ServeProcess]:
    """Short limits, a token, few connections."""
    process = start(
        tmp_path_factory.mktemp("quick"),
        ollama,
        corpus,
        "--idle-timeout=2",
        "--body-timeout=2",
        "--stall-timeout=2",
        "--max-connections=6",
        API_TOKEN=TOKEN,
        SERVE_CONCURRENCY="1",
    )
    yield process
    assert process.stop() == 0, "".join(process.log)


def connect(server: ServeProcess, rcvbuf: int | None = None) -> socket.socket:
    address = urlsplit(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting, so the window offered is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((address.hostname, address.port))
    return sock


def until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it did; fails
    the test if it is still open after `within` seconds."""
    started = time.monotonic()
    received = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < within:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    else:
        pytest.fail(f"the server kept the connection open for {within} s; it sent {received!r}")
    return received, time.monotonic() - started


def status_and_body(response: bytes) -> tuple[int, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def healthy(server: ServeProcess, **headers: str) -> bool:
    return httpx.get(server.url + "/api/health", headers=headers, timeout=10).status_code == 200


# --- Finding 10: what a client may hold, and for how long ------------------------------------


def test_a_connection_that_sends_nothing_is_closed(one_slot: ServeProcess) -> None:
    with connect(one_slot) as silent:
        received, after = until_closed(silent, within=12)
    assert received == b""
    assert 4 <= after <= 8  # the idle limit: 5 s
    assert healthy(one_slot)


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(one_slot: ServeProcess) -> None:
    """Slowloris: each byte arrives well within any per-read timeout, but the headers never
    end. The deadline runs from the request's first byte, whatever trickles in after it."""
    stop = threading.Event()
    with connect(one_slot) as slow:
        slow.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")

        def trickle() -> None:
            while not stop.wait(0.5):
                try:
                    slow.sendall(b"a")
                except OSError:
                    return

        dripping = threading.Thread(target=trickle, daemon=True)
        dripping.start()
        try:
            received, after = until_closed(slow, within=20)
        finally:
            stop.set()
            dripping.join()
    status, body = status_and_body(received)
    assert status == 408
    assert "headers did not arrive within 10 s" in body["detail"]
    assert 9 <= after <= 14
    assert healthy(one_slot)


def test_headers_larger_than_16_kib_are_refused(one_slot: ServeProcess) -> None:
    with connect(one_slot) as greedy:
        greedy.sendall(
            b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
            + b"a" * 65536
            + b"\r\n\r\n"
        )
        received, after = until_closed(greedy, within=10)
    status, body = status_and_body(received)
    assert status == 431
    assert "larger than this server takes (16,384 bytes)" in body["detail"]
    assert after < 2
    assert healthy(one_slot)


def test_a_body_that_never_ends_is_cut_off_with_408(quick: ServeProcess) -> None:
    with connect(quick) as stuck:
        stuck.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b'Content-Length: 100\r\n\r\n{"question": "fer'
        )
        received, after = until_closed(stuck, within=10)
    status, body = status_and_body(received)
    assert status == 408
    assert "body did not arrive within 2 s" in body["detail"]
    assert after <= 5
    assert healthy(quick, Authorization=f"Bearer {TOKEN}")


def test_the_token_is_checked_before_any_body_is_read(quick: ServeProcess) -> None:
    """A client without the token that announces a body and sends none is refused at once:
    nobody without the token can make the server wait for anything."""
    with connect(quick) as stranger:
        stranger.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
        )
        received, after = until_closed(stranger, within=10)
    status, body = status_and_body(received)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert after < 1.5  # answered at once, not after the body limit or the body deadline


def test_connections_beyond_the_limit_are_refused_and_idle_ones_let_go(
    quick: ServeProcess,
) -> None:
    """Six connections is this server's most (--max-connections=6): a seventh is answered 503
    at once; the idle ones are closed after the idle limit, and room comes back."""
    held = [connect(quick) for _ in range(6)]
    try:
        time.sleep(0.3)
        with connect(quick) as extra:
            received, after = until_closed(extra, within=5)
        status, body = status_and_body(received)
        assert status == 503
        assert "as many connections open as it keeps (6)" in body["detail"]
        assert after < 1
        for sock in held:
            until_closed(sock, within=6)  # the idle limit (2 s) closes each
    finally:
        for sock in held:
            sock.close()
    assert healthy(quick, Authorization=f"Bearer {TOKEN}")


def test_a_client_that_reads_nothing_does_not_hold_the_only_slot(
    one_slot: ServeProcess, model: Model
) -> None:
    """A long answer to a client that reads none of it: the answer is made (and buffered) at
    the model's pace, so the one slot is free again as soon as it is made, and the next client
    is answered while the first still reads nothing."""
    model.words, model.width = 2000, 2500  # 5 MB: more than Linux's socket buffers take (4 MB)
    body = json.dumps({"question": "When does the first ferry leave?"}).encode()
    with connect(one_slot, rcvbuf=4096) as sleeper:
        sleeper.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(1)  # it is answering
        model.words = model.width = 0
        started = time.monotonic()
        with httpx.stream(
            "POST", one_slot.url + "/api/chat", json={"question": "rye bread?"}, timeout=60
        ) as response:
            names = [line for line in response.iter_lines() if line.startswith("event:")]
        waited = time.monotonic() - started
    assert names[-1] == "event: done"
    assert waited < 30, f"the second client waited {waited:.0f} s for the slot"


def test_a_client_that_takes_nothing_of_its_answer_is_dropped(
    quick: ServeProcess, model: Model
) -> None:
    model.words, model.width = 1000, 1000  # 1 MB: more than the server's socket buffers
    body = json.dumps({"question": "When does the first ferry leave?"}).encode()
    with connect(quick, rcvbuf=4096) as sleeper:
        sleeper.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(6)  # the answer is made in a second or two; then 2 s of taking nothing
        received, _ = until_closed(sleeper, within=10)
    assert b"event: done" not in received  # dropped before the end of the answer
    assert healthy(quick, Authorization=f"Bearer {TOKEN}")


# --- Finding 10: keep-alive bytes; finding 13: honest queue figures ------------------------


def arrivals(server: ServeProcess, question: str) -> tuple[list[tuple[float, bytes]], float]:
    """Each chunk of a native stream with the time it arrived, and the request's start."""
    started = time.monotonic()
    chunks: list[tuple[float, bytes]] = []
    with httpx.stream(
        "POST", server.url + "/api/chat", json={"question": question}, timeout=60
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            chunks.append((time.monotonic(), chunk))
    return chunks, started


def longest_silence(chunks: list[tuple[float, bytes]], started: float) -> float:
    times = [started] + [t for t, _ in chunks]
    return max(b - a for a, b in itertools.pairwise(times))


def test_streams_that_wait_get_keep_alive_bytes(one_slot: ServeProcess, model: Model) -> None:
    """The first request's model thinks for 12 s before its first token; the second waits
    those 12 s in the queue. Neither stream is ever silent for more than a few seconds."""
    model.hold = 12
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(arrivals, one_slot, "slow: when does the first ferry leave?")
        time.sleep(1)
        queued = pool.submit(arrivals, one_slot, "What does rye bread cost?")
        for future in (slow, queued):
            chunks, started = future.result()
            assert chunks[-1][0] - started > 10  # it did wait
            assert longest_silence(chunks, started) < 7
            stream = b"".join(c for _, c in chunks)
            assert b": keep-alive" in stream
            assert b"event: done" in stream


def queued_places(server: ServeProcess, question: str) -> list[dict[str, Any]]:
    places = []
    with httpx.stream(
        "POST", server.url + "/api/chat", json={"question": question}, timeout=60
    ) as response:
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "queued":
                places.append(json.loads(line[5:]))
    return places


def test_each_queued_request_is_told_its_own_place_as_it_moves(
    one_slot: ServeProcess, model: Model
) -> None:
    """Three requests arrive at once behind a running one: they are told 0, 1 and 2 ahead
    (not each the length of the queue), and each hears its place move until its turn."""
    model.hold = 1.5
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(queued_places, one_slot, "slow: first ferry?")
        time.sleep(0.5)
        waiting = [pool.submit(queued_places, one_slot, f"slow: rye bread {i}?") for i in range(3)]
        assert running.result() == []  # it went straight in
        heard = [[p["ahead"] for p in future.result()] for future in waiting]
    assert sorted(h[0] for h in heard) == [0, 1, 2]
    for places in heard:
        assert places == list(range(places[0], -1, -1))  # 2, 1, 0: every move, down to 0


@pytest.fixture
def queue_of_one(tmp_path: Path, ollama: OllamaTestServer, corpus: Path) -> Iterator[ServeProcess]:
    process = start(tmp_path, ollama, corpus, SERVE_CONCURRENCY="1", SERVE_QUEUE_SIZE="1")
    yield process
    process.stop()


def test_retry_after_is_the_measured_wait_and_the_message_says_the_same(
    queue_of_one: ServeProcess, model: Model
) -> None:
    """Answers take ~2 s here. With one running and one waiting, a third request is told to
    come back when a place frees (about 2 s, from the measured pace and how long the running
    answer has run), in the header and in the text alike; coming back then, it is let in."""
    model.hold = 2
    url = queue_of_one.url + "/v1/chat/completions"

    def ask(question: str) -> httpx.Response:
        body = {"model": "rag", "messages": [{"role": "user", "content": question}]}
        return httpx.post(url, json=body, timeout=60)

    for i in range(3):  # the pace is measured, not assumed
        assert ask(f"slow: ferry {i}?").status_code == 200
    health = httpx.get(queue_of_one.url + "/api/health").json()
    assert 2 <= health["generation"]["seconds_per_answer"] < 3.5
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(ask, "slow: ferry running?")
        time.sleep(0.5)
        waiting = pool.submit(ask, "slow: ferry waiting?")
        time.sleep(0.5)
        busy = ask("slow: ferry refused?")
        assert busy.status_code == 503
        retry = int(busy.headers["Retry-After"])
        assert 1 <= retry <= 3  # ~2 s per answer, the running one began ~1 s ago
        message = busy.json()["error"]["message"]
        assert f"in about {retry} s" in message
        assert f"Retry-After: {retry}" in message
        assert "a few seconds" not in message
        time.sleep(retry + 0.3)
        again = ask("slow: ferry again?")  # a place has freed: let in (and answered)
        assert again.status_code == 200
        assert running.result().status_code == waiting.result().status_code == 200
