"""Keep the library's collection exactly equal to the chunks of its sources' files.

The collection is its own bookkeeping: every chunk carries its file's fingerprint and chunk
count, so there is no second record to drift from the store. A file is unchanged when the store
holds exactly its `chunk_count` chunks, all with its current fingerprint; anything else (new,
edited, half-written by a killed run) is parsed again, and only chunks whose ids are missing are
embedded. Each embedded batch is written at once (a killed run loses at most one batch of work),
and a file's writes go add -> update -> delete; whatever point a run is killed at, the files it
was writing are left incomplete by that rule, and the next run repairs them.

A run syncs only the sources it was given (every source when given none); the chunks of the
others are never read or touched. The keyword index is written in the same steps, under the same
lock. The library record (app/store/library.py) is saved before the first chunk is written (new
sources, a rebuild's new collection) and after the last (counts, generation, the switch).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.documents import Document

from app.config import Settings
from app.errors import ConfigError
from app.indexing.splitter import ChunkPolicy, split_documents
from app.models.embeddings import ModelEmbeddings
from app.store.chroma import (
    check_dimension,
    check_model,
    collection_name,
    connect,
    create_collection,
    describe_store,
    drop_collection,
    get_collection,
    ids_where,
    iter_metadatas,
    store_errors,
    writer_lock,
)
from app.store.keyword_index import DIRTY, KeywordIndex, delete_keyword_index, open_keyword_index
from app.store.library import (
    Library,
    LibrarySource,
    SyncPlan,
    Target,
    any_library,
    check_paths_exist,
    describe_missing,
    find_library,
    library_to_show,
    normalize,
    now,
    other_libraries,
    plan_remove,
    plan_sync,
)
from loaders.discovery import SourceFile, discover, file_name
from loaders.parsers import ParseLimits
from loaders.pool import Failed, PoolLimits, parse_in_workers

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from app.models.embeddings import EmbeddingModelInfo

# Bump when parsing or splitting changes what a file turns into: every file is then re-chunked.
PIPELINE_VERSION = 3
FLUSH_CHUNKS = 512  # chunks gathered across files before they are embedded and written
FIRST_RUN_LOCK_WAIT = 900.0  # seconds a chat waits for another chat's first-run ingest


class SyncProgress(Protocol):
    def files_to_parse(self, count: int) -> None: ...
    def file_parsed(self) -> None: ...
    def chunks_to_embed(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...


class NoProgress:
    def files_to_parse(self, count: int) -> None: ...
    def file_parsed(self) -> None: ...
    def chunks_to_embed(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...


@dataclass
class SourceReport:
    label: str
    path: str
    status: str  # added, synced, missing, unreadable, empty (kept), taken over, removed
    files: int = 0
    chunks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": self.path,
            "status": self.status,
            "files": self.files,
            "chunks": self.chunks,
        }


@dataclass
class IngestReport:
    collection: str
    store: str
    embedding_model: str
    library: str = ""
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # source -> reason
    chunks_added: int = 0
    chunks_kept: int = 0  # chunks of changed files whose text did not change: not re-embedded
    chunks_removed: int = 0
    sources: list[SourceReport] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one message per source kept unsynced
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "collection": self.collection,
            "store": self.store,
            "embedding_model": self.embedding_model,
            "sources": [s.as_dict() for s in self.sources],
            "files": {
                "new": len(self.new),
                "changed": len(self.changed),
                "unchanged": len(self.unchanged),
                "deleted": len(self.deleted),
                "failed": len(self.failed),
            },
            "chunks": {
                "added": self.chunks_added,
                "kept": self.chunks_kept,
                "removed": self.chunks_removed,
            },
            "failed": [{"source": s, "reason": r} for s, r in sorted(self.failed.items())],
            "missing": self.missing,
            "notes": self.notes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


@dataclass
class StoredFile:
    ids: set[str] = field(default_factory=set)
    fingerprints: set[str] = field(default_factory=set)
    chunk_count: int = -1

    def complete(self, fingerprint: str) -> bool:
        return self.fingerprints == {fingerprint} and len(self.ids) == self.chunk_count


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


def file_fingerprint(path: Path, policy: ChunkPolicy) -> str:
    """The file's bytes plus everything that decides how they are chunked."""
    digest = hashlib.sha256(
        f"{PIPELINE_VERSION}|{policy.chunk_size}|{policy.chunk_overlap}|"
        f"{policy.max_tokens}|{policy.prefix}|".encode()
    )
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:32]


