"""One writer per store. Chroma is thread-safe, not process-safe: two ingests into one persistent
directory can corrupt it; and the library record is read, changed and written back. The lock is a
file beside the store (CHROMA_DIR, even in server mode), and the OS drops it if its holder dies.
It also guards the keyword index: whoever writes the vectors writes the index."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from app.config import Settings
from app.errors import StoreBusy
from app.paths import private_dir
from app.store.base import ChunkStore


@contextmanager
def writer_lock(settings: Settings, store: ChunkStore, *, wait: float = 0) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock_path = private_dir(settings.chroma_dir) / f"ingest-{store.key}.lock"
    owner_path = lock_path.with_suffix(".owner.json")
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise StoreBusy(
            f"Another ingest is writing to {store.location} ({_describe_owner(owner_path)}). "
            "Wait for it to finish; chat keeps working meanwhile."
        ) from None
    try:
        owner_path.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.now().isoformat(timespec="seconds"),
                    "command": _command_line(),
                }
            )
        )
        yield
    finally:
        owner_path.unlink(missing_ok=True)
        lock.release()


def _command_line() -> str:
    """How this process was started, as typed: `python -m app.ingest docs`, not the path of
    the module file that sys.argv[0] holds under -m."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def _describe_owner(owner_path: Path) -> str:
    try:
        owner = json.loads(owner_path.read_text())
    except (OSError, ValueError):
        return "holder unknown"
    return (
        f"held by process {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}: "
        f"`{owner.get('command')}`"
    )
