"""Parser workers kept between parses (`--watch`): the same warm processes serve every parse,
and an abandoned parse leaves the pool serving the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from loaders.pool import Failed, Parsed, PoolLimits, kept_workers, parse_in_workers
from tests.test_ingest_bad_input import HangingPath, PidPath, text_file

pytestmark = pytest.mark.integration  # real worker processes

LIMITS = PoolLimits(workers=1, timeout_seconds=30, memory_mb=1024)


def readers(results: list[Parsed | Failed]) -> set[str]:
    found = set()
    for result in results:
        assert isinstance(result, Parsed), result
        found.add(result.documents[0].page_content)
    return found


@pytest.mark.timeout(120)
def test_kept_workers_parse_every_sync_in_the_same_process(tmp_path: Path) -> None:
    first = [text_file(tmp_path, "a.txt", PidPath)]
    second = [text_file(tmp_path, "b.txt", PidPath)]
    with kept_workers(LIMITS, warm=(".md",)):
        inside = readers(list(parse_in_workers(first, LIMITS)))
        inside |= readers(list(parse_in_workers(second, LIMITS)))
    assert len(inside) == 1, inside  # one worker, kept: both files read by the same process
    # Without a kept pool, each parse starts its own worker.
    outside = readers(list(parse_in_workers(first, LIMITS)))
    outside |= readers(list(parse_in_workers(second, LIMITS)))
    assert len(outside) == 2, outside
    assert not outside & inside, (inside, outside)


@pytest.mark.timeout(120)
def test_an_abandoned_parse_leaves_the_kept_workers_serving_the_next(tmp_path: Path) -> None:
    # One worker and no time limit that the test would live to see: unless abandoning the
    # parse stops the worker caught in the hung file, the next parse never gets a worker.
    limits = PoolLimits(workers=1, timeout_seconds=3600, memory_mb=1024)
    files = [text_file(tmp_path, "quick.txt"), text_file(tmp_path, "hangs.txt", HangingPath)]
    with kept_workers(limits):
        results = parse_in_workers(files, limits)
        assert next(results).file.source == "quick.txt"
        results.close()  # abandoned (the model failed, Ctrl-C) while hangs.txt is parsed
        after = list(parse_in_workers([text_file(tmp_path, "next.txt")], limits))
    assert [r.file.source for r in after] == ["next.txt"]
    assert isinstance(after[0], Parsed), after[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("group", [False, True], ids=["the worker", "its process group"])
def test_a_worker_stopped_from_outside_fails_its_file_for_this_sync_only(
    tmp_path: Path, group: bool
) -> None:
    """SIGTERM to the process group (`systemctl stop`) reaches the parser busy with a file and
    the forkserver, after which multiprocessing reads the worker's status as 255: the file
    failed this time through no fault of its own, so it is marked to be parsed again; and the
    kept workers go on serving the next parse."""
    from multiprocessing import forkserver

    limits = PoolLimits(workers=1, timeout_seconds=3600, memory_mb=1024)
    with kept_workers(limits):
        (text,) = readers(list(parse_in_workers([text_file(tmp_path, "p.txt", PidPath)], limits)))
        pids = [int(text.split()[-1].rstrip("."))]
        if group:
            pids.append(forkserver._forkserver._forkserver_pid)  # type: ignore[attr-defined]
        results = parse_in_workers([text_file(tmp_path, "busy.txt", HangingPath)], limits)
        for pid in pids:
            threading.Timer(2.0, os.kill, args=(pid, signal.SIGTERM)).start()
        (stopped,) = list(results)
        after = list(parse_in_workers([text_file(tmp_path, "next.txt")], limits))
    assert isinstance(stopped, Failed), stopped
    assert stopped.retry, stopped
    assert "stopped from outside" in stopped.reason
    assert isinstance(after[0], Parsed), after[0]


@pytest.mark.parametrize("entry", ["app.ingest", "app.chat"])
def test_an_entry_point_that_parses_imports_no_store_or_model_at_import(entry: str) -> None:
    """Each parser worker re-runs the entry module on Python < 3.13 (CPython gh-126631): the
    store, the model runtime and the sync must load only when a command runs."""
    heavy = ["chromadb", "onnxruntime", "app.indexing.sync", "app.session.resources"]
    probe = f"import sys, {entry}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
