"""The library: the folders and files a user added (its sources), and which Chroma collection
holds their chunks.

The record lives in Chroma itself, as the metadata of a small companion collection
(`<name>.library`, no records of its own), so ingest and chat on any machine that reaches the
store read the same one, and one metadata write changes it atomically. It points at the
physical collection that holds the chunks (`<name>.<n>`): `--rebuild` fills a new one and
switches the pointer only when it is complete. Its `generation` goes up whenever chunks change,
and each source remembers the generation of its last change, so a keyword index elsewhere
catches up on just the sources that changed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from app.config import Settings
from app.errors import ConfigError, LocalragError, ProviderError, StoreError
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings
from app.models.providers import probe_ollama
from app.store.chroma import check_model, collection_name, get_collection

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from langchain_chroma import Chroma

RECORD_SUFFIX = ".library"
RECORD_KEY = "localrag_library"  # the JSON record, in the companion collection's metadata
RECORD_FORMAT = 1
DEFAULT_PREFIX = "localrag-"  # default library names (one per model) start with it


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def normalize(path: Path | str) -> Path:
    """Absolute, `~` expanded, `..` folded; links are kept (a named link is what was added)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


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
        """`path` as a path inside this source ("" for the source itself), or None."""
        for own, other in ((self.location, path), (_real(self.location), _real(path))):
            if other == own:
                return ""
            if own in other.parents:
                return other.relative_to(own).as_posix()
        return None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


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

    def __init__(self, client: ClientAPI, name: str, holder: Collection, record: LibraryRecord):
        self.client = client
        self.name = name
        self.holder = holder
        self.record = record

    # --- Finding and saving --------------------------------------------------------------

    @classmethod
    def find(cls, client: ClientAPI, name: str) -> Library | None:
        holder = get_collection(client, name + RECORD_SUFFIX)
        if holder is None:
            return None
        text = (holder.metadata or {}).get(RECORD_KEY)
        if not isinstance(text, str):
            raise StoreError(
                f"Collection '{holder.name}' is not a localrag library record. "
                "Pick another COLLECTION_NAME."
            )
        return cls(client, name, holder, LibraryRecord.from_json(text))

    @classmethod
    def create(
        cls, client: ClientAPI, name: str, model: str, sources: list[LibrarySource] | None = None
    ) -> Library:
        record = LibraryRecord(model=model, active=physical_name(name, 1), updated=now())
        record.sources = list(sources or [])
        holder = client.create_collection(
            name + RECORD_SUFFIX,
            metadata={RECORD_KEY: record.to_json()},
            embedding_function=None,
        )
        return cls(client, name, holder, record)

    def save(self) -> None:
        """One metadata write: Chroma replaces a collection's metadata as a whole."""
        self.record.updated = now()
        self.holder.modify(metadata={RECORD_KEY: self.record.to_json()})

    def reload(self) -> None:
        fresh = Library.find(self.client, self.name)
        if fresh is None:
            raise StoreError(f"The library record '{self.name}{RECORD_SUFFIX}' disappeared.")
        self.holder, self.record = fresh.holder, fresh.record

    # --- Collections -----------------------------------------------------------------------

    def collection(self, name: str | None = None) -> Collection | None:
        """The physical collection (the active one by default); None before its first chunk."""
        collection = get_collection(self.client, name or self.record.active)
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
        return min(found, key=lambda pair: len(pair[0].location.parts))

    def nested_in(self, path: Path) -> list[LibrarySource]:
        """Sources strictly inside `path`: a source added there takes them over."""
        return [s for s in self.sources if _relative(path, s.location) not in (None, "")]

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
        base = os.fsencode(path.name or "root").decode("utf-8", "replace").replace("/", "_")
        taken = {s.label for s in self.sources} | set(self.record.removing)
        label, n = base, 1
        while label in taken:
            n += 1
            label = f"{base}-{n}"
        return label


def _relative(parent: Path, child: Path) -> str | None:
    if child == parent:
        return ""
    if parent in child.parents:
        return child.relative_to(parent).as_posix()
    return None


def physical_name(library_name: str, build: int) -> str:
    return f"{library_name}.{build}"


# --- Which library a run uses ---------------------------------------------------------------


