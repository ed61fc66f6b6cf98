"""Live progress of a sync, for people: the terminal's progress line, and a snapshot file that
the server reads for `GET /api/library` and the web page, whichever process runs the sync
(`python -m app.ingest`, `--watch`, the server's own `--watch`).

`SyncTracker` sits between the sync and its display: it counts the events, and once a second
reads what the parser workers report (loaders.activity: the file parsed for long, its OCR page),
hands the display a line ("parse · … · about 21 s left · parsing docs/scan.pdf (OCR page 6/8,
36 s)") and replaces the snapshot `sync-<store>.json` beside the writer lock. The snapshot
carries the writer's pid and host, so one left by a killed process is ignored, and is removed
when the sync ends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from app.config import Settings
from app.indexing.reports import SyncProgress
from app.paths import private_dir
from loaders import activity

TICK_SECONDS = 1.0
# A snapshot not rewritten for this long is from a process that is gone or hung (another
# host's writer cannot be checked by pid).
STALE_SECONDS = 300.0
RECENT_FAILURES = 20


def snapshot_path(settings: Settings, store_key: str) -> Path:
    return private_dir(settings.chroma_dir) / f"sync-{store_key}.json"


def read_snapshot(settings: Settings, store_key: str) -> dict[str, Any] | None:
    """The running sync's snapshot; None when no sync runs (or its writer died)."""
    path = settings.chroma_dir / f"sync-{store_key}.json"
    try:
        snapshot = json.loads(path.read_text())
        pid, host, updated = int(snapshot["pid"]), str(snapshot["host"]), float(snapshot["updated"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age = time.time() - updated
    if host == socket.gethostname() and not activity.running(pid):
        return None
    if age > STALE_SECONDS:
        return None
    snapshot["age_seconds"] = round(max(age, 0.0), 1)
    return snapshot


class SyncTracker:
    """A SyncProgress that keeps the counts, forwards every event to `display`, and publishes
    what is under way (see the module's docstring). Use it as a context manager."""

    def __init__(self, settings: Settings, store_key: str, display: SyncProgress) -> None:
        self.path = snapshot_path(settings, store_key)
        self.display = display
        self.lock = threading.Lock()
        self.publishing = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.activity_dir = ""
        self.started = time.time()
        self.current = "read store"
        self.files_total = self.files_done = self.files_failed = 0
        self.chunks_total = self.chunks_done = 0
        self.ocr_files = self.ocr_pages = 0
        self.parse_started: float | None = None
        self.embed_started: float | None = None
        self.done_files: set[str] = set()
        self.failures: list[dict[str, str]] = []
        self.parsing: list[dict[str, Any]] = []

    # --- lifetime --------------------------------------------------------------------------

    def __enter__(self) -> SyncTracker:
        self.activity_dir = tempfile.mkdtemp(prefix="localrag-parsing-")
        self._publish()
        self.thread = threading.Thread(target=self._tick, name="sync-progress", daemon=True)
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.path.unlink()
        shutil.rmtree(self.activity_dir, ignore_errors=True)

    def _tick(self) -> None:
        while not self.stop.wait(TICK_SECONDS):
            try:
                self._publish()
            except Exception:  # progress is a view: it must never end the sync
                continue

    # --- SyncProgress ------------------------------------------------------------------------

    def stage(self, name: str) -> None:
        with self.lock:
            self.current = name
        self.display.stage(name)
        self._publish_now()

    def files_to_parse(self, count: int) -> None:
        with self.lock:
            self.files_total += count
            self.parse_started = self.parse_started or time.monotonic()
        self.display.files_to_parse(count)
        self._publish_now()

    def file_parsed(self, file: str, pages: int, ocr_pages: int, reason: str) -> None:
        with self.lock:
            self.files_done += 1
            self.done_files.add(file)
            if reason:
                self.files_failed += 1
                self.failures = [*self.failures, {"file": file, "reason": reason}][
                    -RECENT_FAILURES:
                ]
            if ocr_pages:
                self.ocr_files += 1
                self.ocr_pages += ocr_pages
        self.display.file_parsed(file, pages, ocr_pages, reason)

    def chunks_to_embed(self, count: int) -> None:
        with self.lock:
            self.chunks_total += count
            self.embed_started = self.embed_started or time.monotonic()
        self.display.chunks_to_embed(count)

    def chunks_embedded(self, count: int) -> None:
        with self.lock:
            self.chunks_done += count
        self.display.chunks_embedded(count)

    def working(self, line: str) -> None:
        self.display.working(line)

    # --- what is published -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now, clock = time.time(), time.monotonic()
        parsing: list[dict[str, Any]] = []
        if self.activity_dir:
            for state in activity.read(Path(self.activity_dir)):
                if state.get("file") in self.done_files:
                    continue
                entry: dict[str, Any] = {
                    "file": str(state.get("file", "")),
                    "seconds": round(max(now - float(state.get("started", now)), 0.0), 1),
                }
                if state.get("ocr_pages"):
                    entry["ocr_page"] = int(state["ocr_page"])
                    entry["ocr_pages"] = int(state["ocr_pages"])
                parsing.append(entry)
        parsing.sort(key=lambda e: -e["seconds"])
        with self.lock:
            stage = self.current
            if stage == "parse" and self.files_total and self.files_done >= self.files_total:
                stage = "embed"
            files_rate = _rate(self.files_done, self.parse_started, clock)
            chunks_rate = _rate(self.chunks_done, self.embed_started, clock)
            snapshot = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
                "updated": now,
                "stage": stage,
                "files": {
                    "done": self.files_done,
                    "total": self.files_total,
                    "failed": self.files_failed,
                },
                "chunks": {"done": self.chunks_done, "total": self.chunks_total},
                "ocr": {"files": self.ocr_files, "pages": self.ocr_pages},
                "rate": {
                    "files_per_second": round(files_rate, 2),
                    "chunks_per_second": round(chunks_rate, 2),
                },
                "eta_seconds": self._eta(files_rate, chunks_rate)
                if stage in ("parse", "embed")
                else None,
                "parsing": parsing,
                "failed": list(self.failures),
            }
        snapshot["line"] = describe(snapshot)
        return snapshot

    def _eta(self, files_rate: float, chunks_rate: float) -> float | None:
        """Seconds left: the slower of parsing the files left and embedding the chunks queued
        and still to come (as many per file as so far)."""
        left = []
        files_left = self.files_total - self.files_done
        if files_left > 0 and files_rate > 0:
            left.append(files_left / files_rate)
        if chunks_rate > 0:
            per_file = self.chunks_total / max(self.files_done, 1)
            chunks_left = self.chunks_total + files_left * per_file - self.chunks_done
            if chunks_left > 0:
                left.append(chunks_left / chunks_rate)
        return round(max(left), 1) if left else None

    def _publish(self) -> None:
        with self.publishing:
            snapshot = self.snapshot()
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(snapshot, ensure_ascii=False))
            os.replace(temporary, self.path)
        self.display.working(str(snapshot["line"]))

    def _publish_now(self) -> None:
        """At a new stage or count: a few times a sync, so readers never see it far behind."""
        if self.thread is not None and not self.stop.is_set():
            with contextlib.suppress(OSError):
                self._publish()


def _rate(done: int, since: float | None, now: float) -> float:
    if since is None or done == 0 or now <= since:
        return 0.0
    return done / (now - since)


def describe(snapshot: dict[str, Any]) -> str:
    """The progress line: stage, counts, ETA, and the files parsed for long (so a slow scan
    reads as slow, not stuck)."""
    parts = [str(snapshot["stage"])]
    files, chunks = snapshot["files"], snapshot["chunks"]
    if files["total"]:
        parts.append(f"{files['done']}/{files['total']} files")
    if chunks["total"]:
        parts.append(f"{chunks['done']}/{chunks['total']} chunks")
    eta = snapshot.get("eta_seconds")
    if eta is not None:
        parts.append(f"about {_duration(eta)} left")
    parsing = snapshot.get("parsing") or []
    if parsing:
        first = parsing[0]
        where = (
            f"OCR page {first['ocr_page']}/{first['ocr_pages']}, " if "ocr_page" in first else ""
        )
        text = f"parsing {first['file']} ({where}{_duration(first['seconds'])})"
        if len(parsing) > 1:
            text += f" and {len(parsing) - 1} more"
        parts.append(text)
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
