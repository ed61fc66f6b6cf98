"""Every reader sees the library as it is now (issue 16, finding 4): `python -m app.serve` in
one process, `python -m app.ingest` (plain, `--rebuild`, `--remove`, `--watch`) in others, and
`python -m app.serve --watch`, which syncs from inside the server.

After each write, the server's next answer is checked against the files themselves: every
source the model was shown (the Ollama test server records the prompt) names a file that is
there now and carries its text as it is now (never `unknown`, never empty, never the old
text); `/api/health` counts what a fresh process finds in the store; a `where` filter on a
folder ingested meanwhile answers (no 503 "Error finding id")."""

from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.paths import PROJECT_ROOT
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, serve_env

pytestmark = pytest.mark.integration

SOURCE = re.compile(r'<source id="\d+" name="([^"]*)">\n(.*?)\n</source>', re.S)
# A fresh process's view of one collection, through Chroma itself.
STORE_TRUTH = """
import json, sys
import chromadb
from chromadb.config import Settings
client = chromadb.PersistentClient(sys.argv[1], settings=Settings(anonymized_telemetry=False))
found = client.get_collection(sys.argv[2]).get(include=["documents", "metadatas"])
print(json.dumps({"count": len(found["ids"]),
                  "chunks": [[m.get("source"), d] for m, d in zip(found["metadatas"],
                                                                   found["documents"])]}))
"""


def reply(body: dict[str, Any]) -> str:
    if body["messages"][0]["content"].startswith("Rewrite"):
        return str(body["messages"][-1]["content"])
    return "The answer [1]."


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(reply=reply, embedder=bag_of_words_embedding) as server:
        yield server


class Library:
    """Two folders of one-chunk files, a store, and the processes that read and write it."""

    def __init__(self, root: Path, ollama: OllamaTestServer) -> None:
        self.root = root
        self.ollama = ollama
        self.docs = root / "docs"
        self.notes = root / "notes"
        self.docs.mkdir()
        self.notes.mkdir()
        self.sources = [self.docs]  # the folders the library holds
        self.write("docs/ferry.txt", "Ferry timetable: the first ferry leaves at 06:40.")
        self.write("docs/bakery.txt", "Bakery prices: a loaf of rye bread costs three crowns.")
        self.env = serve_env(
            root / "chroma",
            OLLAMA_BASE_URL=ollama.base_url,
            EMBEDDING_PROVIDER="ollama",
            CHAT_PROVIDER="ollama",
            DOCS_DIR=str(self.docs),
            INGEST_WORKERS="1",
            SCORE_THRESHOLD="-1",  # every answer is shown the k nearest chunks: all of them
            RETRIEVAL_K="8",
            WATCH_DEBOUNCE="0.3",
        )
        self.lock = threading.Lock()

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def files(self) -> dict[str, str]:
        """label/path -> text, as the files are now."""
        return {
            p.relative_to(self.root).as_posix(): p.read_text(encoding="utf-8")
            for folder in self.sources
            for p in sorted(folder.rglob("*.txt"))
        }

    def ingest(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "app.ingest", *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def truth(self, collection: str) -> dict[str, Any]:
        """A collection as a process that has just opened the store sees it."""
        done = subprocess.run(
            [sys.executable, "-c", STORE_TRUTH, self.env["CHROMA_DIR"], collection],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout.splitlines()[-1]))

    def ask(self, server: ServeProcess, question: str, **body: Any) -> list[tuple[str, str]]:
        """One answer, checked; the (file, text) of each source the model was shown."""
        with self.lock:  # one question at a time: its prompt is the last one recorded
            self.ollama.clear_requests()
            with httpx.stream(
                "POST",
                server.url + "/api/chat",
                json={"question": question, **body},
                timeout=60,
            ) as response:
                assert response.status_code == 200, response.read()
                names = [line[6:].strip() for line in response.iter_lines() if "event:" in line]
            assert names[-1] == "done", names
            prompts = self.ollama.requests_to("/api/chat")
        assert prompts, "the model was not asked"
        last = prompts[-1].json
        assert last is not None
        shown = [
            (name, html.unescape(text))
            for name, text in SOURCE.findall(last["messages"][-1]["content"])
        ]
        return shown

    def check(self, server: ServeProcess, question: str, **body: Any) -> list[tuple[str, str]]:
        """The answer's sources are the files as they are now; health counts the store."""
        shown = self.ask(server, question, **body)
        files = self.files()
        assert shown, "no source was shown to the model"
        for name, text in shown:
            assert name != "unknown"
            assert text.strip()
            assert name in files, f"{name} is not a file any more"
            assert text == files[name], f"{name}: old text shown: {text!r}"
        health = httpx.get(server.url + "/api/health", timeout=30).json()
        truth = self.truth(health["store"]["collection"])
        assert all(text for _, text in truth["chunks"])
        assert health["store"]["chunks"] == truth["count"]
        assert sorted(source for source, _ in truth["chunks"]) == sorted(files)
        return shown


@pytest.fixture
def library(tmp_path: Path, ollama: OllamaTestServer) -> Library:
    return Library(tmp_path, ollama)


