"""sync_collection keeps the collection equal to the chunks of the files under the roots.

In-process and fast: a deterministic fake embedder that counts what it embeds, and parsing done
serially in this process by a spy standing in for the worker pool (so a test can see which files
were parsed). The core sync tests run against both stores behind the seam: Chroma and the
in-memory store of tests/fakes.py (VECTOR_STORE=tests.fakes), so the seam is proven by the same
tests. The helpers at the top (`read_store`, `assert_same_store`, `check_bookkeeping`,
`assert_store_matches_folder`) read through the seam and are shared with the subprocess and
server tests.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

import app.indexing.sync
from app.config import Settings, load_settings
from app.errors import ConfigError, StoreError
from app.indexing.reports import IngestReport
from app.indexing.sync import chunk_policy, file_fingerprint, sync_collection
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings
from app.store import open_store
from app.store.base import ChunkCollection, ChunkStore
from app.store.catalog import DIRTY as CATALOG_DIRTY
from app.store.catalog import open_catalog
from app.store.chroma import ChromaStore
from app.store.library import Library, library_name
from loaders.discovery import SourceFile, discover
from loaders.parsers import UnreadableFile, parse_file
from loaders.pool import Failed, Parsed, PoolLimits
from tests.fakes import DIM, FAKE_INFO, SimulatedCrash, fake_embeddings

pytestmark = pytest.mark.unit

# The stores behind the seam: the core sync tests run against each.
STORES = [pytest.param("chroma", id="chroma"), pytest.param("tests.fakes", id="memory")]

# --- Shared helpers ---------------------------------------------------------------------------


@dataclass
class StoreSnapshot:
    """Everything a collection holds, read back through the store seam."""

    ids: list[str] = field(default_factory=list)  # in the order the store listed them
    documents: dict[str, str] = field(default_factory=dict)
    metadatas: dict[str, dict[str, Any]] = field(default_factory=dict)
    embeddings: dict[str, list[float]] = field(default_factory=dict)

    @property
    def sources(self) -> set[str]:
        return {str(m.get("source")) for m in self.metadatas.values()}

    def ids_of(self, source: str) -> set[str]:
        return {i for i, m in self.metadatas.items() if m.get("source") == source}


def fresh_store(settings: Settings) -> ChunkStore:
    """The store the settings name, seeing what other processes wrote: Chroma caches one
    System per directory per process, and a cached one keeps serving its old vector index."""
    if settings.vector_store == "chroma" and not settings.chroma_host:
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    return open_store(settings)


def library_of(settings: Settings, model: str = FAKE_INFO.key) -> Library | None:
    """The library of that embedding model in the store the settings name (None: none yet)."""
    return Library.find(fresh_store(settings), library_name(settings, model))


def collection_of(settings: Settings, model: str = FAKE_INFO.key) -> ChunkCollection | None:
    """The collection the model's library points at; None before its first chunk."""
    library = library_of(settings, model)
    return library.collection() if library is not None else None


def read_store(collection: ChunkCollection | None) -> StoreSnapshot:
    """Read every chunk (ids, texts, metadatas, vectors) through the seam."""
    snapshot = StoreSnapshot()
    if collection is None:
        return snapshot
    snapshot.ids = [chunk_id for chunk_id, _ in collection.rows()]
    for chunk in collection.get(snapshot.ids, text=True, vectors=True):
        snapshot.documents[chunk.id] = chunk.text
        snapshot.metadatas[chunk.id] = dict(chunk.metadata)
        snapshot.embeddings[chunk.id] = [float(x) for x in chunk.vector or []]
    assert set(snapshot.documents) == set(snapshot.ids), "rows() and get() disagree"
    return snapshot