def root_of(name: str) -> str:
    """The label of the source a stored file belongs to (labels hold no slash)."""
    return name.split("/", 1)[0]


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def sync_collection(
    settings: Settings,
    paths: Sequence[Path],
    embeddings: ModelEmbeddings,
    *,
    rebuild: bool = False,
    progress: SyncProgress | None = None,
    scopes: dict[str, list[str]] | None = None,
) -> IngestReport:
    """Add the paths that are new as sources and sync them (every source when none is given),
    leaving every other source's chunks as they are. `--rebuild`: re-embed every source into a
    new collection and switch to it once complete. `scopes` (label -> paths inside the source)
    limits a sync to what a watcher saw change."""
    with writer_lock(settings):
        return _Sync(settings, embeddings, progress or NoProgress()).run(
            [normalize(p) for p in paths], rebuild=rebuild, scopes=scopes
        )


def ingest_first_run(
    settings: Settings, embeddings: ModelEmbeddings, progress: SyncProgress | None = None
) -> IngestReport | None:
    """The sample documents (DOCS_DIR), only into a store that holds no library at all; None
    when it holds one (another chat may have made it while this one waited for the lock)."""
    with writer_lock(settings, wait=FIRST_RUN_LOCK_WAIT):
        if any_library(connect(settings), settings, embeddings.info):
            return None
        return _Sync(settings, embeddings, progress or NoProgress()).run(
            [settings.docs_dir], rebuild=False
        )


@dataclass
class RemoveReport:
    library: str
    removed: list[SourceReport]
    chunks_removed: int
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "removed": [s.as_dict() for s in self.removed],
            "chunks_removed": self.chunks_removed,
            "notes": self.notes,
        }


def remove_sources(settings: Settings, info: EmbeddingModelInfo, args: list[str]) -> RemoveReport:
    """Forget sources and delete their chunks (no embedding model needed). The record drops them
    first, so a run killed half-way finishes the deletion next time instead of re-adding them."""
    with writer_lock(settings), store_errors(settings):
        client = connect(settings)
        library = library_to_show(client, settings, info)
        if library is None or not library.sources:
            raise ConfigError("The library has no sources to remove.")
        notes = finish_interrupted(settings, library)
        chosen = plan_remove(library, args)
        for source in chosen:
            library.drop(source.label)
        library.save()
        removed = purge_removed(settings, library)
        return RemoveReport(
            library.name,
            [SourceReport(s.label, s.path, "removed", s.files, s.chunks) for s in chosen],
            removed,
            notes,
        )


def finish_interrupted(settings: Settings, library: Library) -> list[str]:
    """Complete what a killed run left half done: a --rebuild's partial collection is deleted
    (the library still points at the complete one), replaced collections and removed sources'
    chunks are deleted."""
    notes = []
    record = library.record
    if record.building:
        drop_collection(library.client, record.building)
        delete_keyword_index(settings, record.building)
        notes.append(
            f"Deleted the partial collection {record.building} left by an interrupted --rebuild; "
            f"the library still uses {record.active}."
        )
        record.building = None
        library.save()
    if record.retired:
        for name in record.retired:
            drop_collection(library.client, name)
            delete_keyword_index(settings, name)
        record.retired = []
        library.save()
    if record.removing:
        purge_removed(settings, library)
    return notes


def purge_removed(settings: Settings, library: Library) -> int:
    """Delete the chunks (and keyword rows) of the sources the record lists as being removed."""
    record = library.record
    removed = 0
    collection = library.collection()
    index = open_keyword_index(settings, collection) if collection is not None else None
    for label in list(record.removing):
        if collection is not None:
            ids = ids_where(collection, {"root": label})
            if index is not None:
                index.mark(label, DIRTY)
            removed += _delete_ids(library.client, collection, ids)
        if index is not None:
            index.forget(label)
        record.removing.remove(label)
    if removed:
        record.generation += 1
    library.save()
    if index is not None:
        index.close()
    return removed


def _delete_ids(client: ClientAPI, collection: Collection, ids: Sequence[str]) -> int:
    ordered = sorted(ids)
    limit = client.get_max_batch_size()
    for start in range(0, len(ordered), limit):
        collection.delete(ids=ordered[start : start + limit])
    return len(ordered)