def find_library(
    client: ClientAPI, settings: Settings, info: EmbeddingModelInfo, *, rebuild: bool = False
) -> Library | None:
    """This model's library, or None on a first run. Refuses (with the fix in the message) when
    the user's documents are in a library another model embedded: a run must never quietly
    start an empty library beside the user's. A `--rebuild` may re-embed any library."""
    name = collection_name(settings, info)
    library = Library.find(client, name)
    if library is not None:
        if library.record.model != info.key and not rebuild:
            raise model_mismatch(settings, library, info)
        return library
    if rebuild:
        return None
    legacy = get_collection(client, name)
    if legacy is not None:
        raise StoreError(
            f"Collection '{name}' was made by an earlier localrag, before the library of "
            "sources. Re-embed your folders into a library with `python -m app.ingest --rebuild "
            "PATH...`; the old collection is replaced once the new one is complete."
        )
    if not settings.collection_name:
        others = other_libraries(client, name)
        if others:
            raise model_mismatch(settings, others[0], info)
    return None


def library_to_show(
    client: ClientAPI, settings: Settings, info: EmbeddingModelInfo
) -> Library | None:
    """For --list and --remove, which need no model: this model's library, else the most
    recently changed library of another model."""
    name = collection_name(settings, info)
    library = Library.find(client, name)
    if library is None and not settings.collection_name:
        others = other_libraries(client, name)
        library = others[0] if others else None
    return library


def other_libraries(client: ClientAPI, name: str) -> list[Library]:
    """Default-named libraries of other models that hold sources, most recently changed first."""
    found = []
    for collection in client.list_collections():
        full = collection.name if hasattr(collection, "name") else str(collection)
        if not (full.startswith(DEFAULT_PREFIX) and full.endswith(RECORD_SUFFIX)):
            continue
        other = full.removesuffix(RECORD_SUFFIX)
        if other == name:
            continue
        library = Library.find(client, other)
        if library is not None and library.sources:
            found.append(library)
    return sorted(found, key=lambda lib: lib.record.updated, reverse=True)


def any_library(client: ClientAPI, settings: Settings, info: EmbeddingModelInfo) -> bool:
    """Whether the store holds anything of the user's: a library (of any model) or a
    collection from before libraries. Only when it holds nothing is a first run a first run."""
    name = collection_name(settings, info)
    if Library.find(client, name) is not None or get_collection(client, name) is not None:
        return True
    return not settings.collection_name and bool(other_libraries(client, name))


def model_mismatch(settings: Settings, library: Library, info: EmbeddingModelInfo) -> LocalragError:
    recorded = library.record.model
    provider, _, model = recorded.partition("/")
    size = (
        f"{len(library.sources)} sources, "
        f"{sum(s.chunks for s in library.sources)} chunks, in '{library.name}'"
    )
    rebuild = (
        f"re-embed it with {info.key}: `python -m app.ingest --rebuild` (the library embedded "
        f"with {recorded} stays as it is)"
    )
    if provider == "ollama":
        status = probe_ollama(settings.ollama_base_url, settings.ollama_probe_timeout)
        problem = None
        if not status.reachable:
            problem = f"Ollama is not answering at {settings.ollama_base_url}"
            fix = "start Ollama (`ollama serve`)"
        elif not status.has(model):
            problem = f"Ollama at {settings.ollama_base_url} does not have '{model}'"
            fix = f"`ollama pull {model}`"
        if problem is not None:
            return ProviderError(
                f"Your library ({size}) was embedded with {recorded}, but {problem}, so this "
                f"run would embed with {info.key} and not see it. To use your library, {fix}; "
                f"or {rebuild}."
            )
    keep = (
        f"EMBEDDING_PROVIDER=ollama and OLLAMA_EMBEDDING_MODEL={model}"
        if provider == "ollama"
        else f"EMBEDDING_PROVIDER={provider}"
    )
    return StoreError(
        f"Your library ({size}) holds vectors of the embedding model '{recorded}', but this run "
        f"embeds with '{info.key}'. Vectors of two models cannot be compared. To use your "
        f"library, set {keep}; or {rebuild}."
        + (
            " Or pick another COLLECTION_NAME for a separate library."
            if settings.collection_name
            else ""
        )
    )


def describe_missing(source: LibrarySource) -> str:
    return (
        f"Source {source.label} ({source.path}) is missing: its {source.chunks} chunks are kept. "
        f"Plug in or restore it and run the ingest again; or remove it with "
        f"`python -m app.ingest --remove {source.path}`."
    )


def check_paths_exist(paths: list[Path], library: Library | None) -> None:
    """A path that is neither on disk nor a source is a typo: refuse before writing anything."""
    known = {Path(s.path) for s in library.sources} if library else set()
    missing = [p for p in paths if not os.path.lexists(p) and p not in known]
    if missing:
        raise ConfigError("No such file or folder: " + ", ".join(str(p) for p in missing))


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


