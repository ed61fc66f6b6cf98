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
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
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
    retry: bool = False  # not the file's doing (its worker was stopped): parse it next sync


@dataclass(frozen=True)
class PoolLimits:
    workers: int = 2
    timeout_seconds: float = 120.0
    memory_mb: int = 2048
    parse: ParseLimits = field(default_factory=ParseLimits)
    activity_dir: str = ""  # where workers report a long parse (see loaders.activity)

    @property
    def pool_key(self) -> PoolLimits:
        """What the workers start with: a kept pool serves any parse with the same key."""
        return replace(self, activity_dir="")


OCR_SUFFIXES = IMAGE_SUFFIXES | PDF_SUFFIXES

# A worker that ran out of memory exits with this status (see _parse_in_worker).
OUT_OF_MEMORY_EXIT = 75
# What a kept pool's workers parse once when they start, so the libraries these formats need
# are loaded before the first real file (Markdown and HTML load unstructured and its language
# models: seconds on a CPU).
WARM_UP_SAMPLES = {".md": "# Notes\n\nA first sentence. A second one.\n", ".html": "<p>A note.</p>"}


def _start_worker(memory_mb: int, report_activity: bool) -> None:
    """Pool initializer. It must not raise: pebble restarts a worker whose initializer fails,
    forever, and the run would hang."""
    # spaCy (which unstructured uses) imports torch through thinc whenever torch is installed
    # (the `local` extra), though nothing parsed here needs it: that is ~450 MB of address
    # space and seconds of start-up per worker. Workers only parse, so keep it out.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    # Ctrl-C reaches the whole process group: the main process decides (in --watch, to finish
    # the sync under way); a worker killed by it would report its file as failed to parse.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before the memory limit, which its thread's stack and malloc arena count against (so
    # only when someone reads the reports). Should it fail, the progress line loses its
    # detail and the parse goes on.
    if report_activity:
        with contextlib.suppress(Exception):
            activity.start()
    # Address space, not resident size: a parser that tries to inflate a bomb gets a
    # MemoryError in its own process instead of the kernel's OOM killer picking a victim.
    # Never above the hard limit, which setrlimit would refuse.
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _warm_up(samples: dict[str, str]) -> None:
    """Parse a small sample of each kind, so a worker's first real file of that kind does not
    wait for its parser's libraries to load."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="localrag-warm-up-") as folder:
        for suffix, text in samples.items():
            path = Path(folder) / f"sample{suffix}"
            path.write_text(text)
            with contextlib.suppress(Exception):
                parse_file(path, path.name, ParseLimits())


def _parse_in_worker(
    file: SourceFile, limits: ParseLimits, activity_dir: str = ""
) -> tuple[list[Document] | str, tuple[int, int]]:
    started = time.time_ns()
    activity.begin(file.source, activity_dir)
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


# Exit statuses of a worker stopped from outside: killed by SIGTERM, SIGHUP or SIGINT, or
# pebble's SIGTERM handler's exit with the signal's number, or 255, multiprocessing's answer
# when the forkserver went with it (a stop sent to the process group): the file did not cause
# them, so it is parsed again at the next sync.
STOPPED_EXITS = {-int(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
STOPPED_EXITS |= {int(signal.SIGTERM), 255}


def _died(file: SourceFile, exc: ProcessExpired, memory_mb: int) -> Failed:
    code = exc.exitcode
    if code in STOPPED_EXITS:
        reason = "the parser process was stopped from outside; it is parsed again at the next sync"
        return Failed(file, reason, retry=True)
    if code == OUT_OF_MEMORY_EXIT:
        reason = f"parsing needed more memory than PARSE_MEMORY_MB ({memory_mb} MB) allows"
    elif code is not None and code < 0:
        # SIGKILL from the OOM killer, SIGABRT from a C++ bad_alloc, SIGSEGV from C code
        # that did not check malloc: memory is the usual reason a parser process dies.
        name = signal.Signals(-code).name if -code in signal.valid_signals() else -code
        reason = (
            f"the parser process was killed ({name}); if it ran out of memory, "
            f"raise PARSE_MEMORY_MB ({memory_mb} MB)"
        )
    else:
        reason = f"the parser process died (exit status {code})"
    return Failed(file, reason)


def _timed_out(file: SourceFile, seconds: float) -> str:
    reason = f"parsing took longer than {seconds:g} s (PARSE_TIMEOUT)"
    if file.path.suffix.lower() in OCR_SUFFIXES:
        # A scan is read by OCR at seconds per page: a long one needs a longer limit.
        reason += "; scanned pages are read by OCR, a few seconds each: raise PARSE_TIMEOUT"
    return reason


class _Pool:
    """A pebble pool of parser workers and the limits it started with."""

    def __init__(self, limits: PoolLimits, workers: int, report_activity: bool) -> None:
        # forkserver: workers start from a clean process, not a fork of one that may hold the
        # embedding model's threads.
        context = multiprocessing.get_context("forkserver")
        # The server imports the parsers' modules once and each worker forks with them loaded,
        # instead of every worker importing them on the cores the model is using.
        context.set_forkserver_preload([__name__])
        self.key = limits.pool_key
        self.limits = limits
        self.workers = workers
        self.pebble = ProcessPool(
            max_workers=workers,
            initializer=_start_worker,
            initargs=(limits.memory_mb, report_activity),
            context=context,
        )

    def shut(self, finished: bool) -> None:
        """Finished: let workers still starting up finish and leave (stopping them mid-start
        makes multiprocessing print a traceback). Abandoned: stop them now."""
        if finished:
            self.pebble.close()
        else:
            self.pebble.stop()
        self.pebble.join(timeout=10)


_kept: _Pool | None = None


@contextlib.contextmanager
def kept_workers(limits: PoolLimits, warm: Sequence[str] = ()) -> Iterator[None]:
    """Parser workers that stay up for every parse inside with the same limits (`--watch`: a
    saved file is parsed by a worker already running, the parsers for the `warm` suffixes
    loaded), instead of a pool started for each parse."""
    global _kept
    pool = _Pool(limits, max(1, limits.workers), report_activity=True)
    samples = {suffix: WARM_UP_SAMPLES[suffix] for suffix in warm}
    for _ in range(pool.workers):  # a sample parse takes seconds: each worker gets one
        pool.pebble.schedule(_warm_up, args=(samples,))
    previous, _kept = _kept, pool
    try:
        yield
    finally:
        current, _kept = _kept, previous  # `pool`, or the pool that replaced it if it broke
        (current or pool).shut(finished=False)


def _replace_kept(broken: _Pool) -> _Pool:
    """A new pool in place of a kept one that broke, so a watcher goes on parsing."""
    global _kept
    with contextlib.suppress(Exception):
        broken.shut(finished=False)
    _kept = _Pool(broken.limits, broken.workers, report_activity=True)
    return _kept


def parse_in_workers(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
    """Yield each file's Documents (or why it failed) as soon as a worker finishes it."""
    if not files:
        return
    kept = _kept if _kept is not None and _kept.key == limits.pool_key else None
    if kept is not None and not kept.pebble.active:  # broken (its workers were stopped)
        kept = _replace_kept(kept)
    workers = max(1, min(limits.workers, len(files)))
    pool = kept or _Pool(limits, workers, report_activity=bool(limits.activity_dir))
    try:
        futures: dict[Future[Any], SourceFile] = {
            pool.pebble.schedule(
                _parse_in_worker,
                args=(f, limits.parse, limits.activity_dir),
                timeout=limits.timeout_seconds,
            ): f
            for f in files
        }
    except (EOFError, OSError, RuntimeError) as exc:  # the pool could not start (Ctrl-C at once)
        with contextlib.suppress(Exception):
            pool.shut(finished=False)
        reason = f"the parser processes could not start ({type(exc).__name__}: {exc})"
        yield from (Failed(f, reason, retry=True) for f in files)
        return
    finished = False
    try:
        for future in as_completed(futures):
            file = futures[future]
            try:
                result, timing = future.result()
            except FutureTimeout:
                yield Failed(file, _timed_out(file, limits.timeout_seconds))
            except ProcessExpired as exc:
                yield _died(file, exc, limits.memory_mb)
            except BrokenProcessPool as exc:  # every worker gone (a stop reached them all)
                yield Failed(file, f"the parser processes were stopped ({exc})", retry=True)
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
        if kept is None:
            pool.shut(finished)
        elif not finished:
            # Abandoned: the kept workers drop this parse's files (one in the middle of a
            # file is stopped, and the pool starts another).
            for future in futures:
                future.cancel()
