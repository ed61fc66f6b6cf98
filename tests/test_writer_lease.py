"""The writer lease a shared store keeps in itself (app/store/lock.py), on the in-memory store:
taken and dropped, refused while held, taken over when abandoned, and a holder that lost it
writes no library record. Two real ingests on a real Chroma server: tests/test_chroma_server.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.errors import StoreBusy
from app.store import lock
from app.store.library import Library
from app.store.lock import LEASE, check_lease, store_lease, writer_lock
from tests.fakes import MemoryStore

pytestmark = pytest.mark.unit


def shared_store() -> MemoryStore:
    store = MemoryStore()
    store.shared = True  # type: ignore[misc]
    return store


OWNER = {"pid": os.getpid(), "host": socket.gethostname(), "command": "python -m app.ingest a"}


def leases(store: MemoryStore) -> dict[str, dict]:
    return {n: json.loads(t) for n, t in store.records.items() if n.startswith(LEASE)}


def test_a_lease_is_held_while_writing_and_dropped_after(tmp_path: Path) -> None:
    store = shared_store()
    with writer_lock(Settings(chroma_dir=tmp_path), store):
        held = leases(store)
        assert list(held) == [f"{LEASE}.1"]
        assert held[f"{LEASE}.1"]["pid"] == os.getpid()
        assert held[f"{LEASE}.1"]["expires"] > time.time()
    assert leases(store) == {}


def test_a_store_only_this_machine_writes_takes_no_lease(tmp_path: Path) -> None:
    store = MemoryStore()
    with writer_lock(Settings(chroma_dir=tmp_path), store):
        assert leases(store) == {}
    shared = shared_store()
    with writer_lock(Settings(chroma_dir=tmp_path), shared, machine_only=True):
        assert leases(shared) == {}  # the keyword index catch-up writes this machine's files


def test_a_second_writer_on_another_machine_is_refused_naming_the_holder() -> None:
    store = shared_store()
    elsewhere = {"pid": 4242, "host": "machine-a", "started": "today", "command": "ingest a"}
    with store_lease(store, elsewhere):
        refused = pytest.raises(StoreBusy, match=r"held by process 4242 on machine-a.*`ingest a`")
        with refused, store_lease(store, OWNER):
            pass
        started = time.monotonic()
        with pytest.raises(StoreBusy), store_lease(store, OWNER, wait=1.5):
            pass
        assert time.monotonic() - started >= 1.4  # it waited before giving up


def test_an_expired_lease_is_taken_over_with_the_next_number() -> None:
    store = shared_store()
    gone = {"pid": 1, "host": "machine-a", "token": "t", "expires": time.time() - 1}
    store.records[f"{LEASE}.7"] = json.dumps(gone)
    with store_lease(store, OWNER):
        assert list(leases(store)) == [f"{LEASE}.8"]  # the abandoned one is cleared away
    assert leases(store) == {}


def test_a_lease_of_a_process_gone_from_this_host_is_taken_at_once() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    holder = {
        "pid": int(dead.stdout),
        "host": socket.gethostname(),
        "token": "t",
        "expires": time.time() + 3600,
    }
    store = shared_store()
    store.records[f"{LEASE}.1"] = json.dumps(holder)
    with store_lease(store, OWNER):
        assert list(leases(store)) == [f"{LEASE}.2"]


def test_of_two_writers_making_the_same_lease_one_wins() -> None:
    store = shared_store()
    real_create = store.create_record

    def racing_create(name: str, text: str) -> bool:
        # Another writer makes the same lease between our look and our create.
        real_create(name, json.dumps(OWNER | {"token": "other", "expires": time.time() + 60}))
        return real_create(name, text)

    store.create_record = racing_create  # type: ignore[method-assign]
    with pytest.raises(StoreBusy), store_lease(store, OWNER):
        pass
    assert json.loads(store.records[f"{LEASE}.1"])["token"] == "other"


def test_a_writer_whose_lease_was_taken_over_writes_no_record() -> None:
    store = shared_store()
    library = Library.create(store, "localrag-x", "ollama/m")
    with store_lease(store, OWNER):
        library.save()  # still ours
        name = next(iter(leases(store)))
        store.records[name] = json.dumps(OWNER | {"token": "someone-else"})
        before = store.records["localrag-x"]
        with pytest.raises(StoreBusy, match="lost the writer lease"):
            library.save()
        assert store.records["localrag-x"] == before
    assert name in store.records  # not ours to drop any more
    check_lease(store)  # nothing held: nothing to check


def test_the_lease_is_renewed_while_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.05)
    store = shared_store()
    with store_lease(store, OWNER):
        first = next(iter(leases(store).values()))["expires"]
        deadline = time.monotonic() + 10
        while next(iter(leases(store).values()))["expires"] == first:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.02)