def assert_same_store(actual: StoreSnapshot, expected: StoreSnapshot, what: str = "") -> None:
    """Same ids (no duplicates, nothing missing, nothing extra), documents, metadatas, vectors."""
    where = f" ({what})" if what else ""
    duplicates = [i for i, n in Counter(actual.ids).items() if n > 1]
    assert not duplicates, f"duplicate ids{where}: {duplicates[:5]}"
    extra = set(actual.ids) - set(expected.ids)
    missing = set(expected.ids) - set(actual.ids)
    assert not extra, f"{len(extra)} orphan ids{where}, e.g. " + str(
        [actual.metadatas[i] for i in sorted(extra)[:3]]
    )
    assert not missing, f"{len(missing)} ids missing{where}, e.g. " + str(
        [expected.metadatas[i] for i in sorted(missing)[:3]]
    )
    bad_docs = [i for i in expected.ids if actual.documents[i] != expected.documents[i]]
    assert not bad_docs, f"documents differ{where}: {bad_docs[:5]}"
    bad_meta = [
        (actual.metadatas[i], expected.metadatas[i])
        for i in expected.ids
        if actual.metadatas[i] != expected.metadatas[i]
    ]
    assert not bad_meta, f"metadatas differ{where} (actual, expected): {bad_meta[:3]}"
    bad_vectors = [
        i
        for i in expected.ids
        if len(actual.embeddings[i]) != len(expected.embeddings[i])
        or any(
            abs(a - b) > 1e-5
            for a, b in zip(actual.embeddings[i], expected.embeddings[i], strict=True)
        )
    ]
    assert not bad_vectors, f"embeddings differ{where}: {bad_vectors[:5]}"


def check_bookkeeping(
    snapshot: StoreSnapshot,
    folder: Path,
    settings: Settings,
    embeddings: ModelEmbeddings,
    *,
    failed: AbstractSet[str] = frozenset(),
) -> None:
    """The metadata alone says the store is complete and current for every file in `folder`."""
    assert len(snapshot.ids) == len(set(snapshot.ids)), "duplicate ids"
    policy = chunk_policy(settings, embeddings)
    files = {f.source: f for f in discover(folder, folder.name).files}
    expected_sources = set(files) - set(failed)
    assert snapshot.sources == expected_sources, (
        f"sources in the store {sorted(snapshot.sources ^ expected_sources)} differ from the "
        "files in the folder"
    )
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for metadata in snapshot.metadatas.values():
        by_source[str(metadata["source"])].append(metadata)
    for source, metadatas in by_source.items():
        counts = {m["chunk_count"] for m in metadatas}
        assert counts == {len(metadatas)}, f"{source}: chunk_count {counts}, {len(metadatas)} held"
        indexes = sorted(m["chunk_index"] for m in metadatas)
        assert indexes == list(range(len(metadatas))), f"{source}: chunk_index {indexes}"
        hashes = {m["file_hash"] for m in metadatas}
        current = file_fingerprint(files[source].path, policy)
        assert hashes == {current}, f"{source}: file_hash {hashes}, file is {current}"


def assert_store_matches_folder(
    collection: ChunkCollection | None,
    folder: Path,
    *,
    settings: Settings | None = None,
    make_embeddings: Callable[[], ModelEmbeddings] | None = None,
    failed: AbstractSet[str] = frozenset(),
) -> StoreSnapshot:
    """The store agrees with its own bookkeeping and equals a clean ingest of `folder` into a
    fresh local CHROMA_DIR (the same kind of store): same ids, metadatas, documents and
    vectors. Returns the snapshot."""
    settings = settings or load_settings()
    make_embeddings = make_embeddings or (lambda: fake_embeddings(settings)[0])
    actual = read_store(collection)
    check_bookkeeping(actual, folder, settings, make_embeddings(), failed=failed)
    with tempfile.TemporaryDirectory(prefix="reference-chroma-") as reference_dir:
        reference_settings = settings.model_copy(
            update={"chroma_dir": Path(reference_dir), "chroma_host": ""}  # always local
        )
        embeddings = make_embeddings()
        sync_collection(reference_settings, [folder], embeddings)
        expected = read_store(collection_of(reference_settings, embeddings.info.key))
    assert_same_store(actual, expected, "store vs a clean ingest of the folder")
    return actual


# --- Spies ------------------------------------------------------------------------------------


