"""The library: the folders and files a user added (its sources), and which collection holds
their chunks.

The record is kept in the store itself (`ChunkStore.write_record`), so ingest and chat on any
machine that reaches the store read the same one, and one write changes it atomically. It points
at the physical collection that holds the chunks (`<name>.<n>`): `--rebuild` fills a new one and
switches the pointer only when it is complete. Its `generation` goes up whenever chunks change,
and each source remembers the generation of its last change, so a keyword index elsewhere
catches up on just the sources that changed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError, StoreError
from app.store.base import ChunkCollection, ChunkStore
from app.store.catalog import STATUSES, FileCatalog, FileRow, Status, catalog_path, read_catalog
from app.store.lock import check_lease

RECORD_FORMAT = 1
DEFAULT_PREFIX = "localrag-"  # default library names (one per model) start with it


@dataclass(frozen=True)
class ModelAdvice:
    """What to tell a user whose library another embedding model made: the settings that select
    that model, and why it cannot run now with the fix (when it cannot). The model registry
    gives it (`app.models.registry.advice`); the store knows nothing of providers."""

    settings: str
    problem: str | None = None
    fix: str = ""


Advice = Callable[[str], ModelAdvice]


def plain_advice(model: str) -> ModelAdvice:
    return ModelAdvice(f"EMBEDDING_PROVIDER={model.partition('/')[0]}")


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def normalize(path: Path | str) -> Path:
    """Absolute, `~` expanded, `..` folded; links are kept (a named link is what was added)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def real(path: Path) -> Path:
    """The path with every link resolved; never raises (a link loop stays as far as it got)."""
    return Path(os.path.realpath(path))


def library_name(settings: Settings, model_key: str) -> str:
    """One library per embedding model by default, so vectors of two models never meet."""
    if settings.collection_name:
        return settings.collection_name
    provider, _, name = model_key.partition("/")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{DEFAULT_PREFIX}{provider}-{slug}"[:60].rstrip("-")


@dataclass
class LibrarySource:
    """A folder or file the user added. Its files are stored as `label/path inside it`."""

    label: str
    path: str  # absolute
    kind: Literal["folder", "file"]
    added: str
    last_synced: str | None = None
    generation: int = 0  # the library generation at which its chunks last changed
    files: int = 0
    chunks: int = 0

    @property
    def location(self) -> Path:
        return Path(self.path)

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def problem(self) -> str | None:
        """Why it cannot be synced now ("missing", "unreadable (...)"), or None."""
        if not self.exists():
            return "missing"
        if self.kind == "folder":
            try:
                with os.scandir(self.path):
                    pass
            except OSError as exc:
                return f"unreadable ({exc.strerror or exc})"
        return None

    def relative(self, path: Path) -> str | None:
        """`path` as a path inside this source ("" for the source itself), or None. Links are
        resolved on both sides too: a link into a source leads to that source's files."""
        for own, other in ((self.location, path), (real(self.location), real(path))):
            if other == own:
                return ""
            if own in other.parents:
                return other.relative_to(own).as_posix()
        return None