def test_edits_and_deletions_by_ingest_are_in_the_next_answer(library: Library) -> None:
    with ServeProcess(library.env) as server:
        assert {n for n, _ in library.check(server, "When does the ferry leave?")} == {
            "docs/ferry.txt",
            "docs/bakery.txt",
        }
        for round_ in range(3):
            library.write(
                "docs/ferry.txt", f"Ferry timetable: the first ferry leaves at 0{round_ + 7}:15."
            )
            library.write(f"docs/new{round_}.txt", f"Harbour notice {round_}: the quay is closed.")
            if round_:
                (library.docs / f"new{round_ - 1}.txt").unlink()
            (library.docs / "bakery.txt").unlink(missing_ok=True)
            library.ingest()
            shown = dict(library.check(server, "When does the ferry leave?"))
            assert f"0{round_ + 7}:15" in shown["docs/ferry.txt"]
            assert "docs/bakery.txt" not in shown
        # Having followed the write once, the server reads: it does not open the store again
        # for every later question (opening a Chroma client writes the database file, which
        # looked like another write, and so on for ever: each question reloaded the index).
        database = Path(library.env["CHROMA_DIR"]) / "chroma.sqlite3"
        time.sleep(1.5)  # the server's own look between questions (every second)
        before = database.stat().st_mtime_ns
        for _ in range(3):
            library.ask(server, "When does the ferry leave?")
            time.sleep(1.2)
        assert database.stat().st_mtime_ns == before
        assert server.stop() == 0


def test_a_folder_ingested_meanwhile_can_be_filtered_on(library: Library) -> None:
    """The issue's 503 "Error finding id" on every try: a `where` filter on a source that
    another process added (and then changed) while the server ran."""
    with ServeProcess(library.env) as server:
        library.check(server, "When does the ferry leave?")
        library.write("notes/tide.txt", "Tide table: high tide is at noon.")
        library.write("notes/bell.txt", "Bell notes: the harbour bell rings at dusk.")
        library.ingest(str(library.notes))
        library.sources.append(library.notes)
        shown = library.check(server, "When is high tide?", where=["folder=notes"])
        assert {n for n, _ in shown} == {"notes/tide.txt", "notes/bell.txt"}
        (library.notes / "bell.txt").unlink()
        for hour in ("one", "two"):
            library.write("notes/tide.txt", f"Tide table: high tide is at {hour}.")
            library.ingest(str(library.notes))
            shown = library.check(server, "When is high tide?", where=["folder=notes"])
            assert shown == [("notes/tide.txt", f"Tide table: high tide is at {hour}.")]
        library.ingest("--remove", str(library.notes))
        library.sources.remove(library.notes)
        assert {n for n, _ in library.check(server, "When is high tide?")} == {
            "docs/ferry.txt",
            "docs/bakery.txt",
        }


def test_a_rebuild_is_followed(library: Library) -> None:
    with ServeProcess(library.env) as server:
        library.check(server, "When does the ferry leave?")
        library.write("docs/ferry.txt", "Ferry timetable: the first ferry leaves at 05:55.")
        library.ingest("--rebuild")
        shown = dict(library.check(server, "When does the ferry leave?"))
        assert "05:55" in shown["docs/ferry.txt"]
        health = httpx.get(server.url + "/api/health").json()
        assert health["store"]["collection"].endswith(".2")


def wait_for(
    lines: list[str],
    process: subprocess.Popen[str] | None,
    pattern: str,
    after: int = 0,
    timeout: float = 60,
) -> int:
    """Once a line after the first `after` of `lines` (a process's output, read as it comes)
    matches `pattern`: the number of lines up to it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, line in enumerate(lines[after:], after):
            if re.search(pattern, line):
                return index + 1
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no line matching {pattern!r}:\n" + "".join(lines))


def collect(process: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_ingest_watch_next_to_a_server(library: Library) -> None:
    with ServeProcess(library.env) as server:
        library.check(server, "When does the ferry leave?")
        watch = subprocess.Popen(
            [sys.executable, "-m", "app.ingest", "--watch"],
            cwd=PROJECT_ROOT,
            env=library.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = collect(watch)
        try:
            seen = wait_for(lines, watch, "Watching")
            library.write("docs/tide.txt", "Tide table: high tide is at noon.")
            seen = wait_for(lines, watch, "chunks embedded", seen)
            assert "docs/tide.txt" in dict(library.check(server, "When is high tide?"))
            library.write("docs/tide.txt", "Tide table: high tide is at two.")
            (library.docs / "bakery.txt").unlink()
            seen = wait_for(lines, watch, "chunks embedded", seen)
            shown = dict(library.check(server, "When is high tide?"))
            assert shown["docs/tide.txt"] == "Tide table: high tide is at two."
            assert "docs/bakery.txt" not in shown
        finally:
            watch.send_signal(signal.SIGINT)
            assert watch.wait(timeout=30) == 0, "".join(lines)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_watch_keeps_the_library_in_sync_and_stops_cleanly(
    library: Library, stop: signal.Signals
) -> None:
    server = ServeProcess(library.env, "--watch").start()
    log = server.log  # the server's output, read as it comes
    try:
        seen = wait_for(log, server.process, "Watching 1 sources")
        library.check(server, "When does the ferry leave?")
        library.write("docs/tide.txt", "Tide table: high tide is at noon.")
        seen = wait_for(log, server.process, "synced docs: 1 new", seen)
        assert "docs/tide.txt" in dict(library.check(server, "When is high tide?"))
        library.write("docs/tide.txt", "Tide table: high tide is at three.")
        (library.docs / "ferry.txt").unlink()
        seen = wait_for(log, server.process, "synced docs: 1 changed, 1 deleted", seen)
        shown = dict(library.check(server, "When is high tide?"))
        assert shown["docs/tide.txt"] == "Tide table: high tide is at three."
        assert "docs/ferry.txt" not in shown
    finally:
        assert server.process is not None
        server.process.send_signal(stop)  # as a person, or a service manager, stops it
        code = server.process.wait(timeout=30)
    text = "".join(server.log)
    assert code == 0, text
    assert "Stopped." in text
    assert "Traceback" not in text