class ParseSpy:
    """Stands in for `parse_in_workers`: records the files asked for, parses them here."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
        self.calls.append([f.source for f in files])
        return self._parse(files, limits)

    @staticmethod
    def _parse(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
        for file in files:
            try:
                yield Parsed(file, parse_file(file.path, file.source, limits.parse))
            except UnreadableFile as exc:
                yield Failed(file, str(exc))

    @property
    def parsed(self) -> list[str]:
        return [source for call in self.calls for source in call]

    def reset(self) -> None:
        self.calls.clear()


class WriteRecorder:
    """Wraps every Chroma call that changes the store (each one atomic in Chroma); can raise
    SimulatedCrash at write number N. Chroma only: it checks Chroma's own calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from chromadb.api.models.Collection import Collection

        self.writes: list[tuple[str, int]] = []  # (operation, number of ids)
        self.gets: list[int] = []
        self.crash_at: int | None = None
        for name in ("upsert", "update", "delete", "add", "modify"):
            monkeypatch.setattr(Collection, name, self._wrap(name, getattr(Collection, name)))
        for name in ("create_collection", "drop_collection"):
            monkeypatch.setattr(ChromaStore, name, self._wrap(name, getattr(ChromaStore, name)))
        real_get = Collection.get

        def get(collection: Collection, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("ids") is not None:
                self.gets.append(len(kwargs["ids"]))
            return real_get(collection, *args, **kwargs)

        monkeypatch.setattr(Collection, "get", get)

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.crash_at == len(self.writes) + 1:
                raise SimulatedCrash(f"before write {self.crash_at} ({name})")
            self.writes.append((name, len(kwargs.get("ids") or [])))
            return real(*args, **kwargs)

        return wrapped

    def count(self, name: str) -> int:
        return sum(1 for op, _ in self.writes if op == name)


class BatchLimit:
    """Makes every Chroma store opened report `value` as its server's max batch size."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, value: int) -> None:
        self.value = value
        limit = property(lambda store: self.value, lambda store, value: None)
        monkeypatch.setattr(ChromaStore, "max_batch", limit, raising=False)


# --- Fixtures ---------------------------------------------------------------------------------


def paragraph(topic: str, n: int) -> str:
    return (
        f"Paragraph {n} about {topic}. The harbour master of Brindlemoor logged tide number "
        f"{n * 7 + len(topic)} for {topic}, and the ferry kept its timetable that day."
    )


def write_doc(path: Path, topic: str, paragraphs: int = 5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(paragraph(topic, n) for n in range(paragraphs)) + "\n")


def sync_settings(vector_store: str = "chroma") -> Settings:
    # ~150-character paragraphs and 200-character chunks: one paragraph per chunk.
    return load_settings(
        chunk_size=200, chunk_overlap=20, embedding_batch_size=8, vector_store=vector_store
    )


@pytest.fixture
def settings() -> Settings:
    """Chroma, for the tests that check Chroma's own calls."""
    return sync_settings()


@pytest.fixture(params=STORES)
def any_store(request: pytest.FixtureRequest) -> Settings:
    """Each store behind the seam in turn: Chroma, then the in-memory store."""
    return sync_settings(request.param)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    for name in ("alpha", "beta", "gamma", "delta"):
        write_doc(root / f"{name}.txt", name)
    write_doc(root / "sub" / "epsilon.txt", "epsilon", 7)
    write_doc(root / "sub" / "deeper" / "zeta.txt", "zeta", 3)
    return root


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> ParseSpy:
    parse_spy = ParseSpy()
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", parse_spy)
    return parse_spy


def all_sources(folder: Path) -> list[str]:
    return [f.source for f in discover(folder, folder.name).files]


def ingest(settings: Settings, folder: Path, **kwargs: Any) -> tuple[IngestReport, int]:
    """One run with a fresh counting embedder; returns the report and the texts embedded."""
    embeddings, counter = fake_embeddings(settings)
    report = sync_collection(settings, [folder], embeddings, **kwargs)
    return report, counter.texts


def rebuild(settings: Settings) -> tuple[IngestReport, int]:
    """`--rebuild`: every source of the library, re-embedded (it takes no paths)."""
    embeddings, counter = fake_embeddings(settings)
    report = sync_collection(settings, [], embeddings, rebuild=True)
    return report, counter.texts


# --- Sync semantics, on every store -----------------------------------------------------------


def test_first_run_adds_every_chunk(any_store: Settings, folder: Path, spy: ParseSpy) -> None:
    settings = any_store
    report, embedded = ingest(settings, folder)

    assert report.ok
    assert sorted(report.new) == all_sources(folder)
    assert report.changed == report.unchanged == report.deleted == []
    snapshot = assert_store_matches_folder(collection_of(settings), folder, settings=settings)
    assert report.chunks_added == embedded == len(snapshot.ids) > len(all_sources(folder))
    assert report.chunks_removed == report.chunks_kept == 0
    metadata = next(iter(snapshot.metadatas.values()))
    assert {"source", "file_hash", "chunk_index", "chunk_count", "type"} <= set(metadata)


def test_unchanged_folder_is_neither_parsed_nor_embedded(
    any_store: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = any_store
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    ingest(settings, folder)
    before = read_store(collection_of(settings))
    # Touching a file changes its mtime, not its content: still unchanged (a content hash).
    (folder / "alpha.txt").touch()

    # The real parse_in_workers this time, with a pool and parser that must not be used.
    import loaders.pool

    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", loaders.pool.parse_in_workers)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an unchanged folder started the parsing pool")

    monkeypatch.setattr(loaders.pool, "ProcessPool", forbidden)
    monkeypatch.setattr(loaders.pool, "parse_file", forbidden)
    report, embedded = ingest(settings, folder)

    assert report.ok
    assert sorted(report.unchanged) == all_sources(folder)
    assert report.new == report.changed == report.deleted == []
    assert embedded == 0
    assert report.chunks_added == report.chunks_kept == report.chunks_removed == 0
    assert_same_store(read_store(collection_of(settings)), before, "after an unchanged run")


def test_edited_file_is_rechunked_alone_and_its_stale_chunks_removed(
    any_store: Settings, folder: Path, spy: ParseSpy
) -> None:
    settings = any_store
    ingest(settings, folder)
    before = read_store(collection_of(settings))
    old_ids = before.ids_of("corpus/sub/epsilon.txt")
    text = (folder / "sub" / "epsilon.txt").read_text()
    edited = text.replace(paragraph("epsilon", 3), paragraph("the lighthouse", 3))
    edited += "\n" + paragraph("epsilon", 99) + "\n"
    (folder / "sub" / "epsilon.txt").write_text(edited)
    spy.reset()

    report, embedded = ingest(settings, folder)

    assert spy.parsed == ["corpus/sub/epsilon.txt"]
    assert report.changed == ["corpus/sub/epsilon.txt"]
    assert sorted(report.unchanged) == sorted(set(all_sources(folder)) - {"corpus/sub/epsilon.txt"})
    after = read_store(collection_of(settings))
    new_ids = after.ids_of("corpus/sub/epsilon.txt")
    # Paragraph 3 replaced (one chunk gone, one new) and one appended: 2 embedded, 6 kept.
    assert report.chunks_added == embedded == len(new_ids - old_ids) == 2
    assert report.chunks_kept == len(new_ids & old_ids) == 6
    assert report.chunks_removed == len(old_ids - new_ids) == 1
    assert not (old_ids - new_ids) & set(after.ids)
    # Kept chunks keep their vectors and get the new fingerprint, index and count.
    for chunk_id in new_ids & old_ids:
        assert after.embeddings[chunk_id] == before.embeddings[chunk_id]
        assert after.metadatas[chunk_id]["chunk_count"] == 8
        assert after.metadatas[chunk_id]["file_hash"] != before.metadatas[chunk_id]["file_hash"]
    # Other files' records are untouched.
    for chunk_id in set(before.ids) - old_ids:
        assert after.metadatas[chunk_id] == before.metadatas[chunk_id]
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)


