"""Every file's status and a sync's live progress, where a person looks (issues 19 and 21):
`python -m app.serve` runs while `python -m app.ingest` reads a folder holding a slow scan;
`GET /api/library` shows the sync with the file being parsed and its OCR page, then none once
it ended; the skipped and failed files with their reasons (the scan that outran PARSE_TIMEOUT
named); a sync killed mid-way leaves a snapshot that is ignored; the web page, in headless
Chromium, shows the live progress, then the library with a failed file's reason, and a planted
file name runs no script; the server's own `--watch` publishes its sync the same way. Real
processes, real OCR; embeddings from the Ollama test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.paths import PROJECT_ROOT
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, ollama_env
from tests.test_ocr import draw, scanned_pdf
from tests.test_serve_page import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

PLANTED_NAME = "<img src=x onerror=window.__pwned='library-name'>.xyz"
SCAN_PAGES = 40  # read by OCR a page at a time: far longer than PARSE_TIMEOUT below
PARSE_TIMEOUT = "8"


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(
        reply=lambda body: "The answer [1].", embedder=bag_of_words_embedding
    ) as s:
        yield s


def make_inbox(inbox: Path) -> None:
    inbox.mkdir()
    (inbox / "notes.txt").write_text("The ferry leaves at 07:15 from the North Slip.")
    (inbox / "drawing.xyz").write_bytes(b"\x00CAD drawing\x00")
    (inbox / PLANTED_NAME).write_text("not a type we read")
    (inbox / "damaged.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R")
    scanned_pdf(
        inbox / "scan.pdf",
        [
            draw([f"Page {n} of the harbour log.", "The tide was high at noon."])
            for n in range(SCAN_PAGES)
        ],
    )


def start_ingest(
    env: dict[str, str], folder: Path, log: Path, **settings: str
) -> subprocess.Popen[str]:
    """`python -m app.ingest FOLDER` in its own process group (killed whole, workers too)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.ingest", str(folder)],
        cwd=PROJECT_ROOT,
        env=env | settings,
        stdin=subprocess.DEVNULL,
        stdout=(log.with_suffix(".out")).open("w"),
        stderr=(log.with_suffix(".err")).open("w"),
        text=True,
        start_new_session=True,
    )


