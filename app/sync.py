"""Keep a collection exactly equal to the chunks of the files under the given roots.

The collection is its own bookkeeping: every chunk carries its file's fingerprint and chunk
count, so there is no second record to drift from the store. A file is unchanged when the store
holds exactly its `chunk_count` chunks, all with its current fingerprint; anything else (new,
edited, half-written by a killed run) is parsed again, and only chunks whose ids are missing are
embedded. Each embedded batch is written at once (a killed run loses at most one batch of work),
and a file's writes go add -> update -> delete; whatever point a run is killed at, the files it
was writing are left incomplete by that rule, and the next run repairs them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.documents import Document

from app.config import Settings
from app.embeddings import ModelEmbeddings
from app.splitter import ChunkPolicy, split_documents
from app.vectorstore import (
    check_dimension,
    collection_name,
    connect,
    create_collection,
    describe_store,
    drop_collection,
    iter_metadatas,
    open_collection,
    store_errors,
    writer_lock,
)
from loaders.discovery import discover
from loaders.parsers import ParseLimits
from loaders.pool import Failed, PoolLimits, parse_in_workers

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

# Bump when parsing or splitting changes what a file turns into: every file is then re-chunked.
PIPELINE_VERSION = 3
FLUSH_CHUNKS = 512  # chunks gathered across files before they are embedded and written


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
class IngestReport:
    collection: str
    store: str
    embedding_model: str
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # source -> reason
    chunks_added: int = 0
    chunks_kept: int = 0  # chunks of changed files whose text did not change: not re-embedded
    chunks_removed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "store": self.store,
            "embedding_model": self.embedding_model,
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
    roots: Sequence[Path],
    embeddings: ModelEmbeddings,
    *,
    rebuild: bool = False,
    progress: SyncProgress | None = None,
) -> IngestReport:
    """Make the collection hold exactly the chunks of the readable files under `roots`."""
    with writer_lock(settings):
        return _Sync(settings, embeddings, progress or NoProgress()).run(roots, rebuild=rebuild)


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
        self.stored: dict[str, StoredFile] = {}
        self.report = IngestReport(
            collection=collection_name(settings, embeddings.info),
            store=describe_store(settings),
            embedding_model=embeddings.info.key,
        )

    def run(self, roots: Sequence[Path], *, rebuild: bool) -> IngestReport:
        started = time.perf_counter()
        report = self.report
        with self.clock("discover"):
            found = discover(roots, include_hidden=self.settings.include_hidden)
            report.failed.update({s.source: s.reason for s in found.skipped})
            fingerprints: dict[str, str] = {}
            for file in found.files:
                try:
                    fingerprints[file.source] = file_fingerprint(file.path, self.policy)
                except OSError as exc:
                    report.failed[file.source] = f"cannot be read ({exc.strerror or exc})"
        with self.store("read store"):
            if rebuild:
                # Dropped without opening it: a collection another model made is exactly what
                # the model check tells the user to rebuild.
                drop_collection(self.client, self.settings, self.embeddings.info)
                self.collection = None
            else:
                self.collection = open_collection(self.client, self.settings, self.embeddings.info)
            self.stored = self._read_stored()

        to_parse = []
        for file in found.files:
            fingerprint = fingerprints.get(file.source)
            if fingerprint is None:
                continue
            stored = self.stored.get(file.source)
            if stored is None:
                report.new.append(file.source)
            elif stored.complete(fingerprint):
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
                self._delete(self.stored[source].ids)
        report.seconds = self.clock.seconds | {"total": time.perf_counter() - started}
        return report

    @contextmanager
    def store(self, stage: str) -> Iterator[None]:
        """A stage that talks to the store: timed, and a lost server is a StoreError."""
        with self.clock(stage), store_errors(self.settings):
            yield

    def _read_stored(self) -> dict[str, StoredFile]:
        stored: dict[str, StoredFile] = {}
        if self.collection is None:
            return stored
        for chunk_id, metadata in iter_metadatas(self.collection):
            entry = stored.setdefault(str(metadata.get("source", "")), StoredFile())
            entry.ids.add(chunk_id)
            entry.fingerprints.add(str(metadata.get("file_hash", "")))
            entry.chunk_count = int(metadata.get("chunk_count", -1))
        return stored

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
                    self._delete(old.ids - {c.id for c in file_chunks})
        self.report.chunks_added += len(missing)
        self.report.chunks_kept += len(kept)
        return {source for source, _ in pending}

    def _upsert(self, chunks: list[Document], vectors: list[list[float]]) -> None:
        """Write embedded chunks, in requests no larger than the store accepts."""
        if not chunks:
            return
        if self.collection is None:
            self.collection = create_collection(
                self.client, self.settings, self.embeddings.info, len(vectors[0])
            )
        check_dimension(self.collection, len(vectors[0]))
        limit = self.client.get_max_batch_size()
        for start in range(0, len(chunks), limit):
            batch = chunks[start : start + limit]
            self.collection.upsert(
                ids=[str(c.id) for c in batch],
                embeddings=vectors[start : start + limit],  # type: ignore[arg-type]
                documents=[c.page_content for c in batch],
                metadatas=[c.metadata for c in batch],
            )

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

    def _delete(self, ids: set[str]) -> None:
        if not ids or self.collection is None:
            return
        ordered = sorted(ids)
        limit = self.client.get_max_batch_size()
        for start in range(0, len(ordered), limit):
            self.collection.delete(ids=ordered[start : start + limit])
        self.report.chunks_removed += len(ids)


def _replacing(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Metadata for `update` that replaces `old` with `new`: Chroma merges an update into the
    stored metadata, and only a None value removes a key."""
    return new | {key: None for key in old.keys() - new.keys()}
