"""What a parser worker is doing, for the progress line: the file it parses, since when, and
the page OCR is reading. A parse that takes longer than a second is written to a small JSON
file per worker (`<pid>.json` in the folder given with the file), which the sync's tracker
reads; quick parses write nothing, so a library of small files pays no file writes for it."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

WRITE_AFTER_SECONDS = 1.0


class _Activity:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folder: Path | None = None  # where the parse under way is reported
        self.state: dict[str, Any] | None = None
        self.written: dict[str, Any] | None = None  # what the file holds now
        self.written_path: Path | None = None
        self.wake = threading.Event()
        threading.Thread(target=self._keep_written, name="activity", daemon=True).start()

    def begin(self, file: str, folder: str) -> None:
        with self.lock:
            self.folder = Path(folder) if folder else None
            self.state = {"pid": os.getpid(), "file": file, "started": time.time()}

    def page(self, number: int, pages: int) -> None:
        with self.lock:
            if self.state is not None:
                self.state.update(ocr_page=number, ocr_pages=pages)

    def end(self) -> None:
        with self.lock:
            self.state = None

    def _keep_written(self) -> None:
        while not self.wake.wait(0.5):
            # Out of memory (a bomb being parsed) or disk: skip a beat, never print or die.
            with contextlib.suppress(Exception):
                self._write()

    def _write(self) -> None:
        """The file holds the parse under way once it has lasted a second; none otherwise."""
        with self.lock:
            state = dict(self.state) if self.state is not None else None
            path = self.folder / f"{os.getpid()}.json" if self.folder else None
        if state is not None and time.time() - state["started"] < WRITE_AFTER_SECONDS:
            state = None
        if path is None or not path.parent.is_dir():  # no folder, or that sync has ended
            state = None
        if state == self.written and path == self.written_path:
            return
        if self.written_path is not None and (state is None or path != self.written_path):
            with contextlib.suppress(FileNotFoundError):
                self.written_path.unlink()
            self.written, self.written_path = None, None
        if state is not None and path is not None:
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(state))
            os.replace(temporary, path)
            self.written, self.written_path = state, path


_current: _Activity | None = None


def start() -> None:
    """In a worker, once: be ready to report long parses."""
    global _current
    _current = _Activity()


def begin(file: str, folder: str) -> None:
    """Parsing `file` starts; a long parse is reported in `folder` (none: not reported)."""
    if _current is not None:
        _current.begin(file, folder)


def ocr_page(number: int, pages: int) -> None:
    """OCR is reading page `number` of `pages` (a PDF's page, an image's frame)."""
    if _current is not None:
        _current.page(number, pages)


def end() -> None:
    if _current is not None:
        _current.end()


def read(folder: Path) -> list[dict[str, Any]]:
    """What the live workers report; files of workers that are gone (killed at a time limit)
    are removed."""
    found = []
    for path in folder.glob("*.json"):
        try:
            state = json.loads(path.read_text())
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not running(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        found.append(state)
    return found


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
