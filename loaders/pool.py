"""Parse each file in a worker process with a time and memory limit: no file can hang or kill
a run."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document
from pebble import ProcessExpired, ProcessPool

from loaders import activity
from loaders.discovery import SourceFile
from loaders.parsers import (
    IMAGE_SUFFIXES,
    PDF_SUFFIXES,
    ParseLimits,
    UnreadableFile,
    parse_file,
)


@dataclass(frozen=True)
class Parsed:
    file: SourceFile
    documents: list[Document]
    # When the worker started and ended the parse (time.time_ns()): what its trace span shows.
    timing: tuple[int, int] | None = None

    @property
    def pages(self) -> int | None:
        """Pages, slides, sheets or image frames; None for formats without pages."""
        counted = getattr(self.documents, "pages", None)
        if counted is not None:
            return int(counted)
        numbers = {d.metadata["page"] for d in self.documents if "page" in d.metadata}
        return len(numbers) or None

    @property
    def ocr_pages(self) -> int:
        """Pages read by OCR (a PDF's scanned pages, an image's frames); 0 for none."""
        counted = getattr(self.documents, "ocr_pages", None)
        if counted is not None:
            return int(counted)
        return len({d.metadata.get("page") for d in self.documents if d.metadata.get("ocr")})


@dataclass(frozen=True)
class Failed:
    file: SourceFile
    reason: str
    timing: tuple[int, int] | None = None


@dataclass(frozen=True)
class PoolLimits:
    workers: int = 2
    timeout_seconds: float = 120.0
    memory_mb: int = 2048
    parse: ParseLimits = field(default_factory=ParseLimits)
    activity_dir: str = ""  # where workers report a long parse (see loaders.activity)


OCR_SUFFIXES = IMAGE_SUFFIXES | PDF_SUFFIXES

# A worker that ran out of memory exits with this status (see _parse_in_worker).
OUT_OF_MEMORY_EXIT = 75


def _start_worker(memory_mb: int, activity_dir: str = "") -> None:
    """Pool initializer. It must not raise: pebble restarts a worker whose initializer fails,
    forever, and the run would hang."""
    # spaCy (which unstructured uses) imports torch through thinc whenever torch is installed
    # (the `local` extra), though nothing parsed here needs it: that is ~450 MB of address
    # space and seconds of start-up per worker. Workers only parse, so keep it out.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    # Ctrl-C reaches the whole process group: the main process decides (in --watch, to finish
    # the sync under way); a worker killed by it would report its file as failed to parse.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before the memory limit, which its thread's stack counts against. Should it fail, the
    # progress line loses its detail and the parse goes on.
    with contextlib.suppress(Exception):
        activity.start(activity_dir)
    # Address space, not resident size: a parser that tries to inflate a bomb gets a
    # MemoryError in its own process instead of the kernel's OOM killer picking a victim.
    # Never above the hard limit, which setrlimit would refuse.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _parse_in_worker(
    file: SourceFile, limits: ParseLimits
) -> tuple[list[Document] | str, tuple[int, int]]:
    started = time.time_ns()
    activity.begin(file.source)
    try:
        result = _parse(file, limits)
    finally:
        activity.end()
    return result, (started, time.time_ns())


def _parse(file: SourceFile, limits: ParseLimits) -> list[Document] | str:
    try:
        return parse_file(file.path, file.source, limits)
    except Exception as exc:
        if _out_of_memory(exc):
            # A failed allocation can leave a module half imported or a C library in a bad
            # state, which would fail the next files this worker gets: end the process, so
            # the pool starts a fresh one, and let the exit status carry the reason.
            os._exit(OUT_OF_MEMORY_EXIT)
        if isinstance(exc, UnreadableFile):
            return str(exc)
        if isinstance(exc, PermissionError):
            return "permission denied (not readable)"
        # a parser bug on odd input must not end the run
        return f"could not be parsed ({type(exc).__name__}: {exc})"


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation, also when a library wrapped it in an error of its own."""
    seen: BaseException | None = exc
    for _ in range(10):  # exception chains are short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, MemoryError) or (
            isinstance(seen, OSError) and seen.errno == errno.ENOMEM
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _died(exc: ProcessExpired, memory_mb: int) -> str:
    code = exc.exitcode
    if code == OUT_OF_MEMORY_EXIT:
        return f"parsing needed more memory than PARSE_MEMORY_MB ({memory_mb} MB) allows"
    if code is not None and code < 0:
        # SIGKILL from the OOM killer, SIGABRT from a C++ bad_alloc, SIGSEGV from C code
        # that did not check malloc: memory is the usual reason a parser process dies.
        name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
        return (
            f"the parser process was killed ({name}); if it ran out of memory, "
            f"raise PARSE_MEMORY_MB ({memory_mb} MB)"
        )
    return f"the parser process died (exit status {code})"


def _timed_out(file: SourceFile, seconds: float) -> str:
    reason = f"parsing took longer than {seconds:g} s (PARSE_TIMEOUT)"
    if file.path.suffix.lower() in OCR_SUFFIXES:
        # A scan is read by OCR at seconds per page: a long one needs a longer limit.
        reason += "; scanned pages are read by OCR, a few seconds each: raise PARSE_TIMEOUT"
    return reason


def parse_in_workers(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
    """Yield each file's Documents (or why it failed) as soon as a worker finishes it."""
    if not files:
        return
    # forkserver: workers start from a clean process, not a fork of one that may hold the
    # embedding model's threads.
    context = multiprocessing.get_context("forkserver")
    with ProcessPool(
        max_workers=max(1, min(limits.workers, len(files))),
        initializer=_start_worker,
        initargs=(limits.memory_mb, limits.activity_dir),
        context=context,
    ) as pool:
        futures: dict[Future[Any], SourceFile] = {
            pool.schedule(
                _parse_in_worker, args=(f, limits.parse), timeout=limits.timeout_seconds
            ): f
            for f in files
        }
        finished = False
        try:
            for future in as_completed(futures):
                file = futures[future]
                try:
                    result, timing = future.result()
                except FutureTimeout:
                    yield Failed(file, _timed_out(file, limits.timeout_seconds))
                except ProcessExpired as exc:
                    yield Failed(file, _died(exc, limits.memory_mb))
                except Exception as exc:  # the pool itself failed (a result too big to send...)
                    yield Failed(file, f"could not be parsed ({type(exc).__name__}: {exc})")
                else:
                    yield (
                        Parsed(file, result, timing)
                        if isinstance(result, list)
                        else Failed(file, result, timing)
                    )
            finished = True
        finally:
            # All done: let workers that are still starting up finish and leave (stopping them
            # mid-start makes multiprocessing print a traceback). Abandoned: stop them now.
            if finished:
                pool.close()
            else:
                pool.stop()
            pool.join(timeout=10)
