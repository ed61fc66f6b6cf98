"""Keep the library's collection exactly equal to the chunks of its sources' files.

The collection is its own bookkeeping: every chunk carries its file's fingerprint and chunk
count, so there is no second record to drift from the store. A file is unchanged when the store
holds exactly its `chunk_count` chunks, all with its current fingerprint; anything else (new,
edited, half-written by a killed run) is parsed again, and only chunks whose ids are missing are
embedded. A flush's embedded batches are written together, in one request when they fit (a killed
run loses at most one flush of work), and a flush's writes go add -> update -> delete; whatever
point a run is killed at, the files it was writing are left incomplete by that rule, and the
next run repairs them.

The fingerprint is of what was parsed: a file is hashed before it is parsed and again after,
and one that changed meanwhile (an editor saving it) is parsed again, never stored under a
fingerprint its text does not have.

A run syncs only the sources it was given (every source when given none); the chunks of the
others are never read or touched. The keyword index is written in the same steps, under the same
lock. The library record is saved before the first chunk is written (new sources, a rebuild's new
collection) and after the last (counts, generation, the switch).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from app.config import Settings
from app.errors import ConfigError
from app.indexing.embed_ahead import EmbedAhead, Embedded
from app.indexing.maintenance import finish_interrupted, purge_removed
from app.indexing.planning import SyncPlan, Target, check_paths, describe_missing, plan_sync
from app.indexing.progress import SyncTracker
from app.indexing.reports import IngestReport, NoProgress, SourceReport, StageClock, SyncProgress
from app.indexing.splitter import ChunkPolicy, split_documents
from app.models.embeddings import ModelEmbeddings
from app.store import open_store
from app.store.base import ChunkCollection, ChunkStore, Selection
from app.store.catalog import DIRTY as CATALOG_DIRTY
from app.store.catalog import FileCatalog, FileRow, file_stamp, open_catalog
from app.store.keyword_index import DIRTY, KeywordIndex, open_keyword_index
from app.store.library import (
    Advice,
    Library,
    LibrarySource,
    any_library,
    check_dimension,
    check_model,
    find_library,
    library_name,
    normalize,
    now,
    other_libraries,
    plain_advice,
)
from app.store.lock import writer_lock
from app.telemetry import tracing
from loaders.discovery import SourceFile, discover, file_name
from loaders.parsers import ParseLimits
from loaders.pool import Failed, Parsed, PoolLimits, parse_in_workers

# Bump when parsing or splitting changes what a file turns into: every file is then re-chunked.
PIPELINE_VERSION = 4  # 4: OCR, tables as Markdown tables (scans that failed before are read)
# Chunks gathered across files, while the model is busy, before they are queued for embedding:
# they are sorted by length into batches, so the wider the window the less the model pads
# (MS MARCO passages, all-MiniLM-L6-v2: padded / real tokens 1.13 with 512, 1.05 with 2,048;
# one sort of everything, 1.03).
FLUSH_CHUNKS = 2048
# The most chunks embedded ahead of the writes: what a killed run may lose (a few seconds of
# the model's work).
AHEAD_CHUNKS = 512
# Most chunks written to the store in one request. LOCALRAG_WRITE_CHUNKS lowers it: a test knob
# (tests/test_crash_safety.py needs many writes to kill a run in the middle of one).
WRITE_CHUNKS = int(os.environ.get("LOCALRAG_WRITE_CHUNKS", "1024"))
FIRST_RUN_LOCK_WAIT = 900.0  # seconds a chat waits for another chat's first-run ingest
PARSE_ROUNDS = 3  # a file that keeps changing while it is read is left for the next sync


@dataclass
class _Flush:
    """Files whose new chunks are queued for embedding together."""

    pending: list[tuple[str, list[Document]]]  # file -> all its chunks
    kept: list[Document]  # chunks the store holds already (their metadata is rewritten)
    chunks_left: int  # new chunks not yet embedded (a batch may come in parts)
    embedded: list[Embedded[_Flush]] = field(default_factory=list)  # not yet written
    gathered: int = 0  # chunks in `embedded`


MOVED_FILES_CHECKED = 50  # files read to tell a moved library from a mount point


@dataclass
class StoredFile:
    ids: set[str] = field(default_factory=set)
    fingerprints: set[str] = field(default_factory=set)
    chunk_count: int = -1
    # Known from the file catalog, which mirrors the store: its ids are read only if needed.
    from_catalog: bool = False

    def complete(self, fingerprint: str) -> bool:
        counted = self.from_catalog or len(self.ids) == self.chunk_count
        return self.fingerprints == {fingerprint} and counted

    def count(self) -> int:
        return max(self.chunk_count, 0) if self.from_catalog and not self.ids else len(self.ids)


def chunk_policy(settings: Settings, embeddings: ModelEmbeddings) -> ChunkPolicy:
    return ChunkPolicy(
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        max_tokens=embeddings.info.max_tokens,
        count_tokens=embeddings.count_tokens,
        prefix=embeddings.info.document_prefix,
    )


def pool_limits(settings: Settings) -> PoolLimits:
    return PoolLimits(
        workers=settings.ingest_workers,
        timeout_seconds=settings.parse_timeout,
        memory_mb=settings.parse_memory_mb,
        parse=ParseLimits(
            max_file_bytes=int(settings.max_file_mb * 2**20),
            max_unzipped_bytes=int(settings.max_unzipped_mb * 2**20),
        ),
    )


def policy_key(policy: ChunkPolicy) -> str:
    """Everything that decides how a file's bytes become chunks."""
    return (
        f"{PIPELINE_VERSION}|{policy.chunk_size}|{policy.chunk_overlap}|"
        f"{policy.max_tokens}|{policy.prefix}|"
    )


