"""Keep the library in sync as files change (`python -m app.ingest --watch`).

`watchfiles` (Rust `notify`: inotify, FSEvents, ReadDirectoryChangesW; polling where those do
not work) reports changes; they are grouped until the folders have been quiet for
WATCH_DEBOUNCE seconds, mapped to the sources and paths inside them they touch, and each group
is one ordinary sync limited to those paths: the same writer lock, the same order of writes,
the same repair of whatever a killed run left. File sources, and sources gone or back, are
looked at rather than watched (`SourceLooks`). Ctrl-C (or SIGTERM) lets the sync under way
finish, then stops; a second Ctrl-C stops at once, like a kill, and the next run repairs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from app.config import Settings
from app.errors import StoreBusy
from app.indexing.reports import IngestReport
from app.indexing.sync import never_indexed, pool_limits, sync_collection
from app.models.embeddings import ModelEmbeddings
from app.store import open_store
from app.store.catalog import file_stamp
from app.store.library import Advice, Library, LibrarySource, library_name, plain_advice
from loaders.pool import kept_workers

BUSY_RETRY_SECONDS = 2.0  # another ingest holds the lock: try again this often
SOURCES_EVERY = 5.0  # seconds between reads of the library's sources (another command's adds)


class StopRequest:
    """Ctrl-C and SIGTERM ask for a stop after the sync under way; a second Ctrl-C stops now."""

    def __init__(self, on_request: Callable[[], None]) -> None:
        self.event = threading.Event()
        self.on_request = on_request

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        self.on_request()

    @contextmanager
    def installed(self) -> Iterator[threading.Event]:
        previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self.event
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def scopes_of(
    changes: Iterable[tuple[Any, str]],
    sources: list[LibrarySource],
    include_hidden: bool,
    exclude: Iterable[Path] = (),
) -> dict[str, list[str]]:
    """label -> paths inside the source that changed (whatever the kind of change: a sync of a
    path looks at what is there now). Hidden names are dropped unless INCLUDE_HIDDEN, and so is
    anything in `exclude` (the store's own folders: its writes must not wake the watcher)."""
    excluded = [Path(os.path.realpath(p)) for p in exclude]
    scopes: dict[str, set[str]] = {}
    for _, raw in changes:
        path = Path(raw)
        if excluded and any(
            e == (real := Path(os.path.realpath(path))) or e in real.parents for e in excluded
        ):
            continue
        for source in sources:
            inside = source.relative(path)
            if inside is None:
                continue
            if not include_hidden and any(p.startswith(".") for p in inside.split("/") if p):
                break
            scopes.setdefault(source.label, set()).add(inside)
            break
    # A path inside another changed path adds nothing.
    result = {}
    for label, paths in scopes.items():
        ordered = sorted(paths, key=len)
        kept: list[str] = []
        for p in ordered:
            if not any(k == "" or p == k or p.startswith(k + "/") for k in kept):
                kept.append(p)
        result[label] = kept
    return result


class SourceLooks:
    """What the watcher's events cannot tell, looked at on every batch and time-out (at most
    WATCH_DEBOUNCE apart): a file source saved by renaming a new file over it (inotify watched
    the old file, so file sources are looked at, not watched), a source gone or back (a drive
    unplugged and plugged in again), a folder source replaced by another of its name."""

    def __init__(self, sources: list[LibrarySource]) -> None:
        self.sources = sources
        self.seen = {s.label: self._look(s) for s in sources}  # at the last look
        self.acted_on = dict(self.seen)  # when last reported as changed

    @staticmethod
    def _look(source: LibrarySource) -> str | None:
        """The file's stamp or the folder's identity; None while it cannot be synced."""
        if source.problem() is not None:
            return None
        try:
            stat = os.stat(source.path)
        except OSError:
            return None
        return file_stamp(stat) if source.kind == "file" else f"{stat.st_dev}:{stat.st_ino}"

    def follow(self, sources: list[LibrarySource]) -> None:
        """The library's sources now (another command added or removed some): a new one is
        looked at from here on, so it is synced and watched once its look has held."""
        self.sources = sources
        for table in (self.seen, self.acted_on):
            for label in set(table) - {s.label for s in sources}:
                del table[label]
            for source in sources:
                table.setdefault(source.label, None)

    def present(self) -> list[LibrarySource]:
        return [s for s in self.sources if self.acted_on[s.label] is not None]

    def folders(self) -> list[str]:
        """The folder sources there now: the ones to watch."""
        return [s.path for s in self.sources if s.kind == "folder" and self._look(s) is not None]

    def changed(self) -> list[LibrarySource]:
        """Sources whose look changed and then held for one look (a file still being written
        waits, as a folder's changes wait for WATCH_DEBOUNCE of quiet)."""
        settled = []
        for source in self.sources:
            now = self._look(source)
            if now != self.acted_on[source.label] and now == self.seen[source.label]:
                settled.append(source)
                self.acted_on[source.label] = now
            self.seen[source.label] = now
        return settled


def watch_library(
    settings: Settings,
    embeddings: ModelEmbeddings,
    labels: list[str] | None,
    on_sync: Callable[[IngestReport], None],
    on_status: Callable[[str], None],
    stop: threading.Event,
    advice: Advice = plain_advice,
) -> None:
    """Watch the sources (`labels`, or all) until `stop` is set."""
    store = open_store(settings)

    def sources_now() -> list[LibrarySource]:
        store.refresh()
        found = Library.find(store, library_name(settings, embeddings.info.key))
        return [s for s in (found.sources if found else []) if labels is None or s.label in labels]

    sources = sources_now()
    if not sources:
        on_status("No source to watch.")
        return
    for source in sources:
        if (problem := source.problem()) is not None:
            on_status(f"{source.label} ({source.path}) is {problem}: synced when it is back.")
    embeddings.model  # load it now, not when the first change arrives  # noqa: B018

    def sync(scopes: dict[str, list[str]]) -> IngestReport:
        return sync_collection(settings, [], embeddings, scopes=scopes, advice=advice, store=store)

    # The parser workers stay up between syncs, their Markdown and HTML parsers loaded: a saved
    # file is parsed at once, not after a pool and its libraries start (seconds on a CPU).
    with kept_workers(pool_limits(settings), warm=(".md", ".html")):
        _Watch(settings, SourceLooks(sources), sync, on_sync, on_status, sources_now).run(stop)


class _Watch:
    """One sync per batch of changes until `stop`; the watcher is started again when a folder
    source comes, goes or is replaced, or when it fails."""

    def __init__(
        self,
        settings: Settings,
        looks: SourceLooks,
        sync: Callable[[dict[str, list[str]]], IngestReport],
        on_sync: Callable[[IngestReport], None],
        on_status: Callable[[str], None],
        sources_now: Callable[[], list[LibrarySource]],
    ) -> None:
        self.settings = settings
        self.looks = looks
        self.sources_now = sources_now
        self.sources_read = time.monotonic()
        self.sync = sync
        self.on_sync = on_sync
        self.on_status = on_status
        # A file saved before the watcher was up raised no event it saw: the sync the caller
        # ran first may have read it before the save (that sync can take hours). So once the
        # watcher is up, every source is looked at again; unchanged files are known by their
        # stamps. The same each time the watcher starts again.
        self.pending: dict[str, list[str]] = {}
        self.announced = False
        self.polling = False
        self.retried: set[str] = set()

    def run(self, stop: threading.Event) -> None:
        import watchfiles
        from watchfiles._rust_notify import WatchfilesRustInternalError  # documented there

        quiet_ms = int(self.settings.watch_debounce * 1000)
        while not stop.is_set():
            self.pending.update({s.label: [""] for s in self.looks.present()})
            started = False
            batches = watchfiles.watch(
                *self.looks.folders(),
                watch_filter=None,  # what a sync would index, it must see (node_modules too)
                step=quiet_ms,
                debounce=max(1600, 20 * quiet_ms),
                stop_event=stop,
                rust_timeout=max(500, quiet_ms),
                yield_on_timeout=True,  # come back now and then: to look, to retry a busy sync
                raise_interrupt=False,
                ignore_permission_denied=True,  # an unreadable folder inside (lost+found)
                force_polling=True if self.polling else None,  # None: WATCHFILES_FORCE_POLLING
            )
            try:
                while not stop.is_set():
                    try:
                        changes = next(batches)
                    except StopIteration:
                        break
                    except (WatchfilesRustInternalError, OSError) as exc:
                        # A name that is not UTF-8, a folder gone as the watcher started: start
                        # it again. The system's limit of watches, reached as it starts, would
                        # stop it again: polling needs no watches.
                        self.polling |= not started and "limit" in str(exc).lower()
                        self.on_status(
                            f"The watcher failed ({exc}); watching again"
                            + (" by polling." if self.polling else ".")
                        )
                        time.sleep(BUSY_RETRY_SECONDS)
                        break
                    started = True
                    if self._batch(changes):
                        break
            finally:
                batches.close()

    def _batch(self, changes: set[tuple[Any, str]]) -> bool:
        """Sync what changed; True when the watcher must start again."""
        looks, settings = self.looks, self.settings
        if time.monotonic() - self.sources_read > SOURCES_EVERY:
            self.sources_read = time.monotonic()
            # Read while another command writes (Chroma is not process-safe): next time, then.
            with contextlib.suppress(Exception):
                looks.follow(self.sources_now())
        changed = scopes_of(
            changes, looks.sources, settings.include_hidden, never_indexed(settings)
        )
        # A folder source deleted and made again at once may get its inode number back: its
        # look does not change, but the watch on the old one has ended. Its own event (a
        # change to the source itself, scope "") tells.
        watch_again = any(
            s.kind == "folder" and "" in changed.get(s.label, ()) for s in looks.sources
        )
        for source in looks.changed():  # a source gone, back, replaced, or a file saved
            changed[source.label] = [""]
            watch_again |= source.kind == "folder"
        for label, paths in changed.items():
            self.pending[label] = sorted(set(self.pending.get(label, [])) | set(paths))
        if self.pending:
            try:
                report = self.sync(self.pending)
            except StoreBusy as exc:
                self.on_status(f"{exc} Retrying in {BUSY_RETRY_SECONDS:g} s.")
                time.sleep(BUSY_RETRY_SECONDS)
            else:
                self.pending = {}
                if self.announced or changed or report.found_changes:  # the second look: if any
                    self.on_sync(report)
                # Its parser was stopped from outside: parse it again next batch (once: a
                # failure that keeps coming back waits for the next change or sync).
                for name in report.retry - self.retried:
                    label, _, inside = name.partition("/")
                    self.pending.setdefault(label, []).append(inside)
                self.retried |= report.retry
        if not self.announced:  # the watcher is up (it has yielded) and has had its second look
            self.on_status(watching_line(looks.present(), settings.watch_debounce))
            self.announced = True
        return watch_again


def watching_line(present: list[LibrarySource], debounce: float) -> str:
    if not present:
        return "No source is there yet: each is synced and watched once it is back. Ctrl-C stops."
    return (
        f"Watching {len(present)} sources ({', '.join(s.label for s in present)}); changes "
        f"are synced after {debounce:g} s of quiet. Ctrl-C stops."
    )