class _Sync:
    def __init__(
        self, settings: Settings, embeddings: ModelEmbeddings, progress: SyncProgress
    ) -> None:
        self.settings = settings
        self.embeddings = embeddings
        self.progress = progress
        self.policy = chunk_policy(settings, embeddings)
        self.clock = StageClock()
        self.client = connect(settings)
        self.collection: Collection | None = None
        self.collection_name = ""
        self.index: KeywordIndex | None = None
        self.stored: dict[str, StoredFile] = {}
        self.touched: set[str] = set()  # sources whose chunks this run changed
        self.written_chunks: dict[str, int] = {}  # file -> chunks it has now (files written)
        self.report = IngestReport(
            collection="",
            store=describe_store(settings),
            embedding_model=embeddings.info.key,
            library=collection_name(settings, embeddings.info),
        )

    def run(
        self,
        paths: list[Path],
        *,
        rebuild: bool,
        scopes: dict[str, list[str]] | None = None,
    ) -> IngestReport:
        started = time.perf_counter()
        report = self.report
        with self.store("read store"):
            library = self._open_library(paths, rebuild)
            report.notes += finish_interrupted(self.settings, library)
            if scopes is not None:
                plan = SyncPlan(
                    [
                        Target(s, within=scopes[s.label])
                        for s in library.sources
                        if s.label in scopes
                    ]
                )
            else:
                plan = plan_sync(library, paths, self.settings.docs_dir)
            report.notes += plan.notes
            if rebuild:
                self._check_all_present(plan)
                library.record.building = library.next_physical()
                self.collection_name = library.record.building
            else:
                self.collection_name = library.record.active
            library.save()  # new sources and the rebuild's collection, before any chunk
            report.collection = self.collection_name
            self.collection = get_collection(self.client, self.collection_name)
            if self.collection is not None:
                check_model(self.collection, self.embeddings.info.key)
                self.index = open_keyword_index(self.settings, self.collection)
                # A killed run may have left the index behind the vectors: catch up first.
                self.index.catch_up(self.collection, library.record)

        found_files: list[SourceFile] = []
        fingerprints: dict[str, str] = {}
        synced: list[Target] = []
        before: dict[str, tuple[int, int]] = {}  # label -> (files, chunks) stored in scope
        for target in plan.targets:
            with self.clock("discover"):
                problem = target.source.problem()
            if problem is not None:
                self._kept(target.source, problem)
                continue
            with self.clock("discover"):
                found = discover(
                    target.source.location,
                    target.source.label,
                    within=target.within,
                    include_hidden=self.settings.include_hidden,
                )
            with self.store("read store"):
                stored = self._read_stored(target)
            if target.within is None and stored and not found.files and not found.skipped:
                # A folder that still exists but lost every file is an unmounted drive far
                # more often than a user who deleted everything: keep, and say how to drop it.
                self._kept(target.source, "empty")
                continue
            report.failed.update({s.source: s.reason for s in found.skipped})
            with self.clock("discover"):
                for file in found.files:
                    try:
                        fingerprints[file.source] = file_fingerprint(file.path, self.policy)
                    except OSError as exc:
                        report.failed[file.source] = f"cannot be read ({exc.strerror or exc})"
            found_files += found.files
            self.stored.update(stored)
            before[target.source.label] = (len(stored), sum(len(f.ids) for f in stored.values()))
            synced.append(target)

        to_parse = []
        for file in found_files:
            fingerprint = fingerprints.get(file.source)
            if fingerprint is None:
                continue
            stored_file = self.stored.get(file.source)
            if stored_file is None:
                report.new.append(file.source)
            elif stored_file.complete(fingerprint):
                report.unchanged.append(file.source)
                continue
            else:
                report.changed.append(file.source)
            to_parse.append((file, fingerprint))

        written = self._ingest(to_parse)
        keep = written | set(report.unchanged)
        report.deleted = sorted(set(self.stored) - set(fingerprints))
        with self.store("store"):
            for source in sorted(set(self.stored) - keep):
                self._delete(self.stored[source].ids, root_of(source))
            self._finish(library, plan, synced, before, keep, rebuild=rebuild)
        report.seconds = self.clock.seconds | {"total": time.perf_counter() - started}
        if self.index is not None:
            self.index.close()
        return report

    def _open_library(self, paths: list[Path], rebuild: bool) -> Library:
        info = self.embeddings.info
        library = find_library(self.client, self.settings, info, rebuild=rebuild)
        check_paths_exist(paths, library)
        if library is not None:
            return library
        name = collection_name(self.settings, info)
        # A --rebuild under another model re-embeds the sources of the user's library.
        others = [] if self.settings.collection_name else other_libraries(self.client, name)
        sources = [
            LibrarySource(s.label, s.path, s.kind, s.added)
            for s in (others[0].sources if others else [])
        ]
        if others:
            self.report.notes.append(
                f"Re-embedding the {len(sources)} sources of {others[0].name} "
                f"({others[0].record.model}) with {info.key}; that library stays as it is."
            )
        library = Library.create(self.client, name, info.key, sources)
        legacy = get_collection(self.client, name)
        if legacy is not None:  # made before libraries: replaced once the rebuild completes
            library.record.retired.append(name)
        return library

    def _check_all_present(self, plan: SyncPlan) -> None:
        gone = [t.source for t in plan.targets if t.source.problem() is not None]
        if gone:
            raise ConfigError(
                "A rebuild re-embeds every source, and these cannot be read now: "
                + "; ".join(f"{s.label} ({s.path})" for s in gone)
                + ". Restore them, or remove them with `python -m app.ingest --remove PATH`, "
                "then rebuild. Nothing was changed."
            )

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
                chunks = len(self.stored[name].ids)
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
        if record.removing:
            self.report.chunks_removed += purge_removed(self.settings, library)
        if record.retired:
            finish_interrupted(self.settings, library)

    @contextmanager
    def store(self, stage: str) -> Iterator[None]:
        """A stage that talks to the store: timed, and a lost server is a StoreError."""
        with self.clock(stage), store_errors(self.settings):
            yield

    def _read_stored(self, target: Target) -> dict[str, StoredFile]:
        """The stored files of the target's source (only those in its scope, when it has one).

        A scope (what a watcher saw change) is read file by file where it names files, so a
        change in a big source does not read all of its records; a folder, or a path that is
        gone and was not a stored file (a deleted folder), reads the source's and keeps what
        is under it."""
        stored: dict[str, StoredFile] = {}
        if self.collection is None:
            return stored
        label = target.source.label
        if target.within is None or "" in target.within:
            self._add_rows(stored, iter_metadatas(self.collection, {"root": label}))
            return stored
        paths = {file_name(label, rel): target.source.location / rel for rel in target.within}
        files = [name for name, path in paths.items() if not path.is_dir()]  # or gone
        if files:
            where = {"$and": [{"root": label}, {"source": {"$in": files}}]}
            self._add_rows(stored, iter_metadatas(self.collection, where))
        # Only a folder, or a gone path that was not a stored file (a deleted folder), can
        # have stored files below it.
        below = tuple(
            f"{name}/"
            for name, path in paths.items()
            if path.is_dir() or (not os.path.lexists(path) and name not in stored)
        )
        if below:
            rows = iter_metadatas(self.collection, {"root": label})
            self._add_rows(
                stored, ((i, m) for i, m in rows if str(m.get("source", "")).startswith(below))
            )
        return stored

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
            self.touched.add(root)

    def _ingest(self, to_parse: list[tuple[Any, str]]) -> set[str]:
        """Parse, split, embed and write; returns the sources now complete in the store."""
        fingerprints = {file.source: fp for file, fp in to_parse}
        self.progress.files_to_parse(len(to_parse))
        written: set[str] = set()
        pending: list[tuple[str, list[Document]]] = []
        pending_chunks = 0
        results = parse_in_workers([f for f, _ in to_parse], pool_limits(self.settings))
        while True:
            with self.clock("parse"):
                result = next(results, None)
            if result is None:
                break
            self.progress.file_parsed()
            source = result.file.source
            if isinstance(result, Failed):
                self.report.failed[source] = result.reason
                for listed in (self.report.new, self.report.changed):
                    if source in listed:
                        listed.remove(source)  # a file is new, changed or failed: one of them
                continue
            with self.clock("split"):
                chunks = split_documents(result.documents, self.policy)
                for chunk in chunks:
                    chunk.metadata["file_hash"] = fingerprints[source]
                    chunk.metadata["root"] = root_of(source)
            pending.append((source, chunks))
            pending_chunks += len(chunks)
            if pending_chunks >= FLUSH_CHUNKS:
                written |= self._flush(pending)
                pending, pending_chunks = [], 0
        written |= self._flush(pending)
        return written

    def _flush(self, pending: list[tuple[str, list[Document]]]) -> set[str]:
        if not pending:
            return set()
        chunks = [chunk for _, file_chunks in pending for chunk in file_chunks]
        with self.store("store"):
            existing = self._existing([c.id for c in chunks if c.id])
        # Shortest first: each batch then holds texts of similar length, so the model pads
        # little (in file order, batches of MS MARCO passages padded to 2.1x their tokens).
        missing = sorted(
            (c for c in chunks if c.id not in existing), key=lambda c: len(c.page_content)
        )
        kept = [c for c in chunks if c.id in existing]
        self.progress.chunks_to_embed(len(missing))
        # add -> update -> delete. Each embedded batch is written at once, so a killed run
        # loses at most one batch of embedding work; a file is complete only when all its
        # chunks carry its fingerprint and no stale chunk is left, so a run killed anywhere
        # in between leaves files the next run sees as incomplete and repairs.
        step = self.embeddings.batch_size
        for start in range(0, len(missing), step):
            batch = missing[start : start + step]
            with self.clock("embed"):
                vectors = self.embeddings.embed_documents([c.page_content for c in batch])
            with self.store("store"):
                self._upsert(batch, vectors)
            self.progress.chunks_embedded(len(batch))
        with self.store("store"):
            if kept:
                assert self.collection is not None  # kept chunks were found in it
                limit = self.client.get_max_batch_size()
                for start in range(0, len(kept), limit):
                    batch = kept[start : start + limit]
                    self.collection.update(
                        ids=[str(c.id) for c in batch],
                        metadatas=[_replacing(existing[str(c.id)], c.metadata) for c in batch],
                    )
            for source, file_chunks in pending:
                old = self.stored.get(source)
                if old is not None:
                    self._delete(old.ids - {c.id for c in file_chunks}, root_of(source))
                self.written_chunks[source] = len(file_chunks)
        self.report.chunks_added += len(missing)
        self.report.chunks_kept += len(kept)
        return {source for source, _ in pending}

    def _upsert(self, chunks: list[Document], vectors: list[list[float]]) -> None:
        """Write embedded chunks, in requests no larger than the store accepts."""
        if not chunks:
            return
        if self.collection is None:
            self.collection = create_collection(
                self.client, self.collection_name, self.embeddings.info, len(vectors[0])
            )
            self.index = open_keyword_index(self.settings, self.collection)
        check_dimension(self.collection, len(vectors[0]))
        self._touch({root_of(str(c.metadata["source"])) for c in chunks})
        limit = self.client.get_max_batch_size()
        for start in range(0, len(chunks), limit):
            batch = chunks[start : start + limit]
            self.collection.upsert(
                ids=[str(c.id) for c in batch],
                embeddings=vectors[start : start + limit],  # type: ignore[arg-type]
                documents=[c.page_content for c in batch],
                metadatas=[c.metadata for c in batch],
            )
            assert self.index is not None
            self.index.add(batch)

    def _existing(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The metadata of those of `ids` that the store holds."""
        if self.collection is None or not ids:
            return {}
        limit = self.client.get_max_batch_size()
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), limit):
            page = self.collection.get(ids=ids[start : start + limit], include=["metadatas"])
            metadatas = page["metadatas"] or [{}] * len(page["ids"])
            for chunk_id, metadata in zip(page["ids"], metadatas, strict=True):
                found[chunk_id] = dict(metadata or {})
        return found

    def _delete(self, ids: set[str], root: str) -> None:
        if not ids or self.collection is None:
            return
        self._touch({root})
        self.report.chunks_removed += _delete_ids(self.client, self.collection, sorted(ids))
        if self.index is not None:
            self.index.remove(ids)


def _replacing(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Metadata for `update` that replaces `old` with `new`: Chroma merges an update into the
    stored metadata, and only a None value removes a key."""
    return new | {key: None for key in old.keys() - new.keys()}