def library(server: ServeProcess, **params: Any) -> dict[str, Any]:
    response = httpx.get(server.url + "/api/library", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(
    server: ServeProcess, process: subprocess.Popen[str], seen: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll /api/library until `seen` holds for its `sync`; fail if the ingest ends first."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        sync = library(server)["sync"]
        if sync is not None and seen(sync):
            return dict(sync)
        assert process.poll() is None, "the ingest ended before its sync was seen"
        time.sleep(0.2)
    pytest.fail("the running sync never showed up in /api/library")


def parsing_the_scan(sync: dict[str, Any]) -> bool:
    return any(p["file"] == "inbox/scan.pdf" and "ocr_page" in p for p in sync["parsing"])


@pytest.mark.timeout(900)
def test_library_shows_a_running_sync_its_slow_file_and_every_status(
    tmp_path: Path,
    ollama: OllamaTestServer,
    browser: Any,  # noqa: F811
) -> None:
    docs, inbox = tmp_path / "docs", tmp_path / "inbox"
    docs.mkdir()
    (docs / "bakery.txt").write_text("The bakery sells rye bread.")
    make_inbox(inbox)
    env = ollama_env(
        tmp_path / "chroma",
        ollama.base_url,
        docs,
    )
    with ServeProcess(env) as server:
        assert library(server)["sync"] is None

        # 1. An ingest while the server runs: its sync, the scan being read, page by page.
        ingest = start_ingest(env, inbox, tmp_path / "first", PARSE_TIMEOUT=PARSE_TIMEOUT)
        sync = wait_for(server, ingest, parsing_the_scan)
        assert sync["pid"] == ingest.pid
        assert sync["stage"] in ("parse", "embed")
        assert sync["files"]["total"] == 3  # drawing.xyz and the planted name: skipped when found
        assert "parsing inbox/scan.pdf (OCR page " in sync["line"]
        assert 1 <= sync["parsing"][0]["ocr_page"] <= sync["parsing"][0]["ocr_pages"] == SCAN_PAGES
        assert ingest.wait(timeout=300) == 3  # some files did not go in
        out = (tmp_path / "first.out").read_text()
        err = (tmp_path / "first.err").read_text()
        assert "Traceback" not in err, err
        # The scan outran its limit, and the report names it (and a log said what was slow).
        flat = " ".join(out.split())
        assert f"inbox/scan.pdf: parsing took longer than {PARSE_TIMEOUT} s (PARSE_TIMEOUT)" in flat
        assert "parsing inbox/scan.pdf (OCR page" in err, err

        # 2. Once it ended: no sync, and every file's status with its reason.
        after = library(server)
        assert after["sync"] is None
        sources = {s["label"]: s for s in after["sources"]}
        assert sources["inbox"]["statuses"] == {"indexed": 1, "ocr": 0, "skipped": 2, "failed": 2}
        assert sources["docs"]["statuses"]["indexed"] == 1
        assert after["counts"] == {"indexed": 2, "ocr": 0, "skipped": 2, "failed": 2}
        problems = {p["file"]: p for p in after["problems"]["files"]}
        assert after["problems"]["total"] == 4
        assert "unsupported file type" in problems["inbox/drawing.xyz"]["reason"]
        assert problems["inbox/damaged.pdf"]["status"] == "failed"
        assert "damaged pdf" in problems["inbox/damaged.pdf"]["reason"].lower()
        assert "PARSE_TIMEOUT" in problems["inbox/scan.pdf"]["reason"]
        assert problems[f"inbox/{PLANTED_NAME}"]["status"] == "skipped"
        paged = library(server, limit=1, offset=1)["problems"]
        assert [p["file"] for p in paged["files"]] == [sorted(problems)[1]]
        files = httpx.get(server.url + "/api/files", params={"status": "failed"}, timeout=30)
        assert files.status_code == 200
        assert {f["file"] for f in files.json()["files"]} == {"inbox/damaged.pdf", "inbox/scan.pdf"}

        # 3. The page: the live progress of a sync, then a sync killed mid-way is not shown.
        os.utime(inbox / "scan.pdf")  # changed: the failed scan is read again
        context = browser.new_context(viewport={"width": 1000, "height": 800})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + "/")
        page.click("#library > summary")
        page.wait_for_selector("#library-problems li")
        killed = start_ingest(env, inbox, tmp_path / "killed", PARSE_TIMEOUT="600")
        try:
            wait_for(server, killed, parsing_the_scan)
            page.wait_for_selector(
                '#library-progress:has-text("parsing inbox/scan.pdf (OCR page")', timeout=30_000
            )
            assert page.is_visible("#library-sync")
        finally:
            os.killpg(killed.pid, signal.SIGKILL)  # the ingest and its parser workers
            killed.wait(timeout=60)
        left = list((tmp_path / "chroma").glob("sync-*.json"))
        assert left, "the killed sync's snapshot should still be on disk"
        assert json.loads(left[0].read_text())["pid"] == killed.pid
        assert library(server)["sync"] is None  # ...and ignored
        page.wait_for_selector("#library-sync", state="hidden", timeout=30_000)

        # The library as a person reads it: counts, the failed file's reason; the planted
        # name is text, and nothing of it ran.
        text = page.inner_text("#library")
        assert "damaged.pdf: damaged PDF" in text
        assert f"inbox/{PLANTED_NAME}: unsupported file type" in text
        time.sleep(0.5)  # an onerror would have fired by now
        assert page.evaluate("window.__pwned") is None
        assert page.eval_on_selector_all("#library img, #library script", "n => n.length") == 0
        cells = page.eval_on_selector_all(
            "#library-sources tbody tr", "rows => rows.map(r => r.innerText.split('\\t'))"
        )
        inbox_row = next(row for row in cells if row[0] == "inbox")
        assert inbox_row[1:5] == ["1", "0", "2", "2"]
        context.close()
        assert errors == []


@pytest.mark.timeout(600)
def test_the_servers_own_watch_shows_its_sync_too(tmp_path: Path, ollama: OllamaTestServer) -> None:
    """`python -m app.serve --watch` syncs in a thread of the server: a scan saved into a
    source shows as the server's own sync, with its OCR page, then as an `ocr` file."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bakery.txt").write_text("The bakery sells rye bread.")
    env = ollama_env(
        tmp_path / "chroma",
        ollama.base_url,
        docs,
        WATCH_DEBOUNCE="0.5",
    )
    with ServeProcess(env, "--watch") as server:
        assert server.process is not None
        deadline = time.monotonic() + 120
        while "Watching" not in " ".join(server.log):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.2)
        scanned_pdf(
            tmp_path / "scan.pdf",
            [draw([f"Page {n} of the tide log.", "High water at noon."]) for n in range(12)],
        )
        os.replace(tmp_path / "scan.pdf", docs / "scan.pdf")  # saved whole, as editors do
        sync = None
        deadline = time.monotonic() + 300
        while sync is None or not any(p["file"] == "docs/scan.pdf" for p in sync["parsing"]):
            assert time.monotonic() < deadline, "the watch's sync never showed up"
            sync = library(server)["sync"]
            time.sleep(0.2)
        assert sync["pid"] == server.process.pid
        while library(server)["sync"] is not None:
            assert time.monotonic() < deadline, "the watch's sync never ended"
            time.sleep(0.5)
        after = library(server)
        (source,) = after["sources"]
        assert source["statuses"] == {"indexed": 1, "ocr": 1, "skipped": 0, "failed": 0}
        assert after["ocr"] == {"files": 1, "pages": 12}