def test_deleted_and_added_files(any_store: Settings, folder: Path, spy: ParseSpy) -> None:
    settings = any_store
    ingest(settings, folder)
    gone = read_store(collection_of(settings)).ids_of("corpus/beta.txt")
    (folder / "beta.txt").unlink()
    write_doc(folder / "sub" / "eta.txt", "eta", 4)
    spy.reset()

    report, embedded = ingest(settings, folder)

    assert report.deleted == ["corpus/beta.txt"]
    assert report.new == ["corpus/sub/eta.txt"]
    assert spy.parsed == ["corpus/sub/eta.txt"]
    assert embedded == report.chunks_added == 4
    assert report.chunks_removed == len(gone) == 5
    snapshot = assert_store_matches_folder(collection_of(settings), folder, settings=settings)
    assert not gone & set(snapshot.ids)
    assert "corpus/beta.txt" not in snapshot.sources


def test_rebuild_re_embeds_everything(any_store: Settings, folder: Path, spy: ParseSpy) -> None:
    settings = any_store
    first, _ = ingest(settings, folder)
    old = library_of(settings)
    assert old is not None
    spy.reset()

    report, embedded = rebuild(settings)

    assert sorted(report.new) == sorted(spy.parsed) == all_sources(folder)
    assert embedded == report.chunks_added == first.chunks_added
    new = library_of(settings)
    assert new is not None
    assert new.record.active != old.record.active  # a new collection, switched to once complete
    assert fresh_store(settings).collection(old.record.active) is None  # the old one deleted
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)