@dataclass
class LibraryRecord:
    model: str  # the embedding model of the active collection's vectors
    active: str  # the physical collection chat reads
    builds: int = 1  # physical collections made so far; the next is <name>.<builds + 1>
    building: str | None = None  # a --rebuild's collection, until it is complete
    generation: int = 0
    sources: list[LibrarySource] = field(default_factory=list)
    removing: list[str] = field(default_factory=list)  # labels whose chunks are being deleted
    retired: list[str] = field(default_factory=list)  # replaced collections not yet deleted
    updated: str = ""

    def to_json(self) -> str:
        return json.dumps({"format": RECORD_FORMAT, **asdict(self)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> LibraryRecord:
        data: dict[str, Any] = json.loads(text)
        if data.pop("format", None) != RECORD_FORMAT:
            raise StoreError(
                "The library record was written by another version of localrag; update it."
            )
        sources = [LibrarySource(**s) for s in data.pop("sources", [])]
        return cls(sources=sources, **data)


class Library:
    """One library's record, read from and written to the store."""

    def __init__(self, store: ChunkStore, name: str, record: LibraryRecord):
        self.store = store
        self.name = name
        self.record = record

    # --- Finding and saving --------------------------------------------------------------

    @classmethod
    def find(cls, store: ChunkStore, name: str) -> Library | None:
        text = store.read_record(name)
        if text is None:
            return None
        return cls(store, name, LibraryRecord.from_json(text))

    @classmethod
    def create(
        cls, store: ChunkStore, name: str, model: str, sources: list[LibrarySource] | None = None
    ) -> Library:
        record = LibraryRecord(model=model, active=physical_name(name, 1), updated=now())
        record.sources = list(sources or [])
        library = cls(store, name, record)
        library.save()
        return library

    def save(self) -> None:
        check_lease(self.store)
        self.record.updated = now()
        self.store.write_record(self.name, self.record.to_json())

    def reload(self) -> None:
        text = self.store.read_record(self.name)
        if text is None:
            raise StoreError(f"The library record '{self.name}' disappeared.")
        self.record = LibraryRecord.from_json(text)

    # --- Collections -----------------------------------------------------------------------

    def collection(self, name: str | None = None) -> ChunkCollection | None:
        """The physical collection (the active one by default); None before its first chunk."""
        collection = self.store.collection(name or self.record.active)
        if collection is not None and name is None:
            check_model(collection, self.record.model)
        return collection

    def next_physical(self) -> str:
        self.record.builds += 1
        return physical_name(self.name, self.record.builds)

    # --- Sources ---------------------------------------------------------------------------

    @property
    def sources(self) -> list[LibrarySource]:
        return self.record.sources

    def source(self, label: str) -> LibrarySource | None:
        return next((s for s in self.sources if s.label == label), None)

    def enclosing(self, path: Path) -> tuple[LibrarySource, str] | None:
        """The outermost source that holds `path` (or is it), with the path inside it."""
        found = [(s, rel) for s in self.sources if (rel := s.relative(path)) is not None]
        if not found:
            return None
        return min(found, key=lambda pair: len(real(pair[0].location).parts))

    def nested_in(self, path: Path) -> list[LibrarySource]:
        """Sources strictly inside `path`, through links too: a source added there takes them
        over, so no file is stored twice."""
        inside = []
        for source in self.sources:
            for outer, inner in ((path, source.location), (real(path), real(source.location))):
                if outer != inner and outer in inner.parents:
                    inside.append(source)
                    break
        return inside

    def add(self, path: Path) -> LibrarySource:
        source = LibrarySource(
            label=self._new_label(path),
            path=str(path),
            kind="folder" if path.is_dir() else "file",
            added=now(),
        )
        self.sources.append(source)
        return source

    def drop(self, label: str) -> None:
        """Forget a source; its chunks are deleted next (listed in `removing` until then)."""
        self.record.sources = [s for s in self.sources if s.label != label]
        if label not in self.record.removing:
            self.record.removing.append(label)

    def _new_label(self, path: Path) -> str:
        """The folder's or file's own name; `-2`, `-3`... when a source already has it. Fixed
        when added: later additions and removals never rename a source's files."""
        base = (path.name or "root").replace("/", "_")
        taken = {s.label for s in self.sources} | set(self.record.removing)
        label, n = base, 1
        while label in taken:
            n += 1
            label = f"{base}-{n}"
        return label


def physical_name(library: str, build: int) -> str:
    return f"{library}.{build}"


def check_model(collection: ChunkCollection, model: str) -> None:
    if collection.model != model:
        raise StoreError(
            f"Collection '{collection.name}' holds vectors of the embedding model "
            f"'{collection.model or 'unknown'}', but this run embeds with '{model}'. Vectors of "
            "two models cannot be compared. Leave COLLECTION_NAME empty to get one collection "
            "per model, pick another COLLECTION_NAME, or rebuild this one with "
            "`python -m app.ingest --rebuild`."
        )


def check_dimension(collection: ChunkCollection, dimension: int) -> None:
    if collection.dimension is not None and collection.dimension != dimension:
        raise StoreError(
            f"Collection '{collection.name}' holds {collection.dimension}-dimensional vectors, "
            f"but the embedding model now returns {dimension}. Rebuild it with "
            "`python -m app.ingest --rebuild`, or pick another COLLECTION_NAME."
        )


# --- Which library a run uses ---------------------------------------------------------------


def find_library(
    store: ChunkStore,
    settings: Settings,
    model: str,
    *,
    rebuild: bool = False,
    adding: bool = False,
    advice: Advice = plain_advice,
) -> Library | None:
    """This model's library, or None on a first run. Refuses (with the fix in the message) when
    the user's documents are in a library another model embedded: a run must never quietly
    start an empty library beside the user's. A `--rebuild` may re-embed any library. A run
    `adding` paths starts the library in place of a collection from before libraries."""
    name = library_name(settings, model)
    library = Library.find(store, name)
    if library is not None:
        if library.record.model != model and not rebuild:
            raise model_mismatch(settings, library, model, advice)
        return library
    if rebuild:
        return None
    if store.collection(name) is not None and not adding:
        raise StoreError(
            f"Collection '{name}' was made by an earlier localrag, before the library of "
            "sources. Re-embed your folders into a library with `python -m app.ingest "
            "PATH...`; the old collection is replaced once the new one is complete."
        )
    if not settings.collection_name:
        others = other_libraries(store, name)
        if others:
            raise model_mismatch(settings, others[0], model, advice)
    return None


def library_to_show(store: ChunkStore, settings: Settings, model: str) -> Library | None:
    """For --list and --remove, which need no model: this model's library, else the most
    recently changed library of another model."""
    name = library_name(settings, model)
    library = Library.find(store, name)
    if library is None and not settings.collection_name:
        others = other_libraries(store, name)
        library = others[0] if others else None
    return library


def other_libraries(store: ChunkStore, name: str) -> list[Library]:
    """Default-named libraries of other models that hold sources, most recently changed first."""
    found = []
    for other in store.record_names():
        if other == name or not other.startswith(DEFAULT_PREFIX):
            continue
        library = Library.find(store, other)
        if library is not None and library.sources:
            found.append(library)
    return sorted(found, key=lambda lib: lib.record.updated, reverse=True)


def any_library(store: ChunkStore, settings: Settings, model: str) -> bool:
    """Whether the store holds anything of the user's: a library (of any model) or a
    collection from before libraries. Only when it holds nothing is a first run a first run."""
    name = library_name(settings, model)
    if Library.find(store, name) is not None or store.collection(name) is not None:
        return True
    return not settings.collection_name and bool(other_libraries(store, name))


def model_mismatch(
    settings: Settings, library: Library, model: str, advice: Advice
) -> LocalragError:
    recorded = library.record.model
    size = (
        f"{len(library.sources)} sources, "
        f"{sum(s.chunks for s in library.sources)} chunks, in '{library.name}'"
    )
    rebuild = (
        f"re-embed it with {model}: `python -m app.ingest --rebuild` (the library embedded "
        f"with {recorded} stays as it is)"
    )
    told = advice(recorded)
    if told.problem is not None:
        problem = re.sub(r"^The\b", "the", told.problem)  # mid-sentence; names keep capitals
        return ProviderError(
            f"Your library ({size}) was embedded with {recorded}, but {problem}, so this "
            f"run would embed with {model} and not see it. To use your library, {told.fix}; "
            f"or {rebuild}."
        )
    keep = told.settings
    return StoreError(
        f"Your library ({size}) holds vectors of the embedding model '{recorded}', but this run "
        f"embeds with '{model}'. Vectors of two models cannot be compared. To use your "
        f"library, set {keep}; or {rebuild}."
        + (
            " Or pick another COLLECTION_NAME for a separate library."
            if settings.collection_name
            else ""
        )
    )


def describe_library(library: Library) -> dict[str, Any]:
    """What `--list` shows: the library and each source, checked on disk now."""
    record = library.record
    return {
        "library": library.name,
        "embedding_model": record.model,
        "collection": record.active,
        "generation": record.generation,
        "sources": [
            {
                "label": s.label,
                "path": s.path,
                "kind": s.kind,
                "files": s.files,
                "chunks": s.chunks,
                "added": s.added,
                "last_synced": s.last_synced,
                "status": s.problem() or "ok",
            }
            for s in record.sources
        ],
    }


def file_selection(library: Library, args: list[str]) -> list[str]:
    """What `--files ARG...` means, as catalog names (a file's, or a prefix of a folder's):
    a path on disk or with a slash means that path, inside a source; a bare name not on disk
    is a source's label; a name as `--files` prints it (LABEL/PATH) is taken as it is."""
    selected: list[str] = []
    for arg in args:
        path = normalize(arg)
        hit = library.enclosing(path) if "/" in arg or os.path.lexists(path) else None
        if hit is not None:
            source, inside = hit
            selected.append(f"{source.label}/{inside}" if inside else source.label)
        elif library.source(arg.split("/", 1)[0]) is not None and not os.path.lexists(path):
            selected.append(arg.rstrip("/"))
        else:
            listed = ", ".join(f"{s.path} ({s.label})" for s in library.sources) or "none"
            raise ConfigError(
                f"{arg} is not a file or folder of the library's sources, nor a source's "
                f"label. Its sources: {listed}."
            )
    return selected


def describe_files(
    settings: Settings,
    library: Library,
    selected: list[str] | None = None,
    statuses: list[Status] | None = None,
) -> dict[str, Any]:
    """What `--files` and `GET /api/files` show: every file the file catalog holds for the
    library's collection, with its status, reason, pages, OCR'd pages, chunks and characters;
    only the `selected` names (files, or folders and sources by prefix) and `statuses` asked for.
    `counts` counts the selection by status; `not_catalogued` names the sources with stored files
    that no sync under the catalog has recorded yet (the next ingest records them)."""
    labels = {s.label for s in library.sources}
    rows = read_catalog(settings, library.store.key, library.record.active)
    rows = [r for r in rows if r.root in labels and _selected(r, selected)]
    catalogued = {r.root for r in rows}
    counts = {status: sum(1 for r in rows if r.status == status) for status in STATUSES}
    shown = [r for r in rows if not statuses or r.status in statuses]
    return {
        "library": library.name,
        "collection": library.record.active,
        "counts": counts,
        "files": [_file_json(r) for r in shown],
        "not_catalogued": [
            s.label
            for s in library.sources
            if s.files
            and s.label not in catalogued
            and (selected is None or any(n.split("/", 1)[0] == s.label for n in selected))
        ],
    }


def summarize_library(
    settings: Settings, library: Library, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    """What `GET /api/library` and the web page's Library section show: each source with its
    files per status and OCR'd files and pages, the totals, and a page of the skipped and failed
    files with their reasons. Counted in SQL from the catalog's index: a 100,000-file library
    reads no row but the page's."""
    described = describe_library(library)
    labels = [s["label"] for s in described["sources"]]
    path = catalog_path(settings, library.store.key, library.record.active)
    counts: dict[str, dict[str, int]] = {}
    ocr: dict[str, tuple[int, int]] = {}
    problems: list[FileRow] = []
    if path.is_file():
        catalog = FileCatalog(path)
        try:
            counts, ocr = catalog.counts(), catalog.ocr_totals()
            problems = catalog.problems(labels, limit, offset)
        finally:
            catalog.close()
    totals = dict.fromkeys(STATUSES, 0)
    for source in described["sources"]:
        label = source["label"]
        by_status = {status: counts.get(label, {}).get(status, 0) for status in STATUSES}
        files, pages = ocr.get(label, (0, 0))
        source["statuses"] = by_status
        source["ocr"] = {"files": files, "pages": pages}
        source["catalogued"] = label in counts
        for status, count in by_status.items():
            totals[status] += count
    ocr_files = sum(ocr.get(label, (0, 0))[0] for label in labels)
    ocr_pages = sum(ocr.get(label, (0, 0))[1] for label in labels)
    return described | {
        "counts": totals,
        "ocr": {"files": ocr_files, "pages": ocr_pages},
        "problems": {
            "total": totals["skipped"] + totals["failed"],
            "offset": offset,
            "limit": limit,
            "files": [
                {"file": r.name, "source": r.root, "status": r.status, "reason": r.reason}
                for r in problems
            ],
        },
    }


def _selected(row: FileRow, selected: list[str] | None) -> bool:
    if selected is None:
        return True
    return any(row.name == n or row.name.startswith(n + "/") for n in selected)


def _file_json(row: FileRow) -> dict[str, Any]:
    return {
        "file": row.name,
        "source": row.root,
        "status": row.status,
        "reason": row.reason,
        "pages": row.pages,
        "ocr_pages": row.ocr_pages,
        "chunks": row.chunks,
        "chars": row.chars,
        "bytes": row.size,
        "synced": row.synced,
    }
