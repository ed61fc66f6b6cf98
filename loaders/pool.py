"""Parse files in worker processes with a time and memory limit, so no file can hang or kill a run."""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import as_completed
from dataclasses import dataclass

from langchain_core.documents import Document
from pebble import ProcessExpired, ProcessPool

from loaders.discovery import SourceFile
from loaders.parsers import ParseLimits, UnreadableFile, parse_file


@dataclass(frozen=True)
class Parsed:
    file: SourceFile
    documents: list[Document]


@dataclass(frozen=True)
class Failed:
    file: SourceFile
    reason: str


@dataclass(frozen=True)
class PoolLimits:
    workers: int = 2
    timeout_seconds: float = 120.0
    memory_mb: int = 2048
    parse: ParseLimits = ParseLimits()


def _limit_memory(memory_mb: int) -> None:
    # Address space, not resident size: a parser that tries to inflate a bomb gets a
    # MemoryError in its own process instead of the kernel's OOM killer picking a victim.
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _parse_in_worker(file: SourceFile, limits: ParseLimits) -> list[Document] | str:
    try:
        return parse_file(file.path, file.source, limits)
    except UnreadableFile as exc:
        return str(exc)
    except MemoryError:
        return "parsing needed more memory than PARSE_MEMORY_MB allows"
    except PermissionError:
        return "permission denied (not readable)"
    except Exception as exc:  # a parser bug on odd input must not end the run
        return f"could not be parsed ({type(exc).__name__}: {exc})"


def parse_in_workers(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
    """Yield each file's Documents (or why it failed) as soon as a worker finishes it."""
    if not files:
        return
    # forkserver: workers start from a clean process, not a fork of one that may hold the
    # embedding model's threads.
    context = multiprocessing.get_context("forkserver")
    with ProcessPool(
        max_workers=max(1, min(limits.workers, len(files))),
        initializer=_limit_memory,
        initargs=(limits.memory_mb,),
        context=context,
    ) as pool:
        futures = {
            pool.schedule(
                _parse_in_worker, args=(f, limits.parse), timeout=limits.timeout_seconds
            ): f
            for f in files
        }
        try:
            for future in as_completed(futures):
                file = futures[future]
                try:
                    result = future.result()
                except FutureTimeout:
                    yield Failed(
                        file, f"parsing took longer than {limits.timeout_seconds:g} s "
                        "(PARSE_TIMEOUT)"
                    )
                except ProcessExpired as exc:
                    yield Failed(file, f"the parser process died (exit code {exc.exitcode})")
                else:
                    yield Parsed(file, result) if isinstance(result, list) else Failed(file, result)
        finally:
            pool.stop()
            pool.join(timeout=10)
