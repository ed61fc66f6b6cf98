"""Live progress of a sync (issue 21): the events a sync of a generated folder reports, in
order; the snapshot other processes read while it runs, gone after; what parser workers report
about a long parse (its file and OCR page) and how a dead worker's or a killed sync's report is
ignored. In-process, with the fake embedder and parsing done here (tests/test_sync.py's spy);
tests/test_library_api.py walks the same through real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import app.indexing.sync
from app.config import Settings
from app.indexing.progress import SyncTracker, describe, read_snapshot, snapshot_path
from app.indexing.reports import NoProgress
from app.indexing.sync import sync_collection
from app.store import open_store
from app.store.catalog import FileRow, open_catalog
from app.store.library import summarize_library
from tests.fakes import fake_embeddings
from tests.test_sync import ParseSpy, library_of, sync_settings, write_doc

pytestmark = pytest.mark.unit


class Recorder:
    """A SyncProgress that records every event, and what a reader of the snapshot sees at
    each file parsed."""

    def __init__(self, settings: Settings, store_key: str) -> None:
        self.settings = settings
        self.store_key = store_key
        self.events: list[tuple[Any, ...]] = []
        self.seen: list[dict[str, Any] | None] = []

    def stage(self, name: str) -> None:
        self.events.append(("stage", name))

    def files_to_parse(self, count: int) -> None:
        self.events.append(("files", count))

    def file_parsed(self, file: str, pages: int, ocr_pages: int, reason: str) -> None:
        self.events.append(("parsed", file, pages, ocr_pages, reason))
        self.seen.append(read_snapshot(self.settings, self.store_key))

    def chunks_to_embed(self, count: int) -> None:
        self.events.append(("to embed", count))

    def chunks_embedded(self, count: int) -> None:
        self.events.append(("embedded", count))

    def working(self, line: str) -> None:
        pass  # timed (once a second): not part of the order


@pytest.fixture
def settings() -> Settings:
    return sync_settings()


def test_a_sync_reports_its_stages_and_each_file_in_order(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    folder = tmp_path / "corpus"
    for name in ("alpha", "beta", "gamma"):
        write_doc(folder / f"{name}.txt", name)
    (folder / "damaged.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog")
    (folder / "drawing.xyz").write_bytes(b"\x00CAD\x00")  # skipped when found: never parsed
    store_key = open_store(settings).key
    recorder = Recorder(settings, store_key)
    embeddings, _ = fake_embeddings(settings)

    report = sync_collection(settings, [folder], embeddings, progress=recorder)

    stages = [e[1] for e in recorder.events if e[0] == "stage"]
    assert stages == ["discover", "parse", "write"]  # a first run: no keyword index to catch up
    kinds = [e[0] for e in recorder.events]
    parse_at, write_at = kinds.index("files"), recorder.events.index(("stage", "write"))
    assert recorder.events[parse_at - 1] == ("stage", "parse")
    assert recorder.events[parse_at] == ("files", 4)
    parsed = [e for e in recorder.events if e[0] == "parsed"]
    assert {e[1] for e in parsed} == {f"corpus/{n}.txt" for n in ("alpha", "beta", "gamma")} | {
        "corpus/damaged.pdf"
    }
    assert all(parse_at < recorder.events.index(e) < write_at for e in parsed)
    failed = [e for e in parsed if e[4]]
    assert [e[1] for e in failed] == ["corpus/damaged.pdf"]
    assert "damaged pdf" in failed[0][4].lower()
    assert all(e[2] == 1 and e[3] == 0 for e in parsed if not e[4])  # one page, no OCR
    queued = sum(e[1] for e in recorder.events if e[0] == "to embed")
    embedded = sum(e[1] for e in recorder.events if e[0] == "embedded")
    assert queued == embedded == report.chunks_added > 0
    assert all(
        kinds.index("to embed") < i < write_at for i, k in enumerate(kinds) if k == "embedded"
    )

    # While it ran, another reader saw the sync (this process) and what it had done so far.
    assert all(s is not None and s["pid"] == os.getpid() for s in recorder.seen)
    last = recorder.seen[-1]
    assert last is not None
    assert last["files"]["total"] == 4
    assert last["stage"] in ("parse", "embed")
    # Gone once it ended.
    assert not snapshot_path(settings, store_key).exists()
    assert read_snapshot(settings, store_key) is None


def test_the_line_names_the_file_a_worker_parses_for_long_with_its_ocr_page(
    settings: Settings,
) -> None:
    with SyncTracker(settings, "key", NoProgress()) as tracker:
        tracker.stage("parse")
        tracker.files_to_parse(3)
        tracker.file_parsed("docs/a.txt", 1, 0, "")
        folder = Path(tracker.activity_dir)
        # A worker (this process stands in: alive) 36 s into a scan; one whose process is
        # gone (killed at its time limit); one on a file already reported parsed.
        now = time.time()
        worker = {"pid": os.getpid(), "file": "docs/scan.pdf", "started": now - 36}
        (folder / "1.json").write_text(json.dumps(worker | {"ocr_page": 6, "ocr_pages": 8}))
        (folder / "2.json").write_text(json.dumps(worker | {"pid": dead_pid(), "file": "x"}))
        (folder / "3.json").write_text(json.dumps(worker | {"file": "docs/a.txt"}))
        snapshot = tracker.snapshot()
        (long_one,) = snapshot["parsing"]
        assert 36 <= long_one.pop("seconds") < 80
        assert long_one == {"file": "docs/scan.pdf", "ocr_page": 6, "ocr_pages": 8}
        assert not (folder / "2.json").exists()
        assert snapshot["line"].startswith("parse · 1/3 files")
        assert "· parsing docs/scan.pdf (OCR page 6/8, " in snapshot["line"]
        assert read_snapshot(settings, "key") is not None  # published at the start
    assert read_snapshot(settings, "key") is None


def test_a_snapshot_left_by_a_killed_sync_is_ignored(settings: Settings) -> None:
    path = snapshot_path(settings, "key")
    with SyncTracker(settings, "key", NoProgress()):
        left = json.loads(path.read_text())
    left["pid"] = dead_pid()
    path.write_text(json.dumps(left))  # as a sync killed with SIGKILL leaves it
    assert read_snapshot(settings, "key") is None


def test_the_eta_and_line_of_a_sync_that_embeds() -> None:
    line = describe(
        {
            "stage": "embed",
            "files": {"done": 10, "total": 10, "failed": 0},
            "chunks": {"done": 300, "total": 512},
            "eta_seconds": 21.4,
            "parsing": [],
        }
    )
    assert line == "embed · 10/10 files · 300/512 chunks · about 21 s left"


def test_library_summary_counts_statuses_from_the_catalog(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    folder = tmp_path / "corpus"
    write_doc(folder / "alpha.txt", "alpha")
    sync_collection(settings, [folder], fake_embeddings(settings)[0])
    library = library_of(settings)
    assert library is not None
    catalog = open_catalog(settings, library.store.key, library.record.active)
    catalog.put(
        [
            FileRow(f"corpus/scan{i}.pdf", "corpus", "ocr", "", pages=3, ocr_pages=2)
            for i in range(4)
        ]
        + [FileRow(f"corpus/f{i:03}.bin", "corpus", "failed", f"reason {i}") for i in range(150)]
        + [FileRow("other/x.txt", "other", "indexed")]  # not a source of this library
    )
    catalog.close()
    summary = summarize_library(settings, library, limit=100, offset=100)
    (source,) = summary["sources"]
    assert source["statuses"] == {"indexed": 1, "ocr": 4, "skipped": 0, "failed": 150}
    assert summary["counts"] == source["statuses"]
    assert summary["ocr"] == {"files": 4, "pages": 8}
    problems = summary["problems"]
    assert problems["total"] == 150
    assert [p["file"] for p in problems["files"]] == [
        f"corpus/f{i:03}.bin" for i in range(100, 150)
    ]
    assert problems["files"][0]["reason"] == "reason 100"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_worker_reports_a_long_parse_and_its_ocr_page_then_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loaders import activity

    monkeypatch.setattr(activity, "_current", None)
    activity.start()
    report = tmp_path / f"{os.getpid()}.json"

    def until(check: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = activity.read(tmp_path)
            if check(found):
                return found
            time.sleep(0.1)
        pytest.fail(f"never seen; last: {activity.read(tmp_path)}")

    activity.begin("docs/quick.txt", str(tmp_path))
    activity.end()  # over before a second: nothing written
    activity.begin("docs/scan.pdf", str(tmp_path))
    activity.ocr_page(2, 5)
    (seen,) = until(lambda found: found)
    assert (seen["file"], seen["ocr_page"], seen["ocr_pages"]) == ("docs/scan.pdf", 2, 5)
    activity.ocr_page(3, 5)
    until(lambda found: found and found[0]["ocr_page"] == 3)
    activity.end()
    until(lambda found: not found)
    assert not report.exists()
    assert activity._current is not None
    activity._current.wake.set()  # its thread ends
