"""Chroma server mode: CHROMA_HOST/CHROMA_PORT point the app at a real `chroma run` over HTTP.

A server from the chromadb package is started once for the module (each test uses its own
collection); the Ollama test server embeds. Stores made over HTTP are compared with clean local
ingests of the same folder.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import app.indexing.sync
from app.config import Settings, load_settings
from app.errors import ConfigError, StoreError
from app.indexing.sync import sync_collection
from app.paths import PROJECT_ROOT
from app.store import open_store
from app.store.base import ChunkCollection
from app.store.library import Library, library_name
from tests.fakes import fake_embeddings
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding, closed_port
from tests.test_crash_safety import (
    check_vector_index,
    ingest_command,
    kill_group,
    run_ingest,
    server_embeddings,
    slow_ingest_holding_the_lock,
    start_ingest,
)
from tests.test_sync import (
    BatchLimit,
    ParseSpy,
    WriteRecorder,
    assert_same_store,
    assert_store_matches_folder,
    check_bookkeeping,
    collection_of,
    read_store,
    write_doc,
)

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chroma_executable() -> str:
    found = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    assert Path(found).exists(), "the chromadb package's `chroma` command is not installed"
    return found


@dataclass
class ChromaServer:
    port: int
    path: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChromaServer:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        command = [chroma_executable(), "run", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--path", str(self.path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"chroma run exited early:\n{self.log.read_text()[-3000:]}")
            try:
                client = chromadb.HttpClient(
                    host="127.0.0.1",
                    port=self.port,
                    settings=ChromaSettings(anonymized_telemetry=False),
                )
                client.heartbeat()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"chroma run did not answer within {STARTUP_SECONDS} s:\n"
                        + self.log.read_text()[-3000:]
                    ) from None
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        return chromadb.HttpClient(
            host="127.0.0.1", port=self.port, settings=ChromaSettings(anonymized_telemetry=False)
        )


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    root = tmp_path_factory.mktemp("chroma-server")
    server = ChromaServer(free_port(), root / "data", root / "server.log").start()
    yield server
    server.stop()


@pytest.fixture
def embed_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OllamaTestServer]:
    with OllamaTestServer(embedding_dim=384, embedder=bag_of_words_embedding) as server:
        monkeypatch.setenv("EMBEDDING_PROVIDER", "ollama")
        monkeypatch.setenv("OLLAMA_BASE_URL", server.base_url)
        monkeypatch.setenv("EMBEDDING_BATCH_SIZE", "8")
        monkeypatch.setenv("OLLAMA_PROBE_TIMEOUT", "10")  # a loaded machine is slow to answer
        yield server


@pytest.fixture
def on_server(
    chroma_server: ChromaServer,
    embed_server: OllamaTestServer,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Settings:
    """This test's settings: the module's server, a collection of its own, the test embedder."""
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(chroma_server.port))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"t-{request.node.name}")[:60].strip("-")
    monkeypatch.setenv("COLLECTION_NAME", name)
    return load_settings()


def local_reference(settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A clean ingest of `folder` into a fresh local CHROMA_DIR, in this process."""
    local = settings.model_copy(
        update={"chroma_host": "", "chroma_dir": settings.chroma_dir / f"local-{time.time_ns()}"}
    )
    with monkeypatch.context() as patch:
        patch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
        embeddings = server_embeddings(local)
        sync_collection(local, [folder], embeddings)
    return read_store(collection_of(local, embeddings.info.key))


def server_snapshot(server: ChromaServer, settings: Settings) -> Any:
    assert settings.collection_name
    return read_store(server_collection(server, settings.collection_name))


def server_collection(server: ChromaServer, name: str) -> ChunkCollection | None:
    """The collection the library `name` on the server points at, read through the seam."""
    store = open_store(load_settings(chroma_host="127.0.0.1", chroma_port=server.port))
    library = Library.find(store, name)
    assert library is not None
    return library.collection()


def similarity_search(settings: Settings, embeddings: Any, question: str, k: int) -> Any:
    """The library's collection as LangChain's VectorStore (as a chain of your own uses it)."""
    collection = collection_of(settings, embeddings.info.key)
    assert collection is not None
    vectors = open_store(settings).as_vectorstore(collection, embeddings)
    return vectors.similarity_search(question, k=k)


# --- Ingest and query over HTTP ---------------------------------------------------------------