def test_rebuild_with_paths_is_refused_and_changes_nothing(
    any_store: Settings, folder: Path, spy: ParseSpy, tmp_path: Path
) -> None:
    """--rebuild re-embeds every source into a new collection: with paths, the other sources
    would be lost, so it takes none."""
    settings = any_store
    other = tmp_path / "other"
    write_doc(other / "omega.txt", "omega", 2)
    ingest(settings, folder)
    ingest(settings, other)
    before = read_store(collection_of(settings))
    library = library_of(settings)
    assert library is not None
    embeddings, counter = fake_embeddings(settings)

    with pytest.raises(ConfigError, match="takes no paths"):
        sync_collection(settings, [folder], embeddings, rebuild=True)

    assert counter.texts == 0
    after = library_of(settings)
    assert after is not None
    assert after.record == library.record  # same sources, same collection, no build started
    assert_same_store(read_store(collection_of(settings)), before, "after a refused --rebuild")


def test_a_file_that_stops_parsing_loses_its_chunks(
    any_store: Settings, folder: Path, spy: ParseSpy
) -> None:
    settings = any_store
    ingest(settings, folder)
    (folder / "gamma.txt").write_bytes(b"")  # parses no more: "empty file"

    report, _ = ingest(settings, folder)

    assert report.failed == {"corpus/gamma.txt": "empty file"}
    assert not report.ok
    assert_store_matches_folder(
        collection_of(settings), folder, settings=settings, failed={"corpus/gamma.txt"}
    )


def test_bookkeeping_repairs_damaged_records(
    any_store: Settings, folder: Path, spy: ParseSpy
) -> None:
    """Whatever a half-finished run leaves (missing chunks, old fingerprints, strays), the next
    run parses just those files and ends equal to a clean ingest."""
    settings = any_store
    ingest(settings, folder)
    collection = collection_of(settings)
    assert collection is not None
    snapshot = read_store(collection)
    collection.delete(sorted(snapshot.ids_of("corpus/alpha.txt"))[:2])  # chunks missing
    beta = sorted(snapshot.ids_of("corpus/beta.txt"))[0]
    # An old fingerprint, and a key the current pipeline no longer writes (the chunk is kept:
    # its metadata must end up as a clean ingest writes it, not merged with the old).
    old_metadata = snapshot.metadatas[beta] | {"file_hash": "old", "obsolete": "x"}
    collection.replace_metadata([beta], [old_metadata])
    stray = snapshot.metadatas[sorted(snapshot.ids_of("corpus/gamma.txt"))[0]] | {"chunk_index": 9}
    orphan = {"source": "corpus/gone.txt", "root": "corpus"}
    collection.upsert(
        [
            Document("stray", metadata=stray, id="stray"),
            Document("x", metadata=orphan, id="orphan"),
        ],
        [[0.1] * DIM, [0.1] * DIM],
    )
    # A half-finished run marks the sources it writes before its first write: the catalog no
    # longer vouches for them, so the next run checks their files and the store.
    library = library_of(settings)
    assert library is not None
    catalog = open_catalog(settings, open_store(settings).key, library.record.active)
    catalog.mark("corpus", CATALOG_DIRTY)
    catalog.close()
    spy.reset()

    report, embedded = ingest(settings, folder)

    assert (
        sorted(report.changed)
        == sorted(spy.parsed)
        == ["corpus/alpha.txt", "corpus/beta.txt", "corpus/gamma.txt"]
    )
    assert report.deleted == ["corpus/gone.txt"]
    assert embedded == 2
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)


