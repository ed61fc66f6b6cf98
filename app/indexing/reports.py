"""What a sync reports, as it goes (progress) and at the end (what changed, per source)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


class SyncProgress(Protocol):
    """What a sync tells as it goes, in this order: stages (read store, keyword index,
    discover, parse, write, done), the files to parse and each one parsed (`reason` says why
    one failed, "" when it was read), chunks queued and embedded. `working` is a line saying
    what is under way (stage, ETA, the file parsed for long), refreshed about once a second."""

    def stage(self, name: str) -> None: ...
    def files_to_parse(self, count: int) -> None: ...
    def file_parsed(self, file: str, pages: int, ocr_pages: int, reason: str) -> None: ...
    def chunks_to_embed(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...
    def working(self, line: str) -> None: ...


class NoProgress:
    def stage(self, name: str) -> None: ...
    def files_to_parse(self, count: int) -> None: ...
    def file_parsed(self, file: str, pages: int, ocr_pages: int, reason: str) -> None: ...
    def chunks_to_embed(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...
    def working(self, line: str) -> None: ...


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
    failed_unchanged: set[str] = field(default_factory=set)  # failed before; not retried
    retry: set[str] = field(default_factory=set)  # failed through no fault of their own
    chunks_added: int = 0
    chunks_kept: int = 0  # chunks of changed files whose text did not change: not re-embedded
    chunks_removed: int = 0
    sources: list[SourceReport] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # one message per source kept unsynced
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    ocr_files: int = 0  # files with pages read by OCR this run
    ocr_pages: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing

    @property
    def found_changes(self) -> bool:
        """A file new, changed, deleted, or failing anew (not as it failed before)."""
        return bool(
            self.new or self.changed or self.deleted or set(self.failed) - self.failed_unchanged
        )

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
            "ocr": {"files": self.ocr_files, "pages": self.ocr_pages},
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