def file_fingerprint(path: Path, policy: ChunkPolicy) -> str:
    """The file's bytes plus everything that decides how they are chunked."""
    digest = hashlib.sha256(policy_key(policy).encode())
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:32]


def root_of(name: str) -> str:
    """The label of the source a stored file belongs to (labels hold no slash)."""
    return name.split("/", 1)[0]


def never_indexed(settings: Settings) -> list[Path]:
    """The store's own folders: never a source's files, wherever the user keeps them."""
    return [settings.chroma_dir, settings.model_cache_path]


def sync_collection(
    settings: Settings,
    paths: Sequence[Path],
    embeddings: ModelEmbeddings,
    *,
    rebuild: bool = False,
    progress: SyncProgress | None = None,
    scopes: dict[str, list[str]] | None = None,
    advice: Advice = plain_advice,
    store: ChunkStore | None = None,
) -> IngestReport:
    """Add the paths that are new as sources and sync them (every source when none is given),
    leaving every other source's chunks as they are. `--rebuild`: re-embed every source into a
    new collection and switch to it once complete (it takes no paths: it would drop the other
    sources). `scopes` (label -> paths inside the source) limits a sync to what a watcher saw
    change."""
    if rebuild and paths:
        raise ConfigError(
            "--rebuild re-embeds every source of the library into a new collection, so it takes "
            "no paths (with some, the others would be lost). Run `python -m app.ingest "
            "--rebuild` alone; to re-read one source, `--remove` it and add it again."
        )
    store = store or open_store(settings)
    with (
        writer_lock(settings, store),
        SyncTracker(settings, store.key, progress or NoProgress()) as tracker,
    ):
        return _Sync(settings, store, embeddings, tracker, advice).run(
            [normalize(p) for p in paths], rebuild=rebuild, scopes=scopes
        )


def ingest_first_run(
    settings: Settings, embeddings: ModelEmbeddings, progress: SyncProgress | None = None
) -> IngestReport | None:
    """The sample documents (DOCS_DIR), only into a store that holds no library at all; None
    when it holds one (another chat may have made it while this one waited for the lock)."""
    store = open_store(settings)
    with writer_lock(settings, store, wait=FIRST_RUN_LOCK_WAIT):
        store.refresh()
        if any_library(store, settings, embeddings.info.key):
            return None
        with SyncTracker(settings, store.key, progress or NoProgress()) as tracker:
            return _Sync(settings, store, embeddings, tracker, plain_advice).run(
                [settings.docs_dir], rebuild=False
            )