# --- A file that changes while it is read -----------------------------------------------------


def edited_while_parsed(
    monkeypatch: pytest.MonkeyPatch, target: Path, versions: list[str]
) -> ParseSpy:
    """The spy, with an editor that saves `target` again (the next of `versions`) each time
    the file has just been parsed: what the parser read is then no longer what is on disk."""
    spy = ParseSpy()
    pending = list(versions)

    def parse(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
        for result in spy(files, limits):
            if result.file.path == target and pending:
                target.write_text(pending.pop(0))
            yield result

    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", parse)
    return spy


def test_a_file_edited_while_it_is_parsed_is_parsed_again(
    any_store: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fingerprint is of what was parsed: a file saved while the sync read it is read
    again, and stored with the text and fingerprint of its final bytes (never the old text
    under the new fingerprint, nor the new fingerprint's file left with the old text)."""
    settings = any_store
    alpha = folder / "alpha.txt"
    final = "\n\n".join(paragraph("the final alpha", n) for n in range(3)) + "\n"
    spy = edited_while_parsed(monkeypatch, alpha, [final])

    report, _ = ingest(settings, folder)

    assert spy.parsed.count("corpus/alpha.txt") == 2
    assert sorted(report.new) == all_sources(folder)  # reported once
    assert report.ok
    stored = read_store(collection_of(settings))
    alpha_ids = stored.ids_of("corpus/alpha.txt")
    texts = [stored.documents[i] for i in alpha_ids]
    assert len(texts) == 3
    assert all("the final alpha" in text for text in texts), texts
    embeddings, _ = fake_embeddings(settings)
    final_hash = file_fingerprint(alpha, chunk_policy(settings, embeddings))
    assert {stored.metadatas[i]["file_hash"] for i in alpha_ids} == {final_hash}
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)

    # And the next run finds it unchanged: nothing is read again.
    spy.reset()
    again, embedded = ingest(settings, folder)
    assert (spy.parsed, embedded) == ([], 0)
    assert sorted(again.unchanged) == all_sources(folder)


def test_a_file_that_never_holds_still_keeps_what_the_library_had(
    settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    ingest(settings, folder)
    before = read_store(collection_of(settings))
    alpha = folder / "alpha.txt"
    versions = [f"Version {n} of alpha, saved while it was read.\n" for n in range(1, 10)]
    alpha.write_text("Version 0 of alpha.\n")
    spy = edited_while_parsed(monkeypatch, alpha, versions)

    report, _ = ingest(settings, folder)

    assert spy.parsed.count("corpus/alpha.txt") == app.indexing.sync.PARSE_ROUNDS
    assert any("corpus/alpha.txt kept changing" in note for note in report.notes)
    assert_same_store(read_store(collection_of(settings)), before, "the old text is kept")
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
    settled, _ = ingest(settings, folder)  # once it holds still, the next sync reads it
    assert settled.changed == ["corpus/alpha.txt"]
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)


# --- Crash safety, deterministically: stop the run before each write in turn ------------------


def as_corpus(version: Path, parent: Path) -> Path:
    """`parent/corpus` holding a copy of `version` (and nothing else): one source whose
    content changes, named alike in every store so chunk ids compare."""
    folder = parent / "corpus"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(version, folder)
    return folder


def make_versions(tmp_path: Path) -> tuple[Path, Path]:
    """Two versions of one corpus: B edits, deletes, adds and keeps files of A."""
    a, b = tmp_path / "version-a", tmp_path / "version-b"
    for root in (a, b):
        for name in ("alpha", "beta", "gamma"):
            write_doc(root / f"{name}.txt", name, 6)
        write_doc(root / "sub" / "delta.txt", "delta", 4)
    write_doc(a / "old.txt", "old", 5)
    write_doc(a / "sub" / "old2.txt", "old2", 3)
    write_doc(b / "new.txt", "new", 5)
    for name in ("alpha", "gamma"):  # edits that keep some chunks and replace others
        text = (b / f"{name}.txt").read_text()
        text = text.replace(paragraph(name, 2), f"Rewritten paragraph two of {name}.")
        (b / f"{name}.txt").write_text(text + paragraph(name, 50) + "\n")
    text = (b / "sub" / "delta.txt").read_text()  # an edit that only removes chunks
    (b / "sub" / "delta.txt").write_text(text.replace(paragraph("delta", 1), ""))
    return a, b


@pytest.mark.parametrize("rebuilding", [False, True], ids=["sync", "rebuild"])
def test_a_run_stopped_before_any_write_is_repaired_by_the_next(
    settings: Settings,
    tmp_path: Path,
    spy: ParseSpy,
    monkeypatch: pytest.MonkeyPatch,
    rebuilding: bool,
) -> None:
    """Version A is in the store; a run for version B stops before its 1st, 2nd, ... write
    (writes are the only steps that change the store, so this visits every state a killed run
    can leave, given that each Chroma call is atomic); the next run must end equal to a clean
    ingest of B. Small batches make many writes."""
    limit = BatchLimit(monkeypatch, 1000)
    version_a, version_b = make_versions(tmp_path)
    recorder = WriteRecorder(monkeypatch)
    reference_settings = settings.model_copy(update={"chroma_dir": tmp_path / "reference"})
    ingest(reference_settings, as_corpus(version_b, tmp_path / "reference-docs"))
    expected = read_store(collection_of(reference_settings))

    crash_at, stopped_runs, states = 1, 0, set()
    while True:
        store = settings.model_copy(update={"chroma_dir": tmp_path / f"store-{crash_at}"})
        folder = as_corpus(version_a, tmp_path / f"docs-{crash_at}")
        ingest(store.model_copy(update={"embedding_batch_size": 64}), folder)
        as_corpus(version_b, folder.parent)  # the folder now holds version B
        recorder.writes.clear()
        recorder.crash_at, limit.value = crash_at, 3
        try:
            if rebuilding:
                rebuild(store)
            else:
                ingest(store, folder)
        except SimulatedCrash:
            stopped_runs += 1
        else:
            break  # fewer writes than crash_at: the run completed
        finally:
            recorder.crash_at, limit.value = None, 1000
        left = read_store(collection_of(store))
        states.add(frozenset((i, str(m)) for i, m in left.metadatas.items()))
        ingest(store.model_copy(update={"embedding_batch_size": 64}), folder)
        assert_same_store(
            read_store(collection_of(store)), expected, f"stopped before write {crash_at}"
        )
        crash_at += 1

    kinds = {op for op, _ in recorder.writes}
    # Every write position of the completed run was stopped at (how a batch's vectors split
    # into writes depends on when the model answers: runs may differ by a write).
    assert stopped_runs >= len(recorder.writes) >= 10
    # modify: the library record (new sources or the rebuild's collection; then the counts,
    # the generation, the switch).
    if rebuilding:
        assert kinds == {"modify", "create_collection", "upsert", "drop_collection"}
    else:
        assert kinds == {"modify", "upsert", "update", "delete"}
    assert len(states) >= stopped_runs - 1  # the stops really left different states


def test_a_run_failing_in_the_embedder_keeps_what_it_wrote(
    any_store: Settings, tmp_path: Path, spy: ParseSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An embedding failure mid-run (a model server that goes away) keeps the batches already
    written, and the next run embeds only what is missing. (Written: a flush's batches go to
    the store together, up to WRITE_CHUNKS, here one batch, so that some are written.)"""
    settings = any_store
    monkeypatch.setattr(app.indexing.sync, "WRITE_CHUNKS", settings.embedding_batch_size)
    _, folder = make_versions(tmp_path)
    embeddings, counter = fake_embeddings(settings)
    counter.fail_on_call = 3
    with pytest.raises(SimulatedCrash):
        sync_collection(settings, [folder], embeddings)
    written = set(read_store(collection_of(settings)).ids)
    assert len(written) == 2 * settings.embedding_batch_size

    report, embedded = ingest(settings, folder)

    final = assert_store_matches_folder(collection_of(settings), folder, settings=settings)
    assert written < set(final.ids)
    assert embedded == report.chunks_added == len(final.ids) - len(written)


# --- Model guard and batch limits -------------------------------------------------------------


def test_another_model_never_writes_into_a_collection(
    any_store: Settings, folder: Path, spy: ParseSpy
) -> None:
    settings = any_store
    shared = settings.model_copy(update={"collection_name": "shared"})
    ingest(shared, folder)
    before = read_store(collection_of(shared))
    (folder / "alpha.txt").write_text("Edited, so there would be something to write.\n")
    other, counter = fake_embeddings(shared, EmbeddingModelInfo("fake", "other-64"))

    with pytest.raises(StoreError, match=r"fake/fake-64.*fake/other-64"):
        sync_collection(shared, [folder], other)

    assert counter.texts == counter.queries == 0
    assert_same_store(read_store(collection_of(shared)), before, "after the refused run")
    # --rebuild is what the message suggests: it replaces the collection with the new model's.
    report = sync_collection(shared, [], other, rebuild=True)
    assert sorted(report.new) == all_sources(folder)
    collection = collection_of(shared, other.info.key)
    assert collection is not None
    assert collection.model == "fake/other-64"
    # Default names are per model, so two models never even meet in one collection.
    assert library_name(settings, FAKE_INFO.key) != library_name(settings, other.info.key)


def test_a_model_whose_dimension_changed_is_refused(
    any_store: Settings, folder: Path, spy: ParseSpy
) -> None:
    settings = any_store
    ingest(settings, folder)
    (folder / "alpha.txt").write_text("Edited, so there is something to embed.\n")
    embeddings, _ = fake_embeddings(settings, size=32)
    with pytest.raises(StoreError, match="64-dimensional"):
        sync_collection(settings, [folder], embeddings)


def test_writes_are_split_under_the_stores_max_batch_size(
    settings: Settings, folder: Path, spy: ParseSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 5
    BatchLimit(monkeypatch, limit)
    monkeypatch.setattr("app.store.chroma.READ_PAGE", 7)  # reading back pages, too
    recorder = WriteRecorder(monkeypatch)

    first, _ = ingest(settings, folder)

    chunks = first.chunks_added
    batch = settings.embedding_batch_size
    assert 3 * batch < chunks < app.indexing.sync.FLUSH_CHUNKS  # one flush, several batches
    # Embedded batches are gathered into writes of up to WRITE_CHUNKS (the last ones written
    # as they come), each cut into pieces of <= limit.
    upserts = [n for op, n in recorder.writes if op == "upsert"]
    assert len(upserts) >= math.ceil(chunks / limit)
    assert all(0 < n <= limit for n in upserts), upserts
    assert sum(upserts) == chunks

    # Edit every file (most chunks kept: updates) and delete one (deletes): all under the limit.
    for path in sorted(folder.rglob("*.txt")):
        path.write_text(path.read_text().replace("Paragraph 0 ", "Paragraph zero "))
    (folder / "alpha.txt").unlink()
    recorder.writes.clear()
    report, _ = ingest(settings, folder)

    assert report.chunks_kept > limit
    assert report.chunks_removed > limit
    updates = [n for op, n in recorder.writes if op == "update"]
    assert sum(updates) == report.chunks_kept  # in pieces of <= limit, per flush
    assert {"upsert", "update", "delete"} <= {op for op, _ in recorder.writes}
    chunk_writes = [(op, n) for op, n in recorder.writes if op != "modify"]
    assert all(0 < n <= limit for _, n in chunk_writes), chunk_writes  # no create
    assert all(0 < n <= limit for n in recorder.gets), recorder.gets
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)


def test_a_file_whose_parser_was_stopped_is_parsed_at_the_next_sync(
    settings: Settings, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop sent to the whole process group (`systemctl stop`, `kill -TERM -PGID`) kills the
    parser busy with a file while the main process finishes its sync: that failure is not the
    file's, so the next sync parses it again instead of "unchanged since; edit it to retry"."""
    spy = ParseSpy()
    stopped = "corpus/beta.txt"

    def parse(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
        for result in spy(files, limits):
            if result.file.source == stopped:
                yield Failed(result.file, "the parser process was stopped", retry=True)
            else:
                yield result

    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", parse)
    first, _ = ingest(settings, folder)
    assert stopped in first.failed
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", spy)
    spy.reset()
    second, _ = ingest(settings, folder)
    assert spy.parsed == [stopped]
    assert second.new == [stopped], second
    assert second.ok, second
    assert_store_matches_folder(collection_of(settings), folder, settings=settings)