# --- What a run does to which sources ---------------------------------------------------------


@dataclass
class Target:
    source: LibrarySource
    within: list[str] | None = None  # paths inside the source to sync; None: all of it
    added: bool = False


@dataclass
class SyncPlan:
    targets: list[Target] = field(default_factory=list)
    absorbed: dict[str, list[str]] = field(default_factory=dict)  # outer label -> inner labels
    notes: list[str] = field(default_factory=list)


def plan_sync(library: Library, paths: list[Path], default: Path) -> SyncPlan:
    """Which sources to sync, adding the paths that are new as sources (in the record in
    memory; the caller saves it). The paths are normalized and exist, or are sources.

    Overlaps, so that no file is ever stored twice: a path inside a source is synced as part of
    that source; a new folder that holds sources takes them over (its sync stores their files
    under its own label, then they are removed). With no path, every source is synced, or
    `default` (DOCS_DIR) is added to a library without sources."""
    plan = SyncPlan()
    if not paths:
        if not library.sources:
            return plan_sync(library, [default], default)
        for source in library.sources:
            outer = library.enclosing(source.location)
            if outer is not None and outer[0] is not source:
                plan.absorbed.setdefault(outer[0].label, []).append(source.label)
            else:
                plan.targets.append(Target(source))
        return plan
    by_label: dict[str, Target] = {}
    for path in sorted(dict.fromkeys(paths), key=lambda p: len(p.parts)):
        hit = library.enclosing(path)
        if hit is None:
            inner = library.nested_in(path)
            source = library.add(path)
            by_label[source.label] = Target(source, added=True)
            plan.targets.append(by_label[source.label])
            if inner:
                plan.absorbed[source.label] = [s.label for s in inner]
                plan.notes.append(
                    f"{path} holds the sources {', '.join(s.label for s in inner)}: their files "
                    f"are stored again under {source.label}/ and those sources removed once "
                    f"{source.label} is complete (never two copies of a file)."
                )
            continue
        source, inside = hit
        target = by_label.get(source.label)
        if target is None:
            target = by_label[source.label] = Target(source, within=[])
            plan.targets.append(target)
        if not inside:
            target.within = None
        elif target.within is not None:
            target.within.append(inside)
            plan.notes.append(f"{path} is inside the source {source.label} ({source.path}).")
    for target in plan.targets:  # a source synced whole takes over the sources inside it
        if target.within is None and not target.added:
            taken = [s.label for s in library.nested_in(target.source.location)]
            if taken:
                plan.absorbed.setdefault(target.source.label, []).extend(taken)
    return plan


def plan_remove(library: Library, args: list[str]) -> list[LibrarySource]:
    """The sources named by path (or by label); a path inside a source cannot be removed alone."""
    chosen: list[LibrarySource] = []
    for arg in args:
        path = normalize(arg)
        source = next((s for s in library.sources if s.relative(path) == ""), None)
        if source is None and "/" not in arg:
            source = library.source(arg)
        if source is None:
            hit = library.enclosing(path)
            if hit is not None:
                raise ConfigError(
                    f"{path} is inside the source {hit[0].label} ({hit[0].path}); only whole "
                    "sources can be removed. Delete or move those files and run the ingest, or "
                    f"remove {hit[0].path}."
                )
            listed = ", ".join(f"{s.path} ({s.label})" for s in library.sources) or "none"
            raise ConfigError(f"{arg} is not a source of the library. Its sources: {listed}.")
        if source not in chosen:
            chosen.append(source)
    return chosen


def open_collection(
    client: ClientAPI, settings: Settings, info: EmbeddingModelInfo
) -> Collection | None:
    """The collection this model's library points at; None when there is none yet."""
    library = Library.find(client, collection_name(settings, info))
    if library is None:
        return None
    if library.record.model != info.key:
        raise model_mismatch(settings, library, info)
    return library.collection()


def as_langchain_store(
    client: ClientAPI, settings: Settings, embeddings: ModelEmbeddings
) -> Chroma:
    """The library's collection as a LangChain `Chroma` vector store (for your own chains)."""
    from langchain_chroma import Chroma

    collection = open_collection(client, settings, embeddings.info)
    if collection is None:
        raise ConfigError("The library holds no documents yet: `python -m app.ingest PATH`.")
    return Chroma(
        client=client,
        collection_name=collection.name,
        embedding_function=embeddings,
        create_collection_if_not_exists=False,
    )