def test_ingest_rerun_edit_and_query_over_http(
    chroma_server: ChromaServer,
    on_server: Settings,
    embed_server: OllamaTestServer,
    sample_docs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = on_server
    first = run_ingest(sample_docs)
    assert first["store"] == f"Chroma server http://127.0.0.1:{chroma_server.port}"
    assert first["files"]["new"] == 8
    assert first["files"]["failed"] == 0

    # The chunks are on the server, not in the local directory, and equal a local ingest.
    assert not (settings.chroma_dir / "chroma.sqlite3").exists()
    embeddings = server_embeddings(settings)
    on_the_server = server_snapshot(chroma_server, settings)
    check_bookkeeping(on_the_server, sample_docs, settings, embeddings)
    assert_same_store(on_the_server, local_reference(settings, sample_docs, monkeypatch))
    assert len(on_the_server.ids) == first["chunks"]["added"]

    again = run_ingest(sample_docs)
    assert again["files"]["unchanged"] == 8
    assert again["chunks"] == {"added": 0, "kept": 0, "removed": 0}

    found = similarity_search(
        settings, embeddings, "Which bucket dredger works the Inner Basin?", k=3
    )
    assert found[0].metadata["source"] == "docs/town/harbour-notice.txt"
    assert "Inner Basin" in found[0].page_content

    notice = sample_docs / "town" / "harbour-notice.txt"
    notice.write_text(
        notice.read_text() + "\nThe dredger Marrowgate will be relieved by the dredger Brae.\n"
    )
    (sample_docs / "ferry" / "timetable.csv").unlink()
    edited = run_ingest(sample_docs)
    assert edited["files"] == {
        "new": 0,
        "changed": 1,
        "unchanged": 6,
        "deleted": 1,
        "failed": 0,
    }
    assert_same_store(
        server_snapshot(chroma_server, settings),
        local_reference(settings, sample_docs, monkeypatch),
        "after an edit and a delete",
    )
    check_vector_index(settings, embeddings)


def test_writes_stay_under_the_servers_max_batch_size(
    chroma_server: ChromaServer,
    on_server: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limit = 5
    settings = on_server.model_copy(update={"chunk_size": 200, "chunk_overlap": 20})
    store = open_store(settings)
    assert store.max_batch == chroma_server.client().get_max_batch_size() > 100
    folder = tmp_path / "corpus"
    for name in ("alpha", "beta", "gamma"):
        write_doc(folder / f"{name}.txt", name, 6)
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    BatchLimit(monkeypatch, limit)
    recorder = WriteRecorder(monkeypatch)
    embeddings, _ = fake_embeddings(settings)

    sync_collection(settings, [folder], embeddings)
    alpha = folder / "alpha.txt"
    alpha.write_text(alpha.read_text().replace("Paragraph 0 ", "Paragraph zero "))
    (folder / "beta.txt").unlink()
    sync_collection(settings, [folder], embeddings)

    ops = [(op, n) for op, n in recorder.writes if op in ("upsert", "update", "delete")]
    assert {op for op, _ in ops} == {"upsert", "update", "delete"}
    assert all(0 < n <= limit for _, n in ops), ops
    collection = collection_of(settings, embeddings.info.key)
    assert_store_matches_folder(
        collection, folder, settings=settings, make_embeddings=lambda: fake_embeddings(settings)[0]
    )


def test_a_reader_queries_the_server_while_an_ingest_writes_and_a_second_is_refused(
    chroma_server: ChromaServer,
    on_server: Settings,
    embed_server: OllamaTestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = on_server
    folder, writer = slow_ingest_holding_the_lock(tmp_path, embed_server, settings)
    embeddings = server_embeddings(settings)
    try:
        found = similarity_search(settings, embeddings, "Who is the lighthouse keeper?", k=1)
        assert found[0].metadata["source"] == "docs/lighthouse.txt"
        second = subprocess.run(
            ingest_command(folder),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert writer.poll() is None, "the ingest finished before the reader and second writer"
        assert second.returncode == 5, second.stderr
        assert (
            f"Another ingest is writing to Chroma server http://127.0.0.1:{chroma_server.port}"
            in second.stderr
        )
        assert f"held by process {writer.pid}" in second.stderr
        # Killed in the middle of writing over HTTP; one more run repairs the collection.
    finally:
        kill_group(writer)
    embed_server.delay = 0
    report = run_ingest(folder)
    assert report["files"]["new"] + report["files"]["changed"] > 0
    assert_same_store(
        server_snapshot(chroma_server, settings), local_reference(settings, folder, monkeypatch)
    )


# --- Headers, and a server that is not there --------------------------------------------------


@dataclass
class TokenProxy:
    """A loopback HTTP proxy in front of the Chroma server that records every request's
    headers and answers 401 unless X-Token is right, as an authenticating proxy would."""

    upstream_port: int
    token: str
    seen: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append(headers)
                body = self.rfile.read(int(headers.get("content-length") or 0))
                if headers.get("x-token") != proxy.token:
                    self.send_response(401)
                    payload = b'{"error": "Unauthorized", "message": "missing or wrong token"}'
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                hop = {"host", "connection", "keep-alive", "transfer-encoding", "x-token"}
                upstream.request(
                    self.command,
                    self.path,
                    body=body,
                    headers={k: v for k, v in headers.items() if k not in hop},
                )
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = forward

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self) -> None:  # no reverse DNS lookup
                socket.socket.bind(self.socket, self.server_address)
                self.server_address = self.socket.getsockname()
                self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_proxy(chroma_server: ChromaServer) -> Iterator[TokenProxy]:
    proxy = TokenProxy(chroma_server.port, "abc")
    yield proxy
    proxy.close()


def test_chroma_headers_are_parsed_and_sent(
    token_proxy: TokenProxy,
    embed_server: OllamaTestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "docs"
    write_doc(folder / "alpha.txt", "alpha")
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(token_proxy.port))
    monkeypatch.setenv("COLLECTION_NAME", "t-headers")

    # Without the token the proxy refuses: a clear exit 5, no traceback.
    refused = subprocess.run(
        ingest_command(folder), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 5, refused.stderr
    assert f"Cannot open the vector store at Chroma server http://127.0.0.1:{token_proxy.port}" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr

    monkeypatch.setenv("CHROMA_HEADERS", '{"X-Token": "abc"}')
    assert load_settings().chroma_headers == {"X-Token": "abc"}
    token_proxy.seen.clear()
    report = run_ingest(folder)
    assert report["files"]["new"] == 1
    assert len(token_proxy.seen) >= 3  # identity, collection, writes
    assert {h.get("x-token") for h in token_proxy.seen} == {"abc"}

    monkeypatch.setenv("CHROMA_HEADERS", "X-Token: abc")
    with pytest.raises(ConfigError, match="CHROMA_HEADERS"):
        load_settings()


def test_a_server_that_is_not_there_is_exit_5_without_a_traceback(
    embed_server: OllamaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "docs"
    write_doc(folder / "alpha.txt", "alpha")
    port = closed_port()
    monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_PORT", str(port))

    done = subprocess.run(
        ingest_command(folder), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 5
    assert (
        f"error: Cannot open the vector store at Chroma server http://127.0.0.1:{port}: "
        "Could not connect to a Chroma server. Are you sure it is running?"
    ) in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    with pytest.raises(StoreError, match="Could not connect"):
        open_store(load_settings())


def test_a_server_that_dies_mid_ingest_is_exit_5_and_the_next_run_repairs(
    embed_server: OllamaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own server, killed while an ingest writes to it, then started again on its data."""
    server = ChromaServer(free_port(), tmp_path / "server-data", tmp_path / "server.log").start()
    try:
        monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
        monkeypatch.setenv("CHROMA_PORT", str(server.port))
        folder = tmp_path / "docs"
        for i in range(40):
            write_doc(folder / f"doc-{i:02d}.txt", f"topic{i}", 8)
        embed_server.delay = 0.2
        seen = len(embed_server.requests_to("/api/embed"))
        writer = start_ingest(folder, log=tmp_path / "writer.log")
        try:
            deadline = time.monotonic() + 120
            while len(embed_server.requests_to("/api/embed")) - seen < 4:
                assert writer.poll() is None, (tmp_path / "writer.log").read_text()
                assert time.monotonic() < deadline, "the ingest never started embedding"
                time.sleep(0.02)
            server.stop(signal.SIGKILL)
            embed_server.delay = 0
            assert writer.wait(timeout=120) == 5
        finally:
            kill_group(writer)
        stderr = (tmp_path / "writer.log").read_text()
        assert "Lost the connection to the vector store at Chroma server" in stderr
        assert "Traceback" not in stderr

        server.start()
        settings = load_settings()
        written = read_store(server_collection(server, _default_name(settings)))
        assert len(written.ids) > 0
        report = run_ingest(folder)
        assert report["files"]["new"] + report["files"]["changed"] > 0
        assert_same_store(
            read_store(server_collection(server, _default_name(settings))),
            local_reference(settings, folder, monkeypatch),
            "after the server came back",
        )
    finally:
        server.stop()


def _default_name(settings: Settings) -> str:
    return library_name(settings, server_embeddings(settings).info.key)


def test_a_chat_on_another_machine_catches_its_keyword_index_up(
    on_server: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest on machine A, chat on machine B (its own CHROMA_DIR, so its own keyword index):
    B's index follows the library's generations, catching up on just the changed source."""
    from app.models.registry import ChatCapabilities
    from app.session.resources import Resources, catch_up_keyword_index
    from app.store.keyword_index import open_keyword_index
    from tests.fakes import FailingChatModel

    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    machine_a = on_server
    machine_b = on_server.model_copy(update={"chroma_dir": tmp_path / "machine-b"})
    embeddings, _ = fake_embeddings(machine_a)
    notes, papers = tmp_path / "notes", tmp_path / "papers"
    write_doc(notes / "alpha.txt", "alpha", 3)
    write_doc(papers / "beta.txt", "beta", 3)
    sync_collection(machine_a, [notes], embeddings)
    sync_collection(machine_a, [papers], embeddings)

    store = open_store(machine_b)
    library = Library.find(store, str(machine_b.collection_name))
    assert library is not None
    collection = library.collection()
    assert collection is not None
    index = open_keyword_index(machine_b, store, collection)  # B's own: empty
    chat = Resources(
        machine_b,
        embeddings,
        store,
        library,
        collection,
        index,
        FailingChatModel(messages=iter([])),
        ChatCapabilities("fake", "chat", context_window=4096, default_k=4),
    )
    assert index.behind(library.record) == ["notes", "papers"]
    assert catch_up_keyword_index(chat) == 2  # as a chat starting up does

    def stored_ids() -> set[str]:
        return {chunk_id for chunk_id, _ in collection.rows()}

    assert index.ids() == stored_ids()
    assert index.behind(library.record) == []

    write_doc(notes / "gamma.txt", "gamma", 2)
    sync_collection(machine_a, [notes], embeddings)  # only `notes` changes
    library.reload()
    assert index.behind(library.record) == ["notes"]
    assert catch_up_keyword_index(chat) == 1  # `papers` is not read
    assert index.ids() == stored_ids()
    assert index.behind(library.record) == []
    chat.close()


# --- Two machines, one server -------------------------------------------------------------------


def ingest_on_another_machine(
    tmp_path: Path, folder: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m app.ingest FOLDER` with a CHROMA_DIR (so a lock directory) of its own, as on
    a second machine pointed at the same server."""
    return subprocess.run(
        ingest_command(folder),
        cwd=PROJECT_ROOT,
        env={**os.environ, "CHROMA_DIR": str(tmp_path / "machine-b")},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_two_machines_syncing_different_sources_never_lose_a_record(
    chroma_server: ChromaServer,
    on_server: Settings,
    embed_server: OllamaTestServer,
    tmp_path: Path,
) -> None:
    """Two ingests that share no lock directory (as on two machines) write one library: the
    second is refused while the first holds the store's lease, then both sources are kept.
    Without the lease both ran, and the record written last dropped the other's source."""
    settings = on_server
    papers = tmp_path / "papers"
    write_doc(papers / "tide.txt", "tide", 3)
    _, writer = slow_ingest_holding_the_lock(tmp_path, embed_server, settings)
    try:
        second = ingest_on_another_machine(tmp_path, papers, timeout=120)
        assert writer.poll() is None, "the first ingest finished before the second was refused"
        assert second.returncode == 5, second.stderr
        assert f"held by process {writer.pid} on {socket.gethostname()}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        embed_server.delay = 0
    assert writer.wait(timeout=300) == 0
    again = ingest_on_another_machine(tmp_path, papers)
    assert again.returncode == 0, again.stderr
    store = open_store(settings)
    assert settings.collection_name
    library = Library.find(store, settings.collection_name)
    assert library is not None
    assert {Path(s.path).name for s in library.sources} == {"docs", "papers"}
    assert all(s.chunks > 0 for s in library.sources)
    assert not [n for n in store.record_names() if n.startswith("writer-lease")]


def test_a_killed_writers_lease_does_not_block_the_next(
    chroma_server: ChromaServer,
    on_server: Settings,
    embed_server: OllamaTestServer,
    tmp_path: Path,
) -> None:
    """SIGKILL leaves the lease in the store; a writer on the same host sees its process gone
    and takes the next lease at once (another host would wait out LEASE_SECONDS)."""
    settings = on_server
    folder, writer = slow_ingest_holding_the_lock(tmp_path, embed_server, settings)
    kill_group(writer)
    embed_server.delay = 0
    store = open_store(settings)
    assert [n for n in store.record_names() if n.startswith("writer-lease")] == ["writer-lease.1"]
    done = ingest_on_another_machine(tmp_path, folder)
    assert done.returncode == 0, done.stderr
    assert not [n for n in store.record_names() if n.startswith("writer-lease")]


def test_of_two_clients_creating_one_record_exactly_one_succeeds(
    chroma_server: ChromaServer, on_server: Settings
) -> None:
    first, second = open_store(on_server), open_store(on_server)
    assert first.create_record("t-race", "a") is True
    assert second.create_record("t-race", "b") is False
    assert second.read_record("t-race") == "a"
    first.drop_record("t-race")
    assert second.read_record("t-race") is None