class _Sync:
    def __init__(
        self,
        settings: Settings,
        store: ChunkStore,
        embeddings: ModelEmbeddings,
        progress: SyncTracker,
        advice: Advice,
    ) -> None:
        self.settings = settings
        self.store = store
        self.embeddings = embeddings
        self.progress = progress
        self.advice = advice
        self.policy = chunk_policy(settings, embeddings)
        self.clock = StageClock()
        self.collection: ChunkCollection | None = None
        self.collection_name = ""
        self.index: KeywordIndex | None = None
        self.stored: dict[str, StoredFile] = {}
        self.touched: set[str] = set()  # sources whose chunks this run changed
        self.written_chunks: dict[str, int] = {}  # file -> chunks it has now (files written)
        self.unsettled: set[str] = set()  # files that kept changing while read: left as stored
        self.catalog: FileCatalog | None = None
        self.trusted: set[str] = set()  # sources whose catalog rows mirror the store
        self.stamps: dict[str, tuple[int, str]] = {}  # file -> (size, stamp) when fingerprinted
        self.facts: dict[str, tuple[int, int, int]] = {}  # file -> pages, OCR'd pages, chars
        self.file_rows: list[FileRow] = []  # catalog rows this run writes
        self.fingerprints_written: dict[str, str] = {}  # file -> fingerprint of what was parsed
        self.gathering: _Flush | None = None  # the flush whose embedded batches are being gathered
        self.report = IngestReport(
            collection="",
            store=store.location,
            embedding_model=embeddings.info.key,
            library=library_name(settings, embeddings.info.key),
        )

    def run(
        self,
        paths: list[Path],
        *,
        rebuild: bool,
        scopes: dict[str, list[str]] | None = None,
    ) -> IngestReport:
        info = self.embeddings.info
        with tracing.span(
            "sync",
            localrag_paths=[str(p) for p in paths],
            localrag_rebuild=rebuild,
            localrag_scoped=scopes is not None,
            localrag_store=self.store.location,
            localrag_embedding_model=info.key,
            localrag_embedding_provider=info.provider,
        ) as current:
            report = self._run(paths, rebuild=rebuild, scopes=scopes)
            tracing.record(
                current,
                localrag_library=report.library,
                localrag_collection=report.collection,
                localrag_files_new=len(report.new),
                localrag_files_changed=len(report.changed),
                localrag_files_unchanged=len(report.unchanged),
                localrag_files_deleted=len(report.deleted),
                localrag_files_failed=len(report.failed),
                localrag_chunks_added=report.chunks_added,
                localrag_chunks_kept=report.chunks_kept,
                localrag_chunks_removed=report.chunks_removed,
                **{f"localrag.seconds.{k.replace(' ', '_')}": v for k, v in report.seconds.items()},
            )
            return report

    def _run(
        self,
        paths: list[Path],
        *,
        rebuild: bool,
        scopes: dict[str, list[str]] | None = None,
    ) -> IngestReport:
        started = time.perf_counter()
        report = self.report
        with self.clock("read store"), tracing.span("read store"):
            library = self._open_library(paths, rebuild)
            report.notes += finish_interrupted(self.settings, library)
            if scopes is not None:
                plan = SyncPlan(
                    [
                        # A scope that holds the source itself is a sync of the whole source.
                        Target(s, within=None if "" in scopes[s.label] else scopes[s.label])
                        for s in library.sources
                        if s.label in scopes
                    ]
                )
            else:
                plan = plan_sync(library, paths, self.settings.docs_dir)
            report.notes += plan.notes
            if rebuild:
                self._check_all_present(plan, library)
                library.record.building = library.next_physical()
                self.collection_name = library.record.building
            else:
                self.collection_name = library.record.active
            library.save()  # new sources and the rebuild's collection, before any chunk
            report.collection = self.collection_name
            self.collection = self.store.collection(self.collection_name)
            if self.collection is not None:
                check_model(self.collection, self.embeddings.info.key)
                self.progress.stage("keyword index")
                with tracing.span("keyword index", localrag_step="catch up"):
                    self.index = open_keyword_index(self.settings, self.store, self.collection)
                    # A killed run may have left the index behind the vectors: catch up first.
                    self.index.catch_up(self.collection, library.record)
            self.catalog = open_catalog(self.settings, self.store.key, self.collection_name)

        found_files: list[SourceFile] = []
        fingerprints: dict[str, str] = {}
        synced: list[Target] = []
        before: dict[str, tuple[int, int]] = {}  # label -> (files, chunks) stored in scope
        self.progress.stage("discover")
        for target in plan.targets:
            with tracing.span(
                "discover", localrag_source=target.source.label, localrag_scoped=bool(target.within)
            ) as step:
                with self.clock("discover"):
                    problem = target.source.problem()
                if problem is not None:
                    tracing.record(step, localrag_problem=problem)
                    self._kept(target.source, problem)
                    continue
                with self.clock("discover"):
                    found = discover(
                        target.source.location,
                        target.source.label,
                        within=target.within,
                        include_hidden=self.settings.include_hidden,
                        exclude=never_indexed(self.settings),
                    )
                label = target.source.label
                with self.clock("read store"):
                    if self._trusts(target.source):
                        self.trusted.add(label)
                        stored = self._catalog_stored(target)
                    else:
                        stored = self._read_stored(target)
                present = {f.source for f in found.files} | {s.source for s in found.skipped}
                if stored and self._looks_unmounted(target, stored, present, found.files):
                    tracing.record(step, localrag_problem="empty")
                    self._kept(target.source, "empty")
                    continue
                report.failed.update({s.source: s.reason for s in found.skipped})
                self.file_rows += [
                    FileRow(s.source, label, "skipped", s.reason) for s in found.skipped
                ]
                with self.clock("discover"):
                    for file in found.files:
                        if self._unchanged_by_stamp(file, stored.get(file.source), label):
                            continue
                        try:
                            stat = file.path.stat()
                            fingerprints[file.source] = file_fingerprint(file.path, self.policy)
                            self.stamps[file.source] = (stat.st_size, file_stamp(stat))
                        except OSError as exc:
                            report.failed[file.source] = f"cannot be read ({exc.strerror or exc})"
                found_files += found.files
                self.stored.update(stored)
                before[target.source.label] = (len(stored), sum(f.count() for f in stored.values()))
                synced.append(target)
                tracing.record(
                    step,
                    localrag_files=len(found.files),
                    localrag_skipped=len(found.skipped),
                    localrag_stored_files=len(stored),
                    localrag_trusted_catalog=label in self.trusted,
                )

        to_parse = []
        for file in found_files:
            fingerprint = fingerprints.get(file.source)
            if fingerprint is None:
                continue  # unchanged by its stamp, or unreadable
            stored_file = self.stored.get(file.source)
            if stored_file is None:
                report.new.append(file.source)
            elif stored_file.complete(fingerprint):
                report.unchanged.append(file.source)
                continue
            else:
                report.changed.append(file.source)
            to_parse.append((file, fingerprint))

        seen = set(fingerprints) | set(report.unchanged) | self.report.failed_unchanged
        report.deleted = sorted(set(self.stored) - seen)
        with self.clock("read store"):
            self._load_ids([f.source for f, _ in to_parse] + report.deleted)
        written = self._ingest(to_parse)
        self.progress.stage("write")
        keep = written | set(report.unchanged) | self.unsettled
        with self.clock("store"):
            for source in sorted(set(self.stored) - keep):
                self._delete(self.stored[source].ids, root_of(source))
            with tracing.span("finish", localrag_sources=[t.source.label for t in synced]):
                self._finish(library, plan, synced, before, keep, rebuild=rebuild)
        report.seconds = self.clock.seconds | {"total": time.perf_counter() - started}
        report.ocr_files = sum(1 for facts in self.facts.values() if facts[1])
        report.ocr_pages = sum(facts[1] for facts in self.facts.values())
        if self.index is not None:
            self.index.close()
        if self.catalog is not None:
            self.catalog.close()
        return report

    def _open_library(self, paths: list[Path], rebuild: bool) -> Library:
        model = self.embeddings.info.key
        library = find_library(
            self.store,
            self.settings,
            model,
            rebuild=rebuild,
            adding=bool(paths),
            advice=self.advice,
        )
        check_paths(paths, library)
        if library is not None:
            return library
        name = library_name(self.settings, model)
        # A --rebuild under another model re-embeds the sources of the user's library.
        others = [] if self.settings.collection_name else other_libraries(self.store, name)
        sources = [
            LibrarySource(s.label, s.path, s.kind, s.added)
            for s in (others[0].sources if others else [])
        ]
        if others:
            self.report.notes.append(
                f"Re-embedding the {len(sources)} sources of {others[0].name} "
                f"({others[0].record.model}) with {model}; that library stays as it is."
            )
        library = Library.create(self.store, name, model, sources)
        if self.store.collection(name) is not None:
            # Made before libraries: replaced once this run (adding paths, or --rebuild) completes.
            library.record.retired.append(name)
        return library

    # --- The file catalog ------------------------------------------------------------------

    def _trusts(self, source: LibrarySource) -> bool:
        return (
            self.catalog is not None
            and self.collection is not None
            and self.catalog.trusted(source.label, source.generation, policy_key(self.policy))
        )

    def _catalog_stored(self, target: Target) -> dict[str, StoredFile]:
        """The source's stored files as the catalog knows them (their ids read when needed)."""
        assert self.catalog is not None
        self.known_rows = getattr(self, "known_rows", {})
        stored: dict[str, StoredFile] = {}
        prefixes = (
            None
            if target.within is None
            else [file_name(target.source.label, rel) for rel in target.within]
        )
        for row in self.catalog.rows(target.source.label):
            self.known_rows[row.name] = row
            if prefixes is not None and not any(
                row.name == p or row.name.startswith(p + "/") for p in prefixes
            ):
                continue
            if row.searchable:
                stored[row.name] = StoredFile(set(), {row.fingerprint}, row.chunks, True)
        return stored

    def _looks_unmounted(
        self,
        target: Target,
        stored: dict[str, StoredFile],
        present: set[str],
        files: list[SourceFile],
    ) -> bool:
        """A folder that still exists but holds none of its files is an unmounted drive (perhaps
        with a placeholder file in the mount point) far more often than a user who deleted
        everything: its chunks are kept, and the report says how to drop them. Unless files
        there hold what stored ones held: they were moved (a reorganized folder, a renamed
        file). A scoped sync (a watcher's) asks when it is about to delete: none of the
        source's top-level names is there (a drive gone under a watcher that polls)."""
        source = target.source
        if target.within is None and present & stored.keys():
            return False
        if target.within is not None and not stored.keys() - present:
            return False
        rows = self._catalog_rows(source.label)
        if target.within is not None and not self._top_names_gone(source, {*stored, *rows}):
            return False
        known = {f for entry in stored.values() for f in entry.fingerprints}
        known |= {row.fingerprint for row in rows.values()}
        for file in files[:MOVED_FILES_CHECKED]:
            with contextlib.suppress(OSError):
                if file_fingerprint(file.path, self.policy) in known:
                    return False
        return True

    def _catalog_rows(self, label: str) -> dict[str, FileRow]:
        """The source's searchable catalog rows by name (those read this run, else read now)."""
        if self.catalog is None:
            return {}
        known = getattr(self, "known_rows", {})
        rows = [r for n, r in known.items() if root_of(n) == label] or self.catalog.rows(label)
        return {r.name: r for r in rows if r.searchable}

    @staticmethod
    def _top_names_gone(source: LibrarySource, names: set[str]) -> bool:
        """None of the top-level names (inside the source) of its files `names` is there."""
        label = source.label
        tops = {n[len(label) + 1 :].split("/")[0] for n in names if n.startswith(label + "/")}
        return bool(tops) and not any(os.path.lexists(source.location / t) for t in tops)

    def _unchanged_by_stamp(self, file: SourceFile, entry: StoredFile | None, label: str) -> bool:
        """A file of a trusted source whose stamp matches its catalog row: unchanged (indexed),
        or failed again for the same reason (not retried until it changes). No read."""
        if label not in self.trusted:
            return False
        row = getattr(self, "known_rows", {}).get(file.source)
        if row is None or not row.stamp:
            return False
        try:
            stamp = file_stamp(file.path.stat())
        except OSError:
            return False
        if stamp != row.stamp:
            return False
        if row.searchable and entry is not None:
            self.report.unchanged.append(file.source)
            return True
        if row.status == "failed":
            self.report.failed[file.source] = f"{row.reason} (unchanged since; edit it to retry)"
            self.report.failed_unchanged.add(file.source)
            self.file_rows.append(row)
            return True
        return False

    def _load_ids(self, names: list[str]) -> None:
        """The chunk ids of files known from the catalog only, for those about to change."""
        wanted = [n for n in names if n in self.stored and self.stored[n].from_catalog]
        if not wanted or self.collection is None:
            return
        by_root: dict[str, list[str]] = {}
        for name in wanted:
            by_root.setdefault(root_of(name), []).append(name)
        for root, files in by_root.items():
            rows = self.collection.rows(Selection(root=root, sources=set(files)))
            for chunk_id, metadata in rows:
                entry = self.stored.get(str(metadata.get("source", "")))
                if entry is not None:
                    entry.ids.add(chunk_id)
        for name in wanted:
            self.stored[name].from_catalog = False
            self.stored[name].chunk_count = len(self.stored[name].ids)

    def _write_catalog(self, synced: list[Target], keep: set[str], rebuild: bool) -> None:
        """The rows of every file this run looked at, and which sources they mirror now."""
        catalog = self.catalog
        if catalog is None:
            return
        known = getattr(self, "known_rows", {})
        stamp_now = now()
        rows = {row.name: row for row in self.file_rows}
        for name in keep:
            if name in rows or name in self.unsettled:
                continue
            old = known.get(name)
            if old is not None and old.searchable and name not in self.stamps:
                continue  # unchanged by its stamp: its row stays as it was (no write per file)
            size, stamp = self.stamps.get(name, (old.size if old else -1, old.stamp if old else ""))
            fingerprint = (
                next(iter(self.stored[name].fingerprints), "") if name in self.stored else ""
            )
            pages, ocr_pages, chars = self.facts.get(
                name, (old.pages, old.ocr_pages, old.chars) if old else (0, 0, 0)
            )
            chunks = self.written_chunks.get(name)
            if chunks is None:
                chunks = self.stored[name].count() if name in self.stored else 0
            rows[name] = FileRow(
                name,
                root_of(name),
                "ocr" if ocr_pages else "indexed",
                "",
                size,
                stamp,
                self.fingerprints_written.get(name, fingerprint),
                pages,
                ocr_pages,
                chunks,
                chars,
                stamp_now,
            )
        for name, reason in self.report.failed.items():
            if name not in rows:
                size, stamp = self.stamps.get(name, (-1, ""))
                rows[name] = FileRow(name, root_of(name), "failed", reason, size, stamp)
        gone = set(self.report.deleted) | {
            n for n in known if n not in rows and n not in keep and self._in_scope(n, synced)
        }
        catalog.remove(gone - set(rows))
        catalog.put(rows.values())
        for target in synced:
            label = target.source.label
            if target.within is None or label in self.trusted or rebuild:
                catalog.mark(label, target.source.generation, policy_key(self.policy))
            else:  # a scoped sync of a source not yet mirrored: its other rows are unchecked
                catalog.mark(label, CATALOG_DIRTY)

    @staticmethod
    def _in_scope(name: str, synced: list[Target]) -> bool:
        for target in synced:
            label = target.source.label
            if root_of(name) != label:
                continue
            if target.within is None:
                return True
            prefixes = [file_name(label, rel) for rel in target.within]
            if any(name == p or name.startswith(p + "/") for p in prefixes):
                return True
        return False

    def _check_all_present(self, plan: SyncPlan, library: Library) -> None:
        """A rebuild re-embeds every source into a new collection: one that cannot be read now
        (gone, or a mount point without its drive) would lose its chunks."""
        active = library.collection()
        gone = [
            t.source
            for t in plan.targets
            if t.source.problem() is not None
            or (active is not None and not self._any_file_there(active, t.source))
        ]
        if gone:
            raise ConfigError(
                "A rebuild re-embeds every source, and these cannot be read now: "
                + "; ".join(f"{s.label} ({s.path})" for s in gone)
                + ". Restore them, or remove them with `python -m app.ingest --remove PATH`, "
                "then rebuild. Nothing was changed."
            )

    @staticmethod
    def _any_file_there(collection: ChunkCollection, source: LibrarySource) -> bool:
        """Whether any file stored for the source is on disk (True when none is stored)."""
        names = {str(m.get("source", "")) for _, m in collection.rows(Selection(root=source.label))}
        if not names:
            return True
        base = source.location
        for name in names:
            inside = name.partition("/")[2]
            if os.path.lexists(base / inside if inside else base):
                return True
        return False

    def _kept(self, source: LibrarySource, problem: str) -> None:
        report = self.report
        report.sources.append(
            SourceReport(source.label, source.path, problem, source.files, source.chunks)
        )
        if problem == "empty":
            report.missing.append(
                f"Source {source.label} ({source.path}) exists but none of its {source.files} "
                "files is there (an unmounted drive?): its chunks are kept. If you deleted "
                f"them, remove the source with `python -m app.ingest --remove {source.path}`."
            )
        elif problem == "missing":
            report.missing.append(describe_missing(source))
        else:
            report.missing.append(
                f"Source {source.label} ({source.path}) is {problem}: its chunks are kept."
            )

    def _finish(
        self,
        library: Library,
        plan: SyncPlan,
        synced: list[Target],
        before: dict[str, tuple[int, int]],
        keep: set[str],
        *,
        rebuild: bool,
    ) -> None:
        """Counts, generation and (for a rebuild) the switch, in the record; then the sources
        a new folder took over are removed, and a rebuild's old collection deleted."""
        record = library.record
        now_files: dict[str, int] = {}
        now_chunks: dict[str, int] = {}
        for name in keep:
            label = root_of(name)
            now_files[label] = now_files.get(label, 0) + 1
            chunks = self.written_chunks.get(name)
            if chunks is None:
                chunks = self.stored[name].count() if name in self.stored else 0
            now_chunks[label] = now_chunks.get(label, 0) + chunks
        if self.touched or rebuild:
            record.generation += 1
        stamp = now()
        for target in synced:
            source, label = target.source, target.source.label
            files, chunks = now_files.get(label, 0), now_chunks.get(label, 0)
            if target.within is None:
                source.files, source.chunks = files, chunks
            else:
                files_before, chunks_before = before[label]
                source.files = max(0, source.files - files_before + files)
                source.chunks = max(0, source.chunks - chunks_before + chunks)
            source.last_synced = stamp
            if label in self.touched or rebuild:
                source.generation = record.generation
            self.report.sources.append(
                SourceReport(
                    label,
                    source.path,
                    "added" if target.added else "synced",
                    source.files,
                    source.chunks,
                )
            )
        complete = {t.source.label for t in synced if t.within is None}
        for outer, inner in plan.absorbed.items():
            if outer not in complete:
                continue
            for label in inner:
                taken = library.source(label)
                if taken is not None:
                    self.report.sources.append(
                        SourceReport(label, taken.path, f"taken over by {outer}", 0, 0)
                    )
                library.drop(label)
        if rebuild:
            self.report.notes.append(
                f"Switched the library from {record.active} to {record.building}."
            )
            record.retired.append(record.active)
            record.active = str(record.building)
            record.building = None
            record.model = self.embeddings.info.key
        library.save()
        if self.index is not None:
            for target in synced:
                if target.source.label in self.touched or rebuild:
                    self.index.mark(target.source.label, target.source.generation)
        self._write_catalog(synced, keep, rebuild)
        if record.removing:
            self.report.chunks_removed += purge_removed(self.settings, library)
        if record.retired:
            finish_interrupted(self.settings, library)

    def _read_stored(self, target: Target) -> dict[str, StoredFile]:
        """The stored files of the target's source (only those in its scope, when it has one).

        A scope (what a watcher saw change) is read file by file where it names files, so a
        change in a big source does not read all of its records; a folder, or a path that is
        gone and was not a stored file (a deleted folder), reads the source's and keeps what
        is under it. A path is read both ways when it was a file and is now a folder (or the
        reverse)."""
        stored: dict[str, StoredFile] = {}
        if self.collection is None:
            return stored
        label = target.source.label
        if target.within is None or "" in target.within:
            self._add_rows(stored, self.collection.rows(Selection(root=label)))
            return stored
        paths = {file_name(label, rel): target.source.location / rel for rel in target.within}
        self._add_rows(stored, self.collection.rows(Selection(root=label, sources=set(paths))))
        below = tuple(
            f"{name}/"
            for name, path in paths.items()
            if path.is_dir()
            or (name not in stored and (not os.path.lexists(path) or self._held_below(name)))
        )
        if below:
            rows = self.collection.rows(Selection(root=label))
            self._add_rows(
                stored, ((i, m) for i, m in rows if str(m.get("source", "")).startswith(below))
            )
        return stored

    def _held_below(self, name: str) -> bool:
        """Whether files are stored below `name/` (a folder since replaced by a file of that
        name). The keyword index answers, caught up with the collection under the same lock
        at the start of the run, so a new file costs no read of its source's records."""
        return self.index is not None and self.index.holds_below(name)

    @staticmethod
    def _add_rows(
        stored: dict[str, StoredFile], rows: Iterable[tuple[str, dict[str, Any]]]
    ) -> None:
        for chunk_id, metadata in rows:
            entry = stored.setdefault(str(metadata.get("source", "")), StoredFile())
            entry.ids.add(chunk_id)
            entry.fingerprints.add(str(metadata.get("file_hash", "")))
            entry.chunk_count = int(metadata.get("chunk_count", -1))

    def _touch(self, roots: set[str]) -> None:
        """Mark sources as being written in the keyword index, before their first write: a kill
        from here on leaves them marked, and the next run catches them up."""
        for root in roots - self.touched:
            if self.index is not None:
                self.index.mark(root, DIRTY)
            if self.catalog is not None:
                self.catalog.mark(root, CATALOG_DIRTY)
            self.touched.add(root)

    def _ingest(self, to_parse: list[tuple[SourceFile, str]]) -> set[str]:
        """Parse, split, embed and write; returns the files now complete in the store. A file
        whose bytes changed while it was parsed is parsed again (PARSE_ROUNDS in all); one that
        never holds still keeps what the store had, and the next sync reads it."""
        self.progress.stage("parse")
        self.progress.files_to_parse(len(to_parse))
        written: set[str] = set()
        info = self.embeddings.info
        self.ahead = EmbedAhead[_Flush](
            self.embeddings.embed_documents,
            limit=AHEAD_CHUNKS,
            span_attributes=tracing.llm_attributes(info.name, info.provider, "embeddings"),
            # An in-process model gets the batches as sorted by tokens; a model server, requests
            # of EMBEDDING_BATCH_SIZE however the flushes fall.
            request_size=None if self.embeddings.batches_by_tokens else self.embeddings.batch_size,
        )
        try:
            for round_number in range(1, PARSE_ROUNDS + 1):
                moved = self._parse_round(to_parse, written)
                if not moved:
                    return written
                if round_number == PARSE_ROUNDS:
                    for file, _ in moved:
                        self.unsettled.add(file.source)
                        self.report.notes.append(
                            f"{file.source} kept changing while it was read: it keeps what the "
                            "library had, and the next sync reads it again."
                        )
                    return written
                to_parse = []
                for file, _ in moved:
                    try:
                        to_parse.append((file, file_fingerprint(file.path, self.policy)))
                    except OSError as exc:
                        reason = f"cannot be read ({exc.strerror or exc})"
                        self.report.failed[file.source] = reason
            return written
        finally:
            self.ahead.close()
            self.clock.seconds["embed"] = self.ahead.seconds_embedding
            self.clock.seconds["wait for the model"] = self.ahead.seconds_waited

    def _parse_round(
        self, to_parse: list[tuple[SourceFile, str]], written: set[str]
    ) -> list[tuple[SourceFile, str]]:
        fingerprints = {file.source: fp for file, fp in to_parse}
        moved: list[tuple[SourceFile, str]] = []
        pending: list[tuple[str, list[Document]]] = []
        pending_chunks = 0
        limits = replace(pool_limits(self.settings), activity_dir=self.progress.activity_dir)
        results = parse_in_workers([f for f, _ in to_parse], limits)
        while True:
            with self.clock("parse"):
                result = next(results, None)
            if result is None:
                break
            source = result.file.source
            _trace_parse(result)
            if isinstance(result, Failed):
                self.progress.file_parsed(source, 0, 0, result.reason)
                self.report.failed[source] = result.reason
                if result.retry:  # a row without a stamp: the next sync parses it again
                    self.stamps.pop(source, None)
                    self.report.retry.add(source)
                for listed in (self.report.new, self.report.changed):
                    if source in listed:
                        listed.remove(source)  # a file is new, changed or failed: one of them
                continue
            with self.clock("discover"):
                try:
                    stat = result.file.path.stat()
                    settled = file_fingerprint(result.file.path, self.policy)
                except OSError:
                    settled = ""
                else:
                    self.stamps[source] = (stat.st_size, file_stamp(stat))
                    self.fingerprints_written[source] = settled
            if settled != fingerprints[source]:
                moved.append((result.file, settled))
                continue
            self.facts[source] = _facts(result)
            self.progress.file_parsed(source, *self.facts[source][:2], "")
            with (
                self.clock("split"),
                tracing.span(
                    "split", localrag_file=source, localrag_documents=len(result.documents)
                ) as step,
            ):
                chunks = split_documents(result.documents, self.policy)
                for chunk in chunks:
                    chunk.metadata["file_hash"] = fingerprints[source]
                    chunk.metadata["root"] = root_of(source)
                tracing.record(step, localrag_chunks=len(chunks))
            pending.append((source, chunks))
            pending_chunks += len(chunks)
            # A model that waits for chunks gets a batch as soon as there is one (the first
            # request need not wait for FLUSH_CHUNKS of parsing); a busy one, by FLUSH_CHUNKS.
            batch = self.embeddings.batch_size
            if pending_chunks >= FLUSH_CHUNKS or (pending_chunks >= batch and self.ahead.idle):
                written |= self._flush(pending)
                pending, pending_chunks = [], 0
            written |= self._write(self.ahead.ready())
        written |= self._flush(pending)
        written |= self._write(self.ahead.drain(), promptly=True)
        return moved

    def _flush(self, pending: list[tuple[str, list[Document]]]) -> set[str]:
        """Queue the files' new chunks for embedding; returns the files whose writes are
        complete by now (of this flush or earlier ones)."""
        if not pending:
            return set()
        chunks = [chunk for _, file_chunks in pending for chunk in file_chunks]
        with self.clock("store"):
            existing = self._existing([c.id for c in chunks if c.id])
        missing = [c for c in chunks if c.id not in existing]
        kept = [c for c in chunks if c.id in existing]
        self.progress.chunks_to_embed(len(missing))
        # Batches of similar token length, so the model pads little (in file order, batches
        # of MS MARCO passages padded to 2.1x their tokens; by tokens, 1.1x).
        batches = self.embeddings.document_batches([c.page_content for c in missing])
        job = _Flush(pending, kept, chunks_left=len(missing))
        if not missing:
            return self._complete(job)
        done: set[str] = set()
        for batch in batches:
            done |= self._write(self.ahead.submit([missing[i] for i in batch], job))
        return done

    def _write(self, batches: Iterable[Embedded[_Flush]], promptly: bool = False) -> set[str]:
        """Write embedded batches in order, a flush's batches together (up to WRITE_CHUNKS a
        request: the store's cost is per request far more than per chunk); returns the files
        completed. `promptly`: each batch as it comes (the last ones: writes gathered until the
        model ends would all be left for after it)."""
        done: set[str] = set()
        try:
            for batch in batches:
                job = self.gathering = batch.tag
                job.embedded.append(batch)
                job.chunks_left -= len(batch.chunks)
                self.progress.chunks_embedded(len(batch.chunks))
                job.gathered += len(batch.chunks)
                if promptly or job.chunks_left == 0 or job.gathered >= WRITE_CHUNKS:
                    self._write_embedded(job)
                if job.chunks_left == 0:
                    done |= self._complete(job)
        except Exception:
            # The model failed (a server gone away): what it gave is written all the same, so
            # the next run embeds only the rest; the flush stays incomplete, as after a kill.
            if self.gathering is not None and self.gathering.embedded:
                self._write_embedded(self.gathering)
            raise
        return done

    def _write_embedded(self, job: _Flush) -> None:
        chunks = [c for b in job.embedded for c in b.chunks]
        vectors = [v for b in job.embedded for v in b.vectors]
        job.embedded, job.gathered = [], 0
        with (
            self.clock("store"),
            tracing.span(
                "write", localrag_chunks=len(chunks), localrag_collection=self.collection_name
            ),
        ):
            self._upsert(chunks, vectors)

    def _complete(self, job: _Flush) -> set[str]:
        """Every new chunk of the flush is written: now the kept ones and the stale ones.
        add -> update -> delete, so a file is complete only when all its chunks carry its
        fingerprint and no stale chunk is left; a run killed anywhere in between leaves files
        the next run sees as incomplete and repairs."""
        with self.clock("store"):
            if job.kept:
                assert self.collection is not None  # kept chunks were found in it
                self._touch({root_of(str(c.metadata["source"])) for c in job.kept})
                self.collection.replace_metadata(
                    [str(c.id) for c in job.kept], [c.metadata for c in job.kept]
                )
            stale: dict[str, set[str]] = {}  # root -> ids: one delete per source and flush
            for source, file_chunks in job.pending:
                old = self.stored.get(source)
                if old is not None and old.ids:
                    ids = old.ids - {c.id for c in file_chunks}
                    stale.setdefault(root_of(source), set()).update(ids)
                self.written_chunks[source] = len(file_chunks)
            for root, ids in stale.items():
                self._delete(ids, root)
        self.report.chunks_added += sum(len(c) for _, c in job.pending) - len(job.kept)
        self.report.chunks_kept += len(job.kept)
        return {source for source, _ in job.pending}

    def _upsert(self, chunks: list[Document], vectors: list[list[float]]) -> None:
        if not chunks:
            return
        if self.collection is None:
            self.collection = self.store.create_collection(
                self.collection_name, self.embeddings.info.key, len(vectors[0])
            )
            self.index = open_keyword_index(self.settings, self.store, self.collection)
        check_dimension(self.collection, len(vectors[0]))
        self._touch({root_of(str(c.metadata["source"])) for c in chunks})
        self.collection.upsert(chunks, vectors)
        assert self.index is not None
        with tracing.span("keyword index", localrag_step="add", localrag_chunks=len(chunks)):
            self.index.add(chunks)

    def _existing(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The metadata of those of `ids` that the store holds."""
        if self.collection is None or not ids:
            return {}
        return {c.id: c.metadata for c in self.collection.get(ids, text=False)}

    def _delete(self, ids: set[str], root: str) -> None:
        if not ids or self.collection is None:
            return
        with tracing.span("delete", localrag_chunks=len(ids), localrag_source=root):
            self._touch({root})
            self.collection.delete(sorted(ids))
            self.report.chunks_removed += len(ids)
            if self.index is not None:
                with tracing.span(
                    "keyword index", localrag_step="remove", localrag_chunks=len(ids)
                ):
                    self.index.remove(ids)


def _trace_parse(result: Parsed | Failed) -> None:
    """One span per file, timed by the worker that parsed it (a failure without the worker's
    times, a timeout or a killed worker, is a point at the time it was reported)."""
    started, ended = result.timing or (None, None)
    step = tracing.start(
        "parse",
        start_time=started,
        localrag_file=result.file.source,
        localrag_type=result.file.path.suffix.lstrip(".").lower(),
    )
    if step.is_recording():
        if isinstance(result, Failed):
            tracing.record(step, localrag_error=result.reason)
            step.set_status(tracing.Status(tracing.StatusCode.ERROR, result.reason))
        else:
            pages, ocr_pages, chars = _facts(result)
            tracing.record(
                step,
                localrag_documents=len(result.documents),
                localrag_pages=pages,
                localrag_ocr_pages=ocr_pages,
                localrag_characters=chars,
            )
    step.end(end_time=ended)


def _facts(parsed: Parsed) -> tuple[int, int, int]:
    """Pages (as the parser counted them: a scan's blank pages too; 1 for an unpaged file),
    pages read by OCR, characters."""
    return (
        parsed.pages or (1 if parsed.documents else 0),
        parsed.ocr_pages,
        sum(len(d.page_content) for d in parsed.documents),
    )
