"""One writer per store. Chroma is thread-safe, not process-safe: two ingests into one persistent
directory can corrupt it; and the library record is read, changed and written back. The lock is a
file beside the store (CHROMA_DIR, even in server mode), and the OS drops it if its holder dies.
It also guards the keyword index: whoever writes the vectors writes the index.

A store that other machines write to (a Chroma server) also needs a lease kept in the store,
since each machine's lock file is its own. Leases are records `writer-lease.N`, made with the
store's create-if-absent (of two writers, exactly one makes N); the highest N is the lease. Its
holder renews it every RENEW_SECONDS; one not renewed for LEASE_SECONDS, or whose process on
this host is gone, is abandoned, and the next writer takes N + 1. A holder that paused past
LEASE_SECONDS (a laptop asleep) finds its lease taken at its next record write and stops
(`check_lease`): never two writers of one library record.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from app.config import Settings
from app.errors import StoreBusy, StoreError
from app.paths import private_dir
from app.store.base import ChunkStore

LEASE = "writer-lease"
LEASE_SECONDS = 60.0  # machines' clocks must agree to well within this (NTP does)
RENEW_SECONDS = 10.0
LEASE_POLL_SECONDS = 1.0


@contextmanager
def writer_lock(
    settings: Settings, store: ChunkStore, *, wait: float = 0, machine_only: bool = False
) -> Iterator[None]:
    """Hold the store's writer lock (and, for a shared store, its lease); StoreBusy naming the
    holder after `wait` seconds. `machine_only`: this machine's own files alone are written
    (its keyword index), so no lease is taken."""
    from filelock import FileLock, Timeout

    lock_path = private_dir(settings.chroma_dir) / f"ingest-{store.key}.lock"
    owner_path = lock_path.with_suffix(".owner.json")
    lock = FileLock(lock_path)
    started = time.monotonic()
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise StoreBusy(
            f"Another ingest is writing to {store.location} ({_describe_owner(owner_path)}). "
            "Wait for it to finish; chat keeps working meanwhile."
        ) from None
    try:
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now().isoformat(timespec="seconds"),
            "command": _command_line(),
        }
        owner_path.write_text(json.dumps(owner))
        if store.shared and not machine_only:
            left = max(0.0, wait - (time.monotonic() - started))
            with store_lease(store, owner, wait=left):
                yield
        else:
            yield
    finally:
        owner_path.unlink(missing_ok=True)
        lock.release()


@contextmanager
def store_lease(store: ChunkStore, owner: dict[str, Any], *, wait: float = 0) -> Iterator[None]:
    """The store's writer lease, renewed while held and dropped after."""
    mine = {**owner, "token": uuid.uuid4().hex}
    deadline = time.monotonic() + wait
    while (name := _take(store, mine)) is None:
        if time.monotonic() >= deadline:
            raise StoreBusy(
                f"Another ingest is writing to {store.location} "
                f"({_describe(_holder(store))}). Wait for it to finish; chat keeps working "
                "meanwhile."
            )
        time.sleep(min(LEASE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    renewal = _Renewal(store, name, mine)
    _HELD[id(store)] = renewal
    renewal.start()
    try:
        yield
    finally:
        _HELD.pop(id(store), None)
        renewal.stop()
        # Only our own N: a writer that took over holds a higher one.
        if renewal.lost is None:
            store.drop_record(name)


def check_lease(store: ChunkStore) -> None:
    """Before a write of the library record: the lease is still this process's."""
    renewal = _HELD.get(id(store))
    if renewal is not None and (problem := renewal.check()) is not None:
        raise StoreBusy(
            f"This ingest lost the writer lease of {store.location} ({problem}); another writer "
            "has the library now. What this run embedded is kept; run it again when that one "
            "is done."
        )


_HELD: dict[int, _Renewal] = {}


class _Renewal(threading.Thread):
    def __init__(self, store: ChunkStore, name: str, mine: dict[str, Any]) -> None:
        super().__init__(name="writer-lease", daemon=True)
        self.store, self.name, self.mine = store, name, mine
        self.renewed = time.monotonic()
        self.lost: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(RENEW_SECONDS):
            if self.check() is not None:
                return
            try:
                self.store.write_record(self.name, _lease_text(self.mine))
                self.renewed = time.monotonic()
            except Exception:  # a store that is away: try again next round
                continue

    def check(self) -> str | None:
        if self.lost is None:
            held = _read(self.store, self.name)
            if held is None or held.get("token") != self.mine["token"]:
                self.lost = "another writer took it over"
            elif time.monotonic() - self.renewed > LEASE_SECONDS:
                self.lost = f"not renewed for over {LEASE_SECONDS:.0f} s"
        return self.lost

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _lease_text(mine: dict[str, Any]) -> str:
    return json.dumps({**mine, "expires": time.time() + LEASE_SECONDS})


def _leases(store: ChunkStore) -> list[tuple[int, str]]:
    found = (re.fullmatch(rf"{LEASE}\.(\d+)", name) for name in store.record_names())
    return sorted((int(m.group(1)), m.group(0)) for m in found if m)


def _read(store: ChunkStore, name: str) -> dict[str, Any] | None:
    try:
        text = store.read_record(name)
        return json.loads(text) if text else None
    except (ValueError, StoreError):
        return None


def _holder(store: ChunkStore) -> dict[str, Any] | None:
    leases = _leases(store)
    return _read(store, leases[-1][1]) if leases else None


def _abandoned(holder: dict[str, Any]) -> bool:
    if holder.get("host") == socket.gethostname() and not _running(holder.get("pid")):
        return True
    return not float(holder.get("expires", 0)) > time.time()


def _running(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def _take(store: ChunkStore, mine: dict[str, Any]) -> str | None:
    """Make the next lease if the current one is abandoned (or there is none); None if another
    writer holds it or made the next one first."""
    leases = _leases(store)
    if leases:
        holder = _read(store, leases[-1][1])
        if holder is not None and not _abandoned(holder):
            return None
    name = f"{LEASE}.{(leases[-1][0] if leases else 0) + 1}"
    if not store.create_record(name, _lease_text(mine)):
        return None
    for _, older in leases:
        store.drop_record(older)
    return name


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "holder unknown"
    return (
        f"held by process {holder.get('pid')} on {holder.get('host')} since "
        f"{holder.get('started')}: `{holder.get('command')}`"
    )


def _command_line() -> str:
    """How this process was started, as typed: `python -m app.ingest docs`, not the path of
    the module file that sys.argv[0] holds under -m."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def _describe_owner(owner_path: Path) -> str:
    try:
        return _describe(json.loads(owner_path.read_text()))
    except (OSError, ValueError):
        return "holder unknown"
