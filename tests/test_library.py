"""The library of sources: adding a folder never touches the others, removing one, a missing
source kept, overlapping sources (through links too), --rebuild's switch, --watch, the model
guard, the keyword index kept in step, private files.

CLI tests run `python -m app.ingest` / `python -m app.chat` as a user would, against the Ollama
test server (fast, deterministic embeddings and a canned chat answer) and a real Chroma
directory; they read the store back from this process through the store seam. In-process tests
(marked unit) use the fake embedder of tests/fakes.py where a subprocess would add nothing but
seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import app.indexing.sync
from app.config import Settings, load_settings
from app.errors import ConfigError, StoreError
from app.indexing.maintenance import remove_sources
from app.indexing.reports import IngestReport
from app.indexing.sync import sync_collection
from app.paths import PROJECT_ROOT
from app.store import open_store
from app.store.base import EVERYTHING, Selection
from app.store.chroma import ChromaCollection
from app.store.keyword_index import index_path
from app.store.library import Library, library_name
from tests.fakes import FAKE_INFO, fake_embeddings
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding, closed_port
from tests.test_crash_safety import (
    chroma_client,
    generated_text,
    kill_group,
    server_embeddings,
)
from tests.test_sync import (
    ParseSpy,
    StoreSnapshot,
    assert_same_store,
    fresh_store,
    library_of,
    read_store,
    write_doc,
)

# Most tests here run the commands; the in-process ones are marked unit as well.
pytestmark = pytest.mark.integration

ANSWER = "The harbour master is Ewan Tallisker [1]."


# --- Helpers --------------------------------------------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OllamaTestServer]:
    """The test server embeds (bag of words, 384-d) and chats, for subprocesses and here."""
    with OllamaTestServer(embedding_dim=384, embedder=bag_of_words_embedding, reply=ANSWER) as srv:
        monkeypatch.setenv("EMBEDDING_PROVIDER", "ollama")
        monkeypatch.setenv("CHAT_PROVIDER", "ollama")
        monkeypatch.setenv("OLLAMA_BASE_URL", srv.base_url)
        monkeypatch.setenv("EMBEDDING_BATCH_SIZE", "8")
        monkeypatch.setenv("OLLAMA_PROBE_TIMEOUT", "10")
        monkeypatch.setenv("INGEST_WORKERS", "1")
        yield srv


def command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run(
    module: str, *args: str, timeout: float = 300, cwd: Path = PROJECT_ROOT, **env: str
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command(module, *args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ingest(*args: str, expect: int = 0) -> dict[str, Any]:
    done = run("app.ingest", *args, "--json")
    assert done.returncode == expect, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def start(module: str, *args: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """In its own process group, so a kill takes its parse workers too."""
    with log.open("wb") as handle:
        return subprocess.Popen(
            command(module, *args),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )


def server_library(settings: Settings) -> Library:
    """The library of the test server's embedding model, as the commands left it."""
    library = library_of(settings, server_embeddings(settings).info.key)
    assert library is not None
    return library


def snapshot(settings: Settings) -> StoreSnapshot:
    return read_store(server_library(settings).collection())


def by_root(snap: StoreSnapshot, root: str) -> StoreSnapshot:
    """The records of one source."""
    part = StoreSnapshot()
    for chunk_id in snap.ids:
        if snap.metadatas[chunk_id]["root"] == root:
            part.ids.append(chunk_id)
            part.documents[chunk_id] = snap.documents[chunk_id]
            part.metadatas[chunk_id] = snap.metadatas[chunk_id]
            part.embeddings[chunk_id] = snap.embeddings[chunk_id]
    return part


def keyword_rows(settings: Settings, library: Library) -> list[str]:
    """Every chunk id in the keyword index of the library's collection (duplicates kept)."""
    path = index_path(settings, library.store.key, library.record.active)
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT chunk_id FROM entries")]


def assert_index_in_step(settings: Settings) -> None:
    library = server_library(settings)
    rows = keyword_rows(settings, library)
    stored = library.collection()
    assert stored is not None
    assert len(rows) == len(set(rows)), "duplicate keyword rows"
    assert set(rows) == {i for i, _ in stored.rows()}, "keyword index differs from vectors"


def reference(tmp_path: Path, roots: list[Path], server: OllamaTestServer) -> StoreSnapshot:
    """A clean ingest of the roots, added in this order, into a fresh store (in this process,
    parsing serially)."""
    settings = load_settings(chroma_dir=tmp_path / f"reference-{time.monotonic_ns()}")
    delay, server.delay = server.delay, 0.0
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(app.indexing.sync, "parse_in_workers", ParseSpy())
            embeddings = server_embeddings(settings)
            for root in roots:
                assert sync_collection(settings, [root], embeddings).ok
        return snapshot(settings)
    finally:
        server.delay = delay


def notes(folder: Path, count: int, seed: int, paragraphs: int = 2) -> Path:
    rng = random.Random(seed)
    for i in range(count):
        path = folder / ("sub" if i % 3 == 0 else "") / f"{folder.name}-{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated_text(rng, f"{folder.name} {i}", paragraphs))
    return folder


def stored_texts(settings: Settings) -> dict[str, str]:
    """source -> a chunk's text, as another process reads the store; {} while a watcher writes
    (Chroma is not process-safe: the caller polls again)."""
    try:
        snap = snapshot(settings)
    except Exception:
        return {}
    return {str(m["source"]): snap.documents[i] for i, m in snap.metadatas.items()}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# --- Sources from the command line ----------------------------------------------------------


def test_two_roots_then_one_file_then_list_and_remove(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    settings = load_settings()
    first, second = notes(tmp_path / "notes", 6, 1), notes(tmp_path / "papers", 4, 2)
    (tmp_path / "extra").mkdir()
    quokka = tmp_path / "extra" / "quokka.txt"
    quokka.write_text("Quokkas live on Rottnest Island and smile for photographs.\n")

    one = ingest(str(first))
    assert [(s["label"], s["status"]) for s in one["sources"]] == [("notes", "added")]
    assert one["chunks"]["added"] > 0
    before = snapshot(settings)

    two = ingest(str(second))
    # Only the new folder is read and embedded; the first one's records are untouched.
    assert [(s["label"], s["status"]) for s in two["sources"]] == [("papers", "added")]
    assert two["files"] == {"new": 4, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    assert two["chunks"]["removed"] == 0
    after = snapshot(settings)
    assert_same_store(by_root(after, "notes"), before, "the first source after adding a second")
    assert len(by_root(after, "papers").ids) == two["chunks"]["added"]

    three = ingest(str(quokka))
    assert [(s["label"], s["status"]) for s in three["sources"]] == [("quokka.txt", "added")]
    assert three["chunks"] == {"added": 1, "kept": 0, "removed": 0}

    everything = ingest()  # no path: every source, nothing to do
    assert everything["files"]["unchanged"] == 11
    assert everything["chunks"] == {"added": 0, "kept": 0, "removed": 0}
    assert_same_store(snapshot(settings), reference(tmp_path, [first, second, quokka], server))
    assert_index_in_step(settings)

    listing = json.loads(run("app.ingest", "--list", "--json").stdout)
    rows = {s["label"]: s for s in listing["sources"]}
    assert list(rows) == ["notes", "papers", "quokka.txt"]
    assert rows["papers"]["path"] == str(second)
    assert (rows["papers"]["files"], rows["papers"]["status"]) == (4, "ok")
    assert rows["papers"]["chunks"] == two["chunks"]["added"]
    assert rows["quokka.txt"]["kind"] == "file"
    assert all(s["last_synced"] for s in listing["sources"])

    removed = run("app.ingest", "--remove", str(second), "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["chunks_removed"] == two["chunks"]["added"]
    left = snapshot(settings)
    assert {m["root"] for m in left.metadatas.values()} == {"notes", "quokka.txt"}
    assert_same_store(by_root(left, "notes"), before, "the first source after a removal")
    assert_index_in_step(settings)
    listing = json.loads(run("app.ingest", "--list", "--json").stdout)
    assert [s["label"] for s in listing["sources"]] == ["notes", "quokka.txt"]
    assert second.is_dir()  # the folder itself is never touched

    # Paths that are neither on disk nor sources are refused before anything is written.
    typo = run("app.ingest", str(tmp_path / "nope"))
    assert typo.returncode == 2
    assert "No such file or folder" in typo.stderr
    unknown = run("app.ingest", "--remove", str(tmp_path / "extra"))
    assert unknown.returncode == 2
    assert "is not a source of the library" in unknown.stderr
    assert_same_store(snapshot(settings), left, "after refused commands")


def test_a_missing_source_is_kept_exits_3_and_is_found_again(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    settings = load_settings()
    first, second = notes(tmp_path / "notes", 4, 3), notes(tmp_path / "drive" / "papers", 3, 4)
    ingest(str(first))
    ingest(str(second))
    before = snapshot(settings)
    second.rename(tmp_path / "unplugged")

    gone = run("app.ingest", "--json")
    assert gone.returncode == 3, gone.stderr
    report = json.loads(gone.stdout)
    assert len(report["missing"]) == 1
    assert "papers" in report["missing"][0]
    assert str(second) in report["missing"][0]
    assert "kept" in report["missing"][0]
    assert {(s["label"], s["status"]) for s in report["sources"]} == {
        ("notes", "synced"),
        ("papers", "missing"),
    }
    assert report["chunks"]["removed"] == 0
    assert_same_store(snapshot(settings), before, "a missing source keeps its chunks")
    status = {
        s["label"]: s["status"]
        for s in json.loads(run("app.ingest", "--list", "--json").stdout)["sources"]
    }
    assert status == {"notes": "ok", "papers": "missing"}

    # A folder that is there but empty (a mount point without its drive) is kept too.
    second.mkdir(parents=True)
    empty = run("app.ingest", str(second), "--json")
    assert empty.returncode == 3
    assert "none of its 3 files" in json.loads(empty.stdout)["missing"][0]
    assert_same_store(snapshot(settings), before, "an emptied source keeps its chunks")
    # Even with a file of its own there (a placeholder some mount points hold, issue 16).
    (second / "NOT_MOUNTED").write_text("The archive drive is not mounted.\n")
    placeholder = run("app.ingest", "--json")
    assert placeholder.returncode == 3, placeholder.stderr
    kept = json.loads(placeholder.stdout)
    assert ("papers", "empty") in {(s["label"], s["status"]) for s in kept["sources"]}
    assert "none of its 3 files" in kept["missing"][0]
    assert kept["failed"] == []  # the placeholder is not reported as a skipped file
    assert kept["chunks"]["removed"] == 0
    assert_same_store(snapshot(settings), before, "a placeholder in the mount point")
    (second / "NOT_MOUNTED").unlink()
    second.rmdir()

    (tmp_path / "unplugged").rename(second)
    back = ingest()
    assert back["files"]["unchanged"] == 7
    assert back["chunks"] == {"added": 0, "kept": 0, "removed": 0}
    assert_same_store(snapshot(settings), before, "found again: nothing re-embedded")


def test_rebuild_with_paths_is_refused_and_changes_nothing(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """--rebuild re-embeds every source into a new collection, so with paths the other sources
    would be lost: it takes none (exit 2), and nothing is changed or embedded."""
    settings = load_settings()
    first, second = notes(tmp_path / "notes", 3, 5), notes(tmp_path / "papers", 2, 6)
    ingest(str(first))
    ingest(str(second))
    before, record = snapshot(settings), server_library(settings).record
    embedded = len(server.requests_to("/api/embed"))

    refused = run("app.ingest", "--rebuild", str(first))

    assert refused.returncode == 2, refused.stderr
    assert "--rebuild" in refused.stderr
    assert "takes no paths" in " ".join(refused.stderr.split())
    assert len(server.requests_to("/api/embed")) == embedded
    after = server_library(settings).record
    assert (after.active, after.builds, after.building) == (record.active, record.builds, None)
    assert [s.label for s in after.sources] == ["notes", "papers"]
    assert_same_store(snapshot(settings), before, "after a refused --rebuild PATH")


def test_remove_a_name_that_is_a_folder_here_means_that_folder_not_a_label(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """`--remove sub0` typed in a folder that holds a `sub0` folder means that folder (a
    path), never the source another folder added under the label sub0; a bare name that is not
    on disk still means a label (as --list shows them)."""
    settings = load_settings()
    labelled = notes(tmp_path / "drive" / "sub0", 2, 7)
    other = notes(tmp_path / "papers", 2, 8)
    ingest(str(labelled))
    ingest(str(other))
    before = snapshot(settings)
    here = tmp_path / "here"
    (here / "sub0").mkdir(parents=True)

    refused = run("app.ingest", "--remove", "sub0", cwd=here)

    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"sub0 here is the path {here / 'sub0'}" in message
    assert f"give its path: {labelled}" in message
    assert [s.label for s in server_library(settings).sources] == ["sub0", "papers"]
    assert_same_store(snapshot(settings), before, "after --remove of a path that is no source")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    removed = run("app.ingest", "--remove", "sub0", "--json", cwd=elsewhere)
    assert removed.returncode == 0, removed.stderr
    assert [s["label"] for s in json.loads(removed.stdout)["removed"]] == ["sub0"]
    assert [s.label for s in server_library(settings).sources] == ["papers"]
    assert_same_store(snapshot(settings), by_root(before, "papers"), "the label removed")


def test_a_store_inside_a_source_is_never_indexed_nor_reported(
    tmp_path: Path, server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHROMA_DIR inside a folder the user adds (docs/.../store): the store's own files (its
    database, keyword index, lock) are neither chunks nor "skipped" files, run after run."""
    folder = notes(tmp_path / "notes", 3, 9)
    monkeypatch.setenv("CHROMA_DIR", str(folder / "store"))
    settings = load_settings()

    first = ingest(str(folder))
    again = ingest()

    assert (settings.chroma_dir / "chroma.sqlite3").exists()
    for report in (first, again):
        assert report["failed"] == [], report["failed"]
    assert again["files"] == {"new": 0, "changed": 0, "unchanged": 3, "deleted": 0, "failed": 0}
    assert snapshot(settings).sources == {
        f"notes/{p.relative_to(folder).as_posix()}" for p in folder.rglob("notes-*.txt")
    }


# --- In-process: identity, overlaps, model guard ---------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return load_settings(chunk_size=200, chunk_overlap=20, embedding_batch_size=8)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> ParseSpy:
    parse_spy = ParseSpy()
    monkeypatch.setattr(app.indexing.sync, "parse_in_workers", parse_spy)
    return parse_spy


def fake_sync(settings: Settings, *paths: Path, **kwargs: Any) -> tuple[IngestReport, int]:
    embeddings, counter = fake_embeddings(settings)
    report = sync_collection(settings, list(paths), embeddings, **kwargs)
    return report, counter.texts


def fake_library(settings: Settings) -> Library:
    library = library_of(settings, FAKE_INFO.key)
    assert library is not None
    return library


def fake_store(settings: Settings) -> StoreSnapshot:
    return read_store(fake_library(settings).collection())


def corpus(root: Path, names: tuple[str, ...] = ("alpha", "beta")) -> Path:
    for name in names:
        write_doc(root / f"{name}.txt", name, 3)
    write_doc(root / "sub" / "gamma.txt", "gamma", 3)
    return root


@pytest.mark.unit
def test_a_files_identity_does_not_depend_on_the_other_sources(
    settings: Settings, tmp_path: Path, spy: ParseSpy
) -> None:
    alone = settings.model_copy(update={"chroma_dir": tmp_path / "alone"})
    fake_sync(alone, corpus(tmp_path / "a" / "notes"))
    expected = fake_store(alone)

    fake_sync(settings, corpus(tmp_path / "b" / "papers"))
    fake_sync(settings, tmp_path / "a" / "notes")
    # A second folder with the same name gets its own label; nothing else is renamed.
    report, _ = fake_sync(settings, corpus(tmp_path / "c" / "notes", ("delta",)))
    assert [s.label for s in report.sources] == ["notes-2"]
    assert report.new == ["notes-2/delta.txt", "notes-2/sub/gamma.txt"]
    remove_sources(settings, FAKE_INFO.key, [str(tmp_path / "b" / "papers")])
    assert_same_store(by_root(fake_store(settings), "notes"), expected, "same ids, same vectors")
    assert {s.label for s in fake_library(settings).sources} == {"notes", "notes-2"}


@pytest.mark.unit
def test_a_folder_inside_a_source_is_synced_as_part_of_it(
    settings: Settings, tmp_path: Path, spy: ParseSpy
) -> None:
    root = corpus(tmp_path / "notes")
    fake_sync(settings, root)
    write_doc(root / "sub" / "new.txt", "new", 2)
    spy.reset()

    report, embedded = fake_sync(settings, root / "sub")

    assert [s.label for s in fake_library(settings).sources] == ["notes"]
    assert [(s.label, s.status) for s in report.sources] == [("notes", "synced")]
    assert spy.parsed == ["notes/sub/new.txt"]  # only inside the path given
    assert report.unchanged == ["notes/sub/gamma.txt"]
    assert embedded == 2
    assert any("is inside the source notes" in n for n in report.notes)
    with pytest.raises(ConfigError, match="only whole sources can be removed"):
        remove_sources(settings, FAKE_INFO.key, [str(root / "sub")])


@pytest.mark.unit
def test_a_folder_that_holds_a_source_takes_it_over_never_two_copies(
    settings: Settings, tmp_path: Path, spy: ParseSpy
) -> None:
    root = corpus(tmp_path / "notes")
    fake_sync(settings, root / "sub")
    assert [s.label for s in fake_library(settings).sources] == ["sub"]

    report, _ = fake_sync(settings, root)

    assert [s.label for s in fake_library(settings).sources] == ["notes"]
    assert ("sub", "taken over by notes") in [(s.label, s.status) for s in report.sources]
    stored = fake_store(settings)
    assert stored.sources == {"notes/alpha.txt", "notes/beta.txt", "notes/sub/gamma.txt"}
    reference_settings = settings.model_copy(update={"chroma_dir": tmp_path / "reference"})
    fake_sync(reference_settings, root)
    assert_same_store(stored, fake_store(reference_settings), "after the takeover")


@pytest.mark.unit
@pytest.mark.parametrize("link_first", [False, True], ids=["link added after", "link added first"])
def test_a_link_to_a_folder_inside_a_source_never_stores_its_files_twice(
    settings: Settings, tmp_path: Path, spy: ParseSpy, link_first: bool
) -> None:
    """A symbolic link to a folder inside a source, added before or after that source: the
    planner compares real paths, so its files are stored once, under the outer source."""
    root = corpus(tmp_path / "notes")
    link = tmp_path / "shortcut"
    link.symlink_to(root / "sub", target_is_directory=True)

    for path in [link, root] if link_first else [root, link]:
        fake_sync(settings, path)

    assert [s.label for s in fake_library(settings).sources] == ["notes"]
    stored = fake_store(settings)
    assert stored.sources == {"notes/alpha.txt", "notes/beta.txt", "notes/sub/gamma.txt"}
    reference_settings = settings.model_copy(update={"chroma_dir": tmp_path / "reference"})
    fake_sync(reference_settings, root)
    assert_same_store(stored, fake_store(reference_settings), "one copy of every file")
    again, embedded = fake_sync(settings)  # and every later run agrees
    assert (again.new, again.deleted, embedded) == ([], [], 0)


@pytest.mark.unit
def test_another_models_library_is_never_hidden_and_rebuild_re_embeds_its_sources(
    settings: Settings, tmp_path: Path, spy: ParseSpy
) -> None:
    from app.models.embeddings import EmbeddingModelInfo

    fake_sync(settings, corpus(tmp_path / "notes"))
    other, counter = fake_embeddings(settings, EmbeddingModelInfo("fake", "other-64"))

    # No path, a path, even the chat's first-run check: the user's library is not quietly
    # replaced by an empty one for the other model.
    for paths in ([], [tmp_path / "notes"]):
        with pytest.raises(StoreError, match=r"fake/fake-64.*fake/other-64.*--rebuild"):
            sync_collection(settings, paths, other)
    assert counter.texts == 0
    assert app.indexing.sync.ingest_first_run(settings, other) is None

    report = sync_collection(settings, [], other, rebuild=True)
    assert any("Re-embedding the 1 sources" in n for n in report.notes)
    assert sorted(report.new) == ["notes/alpha.txt", "notes/beta.txt", "notes/sub/gamma.txt"]
    rebuilt = library_of(settings, other.info.key)
    assert rebuilt is not None
    assert rebuilt.record.model == "fake/other-64"
    assert [s.label for s in rebuilt.sources] == ["notes"]
    assert len(fake_store(settings).ids) == report.chunks_added  # the first library stays


# --- --rebuild and kills ----------------------------------------------------------------------


def physical_collections(settings: Settings) -> set[str]:
    """The collections that hold chunks (not the library records)."""
    names = {c.name for c in chroma_client(settings).list_collections()}
    return {n for n in names if not n.endswith(".library")}


def ask(question: str) -> subprocess.CompletedProcess:
    return run("app.chat", "-q", question, timeout=180)


def test_sigkill_during_multi_source_syncs_and_rebuilds_then_one_run_repairs(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """Runs over several sources (one adding a source) and --rebuilds, killed (SIGKILL) while
    they write; chat, started meanwhile and after, answers from the complete collection; one
    plain run then leaves the store equal to a clean ingest, the keyword index equal to it.

    The killed runs embed through a second, slow test server (same vectors), so a kill lands
    while request k of several hangs: batches 1..k-1 are written, the rest are not."""
    rng = random.Random(int(os.environ.get("CRASH_SEED", "8")))
    settings = load_settings()
    roots = [notes(tmp_path / name, 8, seed) for seed, name in enumerate(("notes", "papers"))]
    third = notes(tmp_path / "letters", 8, 7)
    for root in roots:
        ingest(str(root))
    kills = [("sync", [str(third)]), ("rebuild", []), ("sync", [])]
    roots.append(third)
    with OllamaTestServer(embedding_dim=384, embedder=bag_of_words_embedding) as slow:
        slow.delay = 1.0
        for iteration, (kind, args) in enumerate(kills):
            for root in rng.sample(roots, 2):  # edit, add and delete files in two sources
                victim = rng.choice(sorted(root.rglob("*.txt")))
                victim.write_text(generated_text(rng, f"edited {iteration}", 2))
                (root / f"added-{iteration}.txt").write_text(generated_text(rng, "added", 6))
            rng.choice(sorted(roots[iteration % 2].rglob("*.txt"))).unlink()
            active = server_library(settings).record.active
            seen = len(slow.requests_to("/api/embed"))
            log = tmp_path / f"killed-{iteration}.log"
            rebuild = ["--rebuild"] if kind == "rebuild" else []
            env = {"OLLAMA_BASE_URL": slow.base_url, "EMBEDDING_BATCH_SIZE": "2"}
            process = start("app.ingest", *args, *rebuild, log=log, **env)
            k = rng.randint(1, 3)
            wait_for(
                lambda s=seen, k=k, p=process: (
                    len(slow.requests_to("/api/embed")) - s >= k or p.poll() is not None
                ),
                "the run to embed",
            )
            if kind == "rebuild":
                # A chat started during the rebuild answers from the old, complete collection.
                during = ask("Who is the harbour master?")
                assert during.returncode == 0, during.stderr
                assert ANSWER in during.stdout
            assert process.poll() is None, log.read_text()  # killed mid-run, not after
            kill_group(process)
            assert server_library(settings).record.active == active  # never switched half-built

            if kind == "rebuild":
                after = ask("Who is the harbour master?")
                assert after.returncode == 0, after.stderr
                assert ANSWER in after.stdout

            repaired = ingest()
            if kind == "rebuild":
                assert any("interrupted --rebuild" in n for n in repaired["notes"]), repaired
            expected = reference(tmp_path, roots, server)
            assert_same_store(snapshot(settings), expected, f"after kill {iteration} ({kind})")
            assert_index_in_step(settings)
            assert physical_collections(settings) == {server_library(settings).record.active}

    # A rebuild left to finish switches, and deletes the old collection.
    old = server_library(settings).record.active
    rebuilt = ingest("--rebuild")
    new = server_library(settings).record.active
    assert new != old
    assert any(f"from {old} to {new}" in n for n in rebuilt["notes"])
    assert physical_collections(settings) == {new}
    assert_same_store(snapshot(settings), reference(tmp_path, roots, server), "after a rebuild")
    assert_index_in_step(settings)


# --- --watch -----------------------------------------------------------------------------------


def test_watch_picks_up_create_edit_rename_delete_and_survives_a_kill(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    settings = load_settings()
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "keep.txt").write_text("The ferry timetable changes in October.\n")
    env = {"WATCH_DEBOUNCE": "0.3"}

    def watcher_on(log: Path) -> subprocess.Popen[bytes]:
        process = start("app.ingest", "--watch", str(folder), log=log, **env)
        wait_for(
            lambda: "Watching 1 sources" in log.read_text() or process.poll() is not None,
            "the watcher",
        )
        assert process.poll() is None, log.read_text()
        return process

    log = tmp_path / "watch.log"
    watcher = watcher_on(log)
    try:
        (folder / "a.txt").write_text("Puffins nest on the cliffs.\n")
        wait_for(lambda: "watched/a.txt" in stored_texts(settings), "a create")
        (folder / "a.txt").write_text("Puffins and razorbills nest on the cliffs.\n")
        wait_for(lambda: "razorbills" in stored_texts(settings).get("watched/a.txt", ""), "an edit")
        (folder / "a.txt").rename(folder / "b.txt")
        wait_for(
            lambda: set(stored_texts(settings)) == {"watched/keep.txt", "watched/b.txt"}, "a rename"
        )
        (folder / "b.txt").unlink()
        wait_for(lambda: set(stored_texts(settings)) == {"watched/keep.txt"}, "a delete")
        assert "1 new" in log.read_text()
        assert "1 deleted" in log.read_text()

        # Killed while it writes a big new file: a restarted watcher repairs it first.
        server.delay = 0.3
        seen = len(server.requests_to("/api/embed"))
        (folder / "big.txt").write_text(generated_text(random.Random(5), "big", 30))
        wait_for(lambda: len(server.requests_to("/api/embed")) - seen >= 2, "the big file")
        kill_group(watcher)
        server.delay = 0.0
        watcher = watcher_on(tmp_path / "watch-2.log")
        (folder / "after.txt").write_text("Written after the restart.\n")
        wait_for(
            lambda: "watched/after.txt" in stored_texts(settings), "a create after the restart"
        )
        assert_same_store(snapshot(settings), reference(tmp_path, [folder], server))
        assert_index_in_step(settings)

        watcher.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert watcher.wait(timeout=60) == 0, (tmp_path / "watch-2.log").read_text()
        assert "Stopped." in (tmp_path / "watch-2.log").read_text()
    finally:
        kill_group(watcher)


def test_watch_picks_up_a_file_saved_while_its_first_sync_ran(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """`--watch` syncs first, then watches: a file edited after that sync read it, before the
    watcher was up, raised no event the watcher saw. It must still reach the library."""
    settings = load_settings()
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "keep.txt").write_text("Puffins nest on the cliffs.\n")
    (folder / "big.txt").write_text(generated_text(random.Random(5), "big", 30))
    server.delay = 0.3  # the first sync embeds big.txt slowly
    log = tmp_path / "watch.log"
    watcher = start("app.ingest", "--watch", str(folder), log=log, WATCH_DEBOUNCE="0.3")
    try:
        # Two embedding requests: both files were read, and the sync is still under way.
        wait_for(lambda: len(server.requests_to("/api/embed")) >= 2, "the first sync")
        assert "Watching" not in log.read_text()
        (folder / "keep.txt").write_text("Puffins and razorbills nest on the cliffs.\n")
        server.delay = 0.0
        wait_for(lambda: "Watching 1 sources" in log.read_text(), "the watcher")
        wait_for(
            lambda: "razorbills" in stored_texts(settings).get("watched/keep.txt", ""),
            "the edit made during the first sync",
        )
        assert "1 changed" in log.read_text()  # the second look's own line
        assert_same_store(snapshot(settings), reference(tmp_path, [folder], server))
        assert watcher.poll() is None, log.read_text()
    finally:
        kill_group(watcher)


@contextlib.contextmanager
def watching(log: Path, *paths: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m app.ingest --watch PATHS` once it says it watches; alive at the end."""
    process = start("app.ingest", "--watch", *paths, log=log, WATCH_DEBOUNCE="0.3")
    try:
        wait_for(lambda: "Watching" in log.read_text() or process.poll() is not None, "the watcher")
        assert process.poll() is None, log.read_text()
        yield process
        assert process.poll() is None, log.read_text()
    finally:
        kill_group(process)


def test_watch_keeps_a_source_whose_folder_is_there_but_empty(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """The mount point of an unplugged drive: the folder is there, none of its files. A plain
    sync keeps the chunks; so must the watcher's own syncs, at its start (its second look) and
    when every file vanishes while it watches (a drive gone under a polling watcher)."""
    settings = load_settings()
    folder = notes(tmp_path / "drive", 4, 7)
    ingest(str(folder))
    before = set(stored_texts(settings))
    assert len(before) == 4
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def move_all(src: Path, dst: Path) -> None:
        for path in list(src.iterdir()):
            path.rename(dst / path.name)

    move_all(folder, elsewhere)
    log = tmp_path / "watch.log"
    with watching(log):
        assert set(stored_texts(settings)) == before, log.read_text()
        assert not re.search(r"\d+ deleted", log.read_text())  # no sync line deleted a file
        move_all(elsewhere, folder)  # plugged in again
        (folder / "new.txt").write_text("Gannets dive for fish.\n")
        wait_for(lambda: "drive/new.txt" in stored_texts(settings), "a file created once back")
        kept = log.read_text().count("none of its")
        move_all(folder, elsewhere)  # gone again, while watched: every file "deleted"
        wait_for(lambda: log.read_text().count("none of its") > kept, "the sync that keeps them")
        assert set(stored_texts(settings)) == before | {"drive/new.txt"}, log.read_text()


def test_watch_sees_what_a_sync_indexes_and_survives_names_it_cannot_decode(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """watchfiles' default filter drops node_modules, .venv, `*~` and more, all of which a sync
    indexes; and a file name that is not UTF-8 (an old zip, a Samba share) made the watcher
    raise and the command die. The watcher sees what the sync sees, and watches on."""
    settings = load_settings()
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "ok.md").write_text("Puffins nest on the cliffs.\n")
    log = tmp_path / "watch.log"
    with watching(log, str(folder)):
        (folder / "node_modules").mkdir()
        (folder / "node_modules" / "guide.md").write_text("Gannets dive for fish.\n")
        wait_for(lambda: "src/node_modules/guide.md" in stored_texts(settings), "node_modules")
        with open(os.fsencode(folder) + b"/caf\xe9.md", "w") as handle:
            handle.write("A name in Latin-1.\n")
        wait_for(lambda: "The watcher failed" in log.read_text(), "the undecodable name")
        (folder / "later.md").write_text("Razorbills nest below them.\n")
        wait_for(lambda: "src/later.md" in stored_texts(settings), "a file after that name")
        assert "Traceback" not in log.read_text()


def test_watching_every_source_takes_in_one_another_command_adds(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """`--watch` with no path (and `serve --watch`) watches the library's sources: one added by
    `python -m app.ingest PATH` in another terminal is watched too, without a restart."""
    settings = load_settings()
    first = notes(tmp_path / "first", 2, 3)
    ingest(str(first))
    log = tmp_path / "watch.log"
    with watching(log):
        second = notes(tmp_path / "second", 2, 4)
        while (added := run("app.ingest", str(second))).returncode != 0:
            assert "lock" in added.stdout + added.stderr, added.stdout + added.stderr
            time.sleep(1)  # the watcher's sync held the writer lock: as a user would, again
        (second / "later.txt").write_text("Written once the watcher had the new source.\n")
        wait_for(lambda: "second/later.txt" in stored_texts(settings), "a file of the new source")


def test_watch_follows_a_folder_reorganized_or_deleted_and_made_again(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """Every file moved into a new subfolder is a reorganized folder, not an unmounted drive
    (the files there hold what the stored ones held); and a source folder deleted and made
    again at once (`rm -rf docs && git checkout docs`) may get its old inode number back:
    the watcher must watch the new one."""
    settings = load_settings()
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Puffins nest on the cliffs.\n")
    (folder / "b.txt").write_text("Gannets dive for fish.\n")
    log = tmp_path / "watch.log"
    with watching(log, str(folder)):
        (folder / "archive").mkdir()
        for name in ("a.txt", "b.txt"):
            (folder / name).rename(folder / "archive" / name)
        wait_for(
            lambda: set(stored_texts(settings)) == {"docs/archive/a.txt", "docs/archive/b.txt"},
            "the reorganized folder",
        )
        kept = {p.name: p.read_text() for p in (folder / "archive").iterdir()}
        shutil.rmtree(folder)  # and checked out again, with one file more
        (folder / "archive").mkdir(parents=True)
        for name, text in kept.items():
            (folder / "archive" / name).write_text(text)
        (folder / "c.txt").write_text("Razorbills nest below them.\n")
        wait_for(
            lambda: (
                set(stored_texts(settings))
                == {"docs/archive/a.txt", "docs/archive/b.txt", "docs/c.txt"}
            ),
            "the folder made again",
        )
        (folder / "c.txt").write_text("Razorbills and guillemots nest below them.\n")
        wait_for(
            lambda: "guillemots" in stored_texts(settings).get("docs/c.txt", ""),
            "an edit in the folder made again",
        )
        assert_same_store(snapshot(settings), reference(tmp_path, [folder], server))


def save_by_rename(path: Path, text: str) -> None:
    """As vim, JetBrains' safe write or `sed -i` save: a new file renamed over the old one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_watch_follows_a_file_source_saved_again_and_again_by_rename(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """A watch on a file is a watch on that file's inode: the first save by rename ends it. A
    file source must be followed through every save, not only the first."""
    settings = load_settings()
    note = tmp_path / "notes" / "plan.md"
    note.parent.mkdir()
    note.write_text("The survey starts on Monday.\n")
    log = tmp_path / "watch.log"
    with watching(log, str(note)):
        for day in ("Tuesday", "Wednesday", "Thursday"):
            save_by_rename(note, f"The survey starts on {day}.\n")
            wait_for(
                lambda day=day: day in stored_texts(settings).get("plan.md", ""), f"the {day} save"
            )
        assert set(stored_texts(settings)) == {"plan.md"}


def test_watch_keeps_a_folder_that_goes_away_and_syncs_it_when_it_is_back(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """A drive unplugged while watched, edited elsewhere, plugged in again: its chunks are kept
    meanwhile, and once it is back its changes are synced and it is watched again."""
    settings = load_settings()
    folder = tmp_path / "drive"
    folder.mkdir()
    (folder / "a.txt").write_text("Puffins nest on the cliffs.\n")
    away = tmp_path / "unplugged"
    log = tmp_path / "watch.log"
    with watching(log, str(folder)):
        shutil.copytree(folder, away)  # a new folder: renamed back, it is not the one watched
        shutil.rmtree(folder)
        wait_for(lambda: "kept" in log.read_text(), "the sync that keeps the missing source")
        assert set(stored_texts(settings)) == {"drive/a.txt"}
        (away / "a.txt").write_text("Puffins and razorbills nest on the cliffs.\n")
        away.rename(folder)
        wait_for(
            lambda: "razorbills" in stored_texts(settings).get("drive/a.txt", ""),
            "the edit made while it was away",
        )
        (folder / "b.txt").write_text("Gannets dive for fish.\n")  # watched again
        wait_for(lambda: "drive/b.txt" in stored_texts(settings), "a file created once back")
        assert_same_store(snapshot(settings), reference(tmp_path, [folder], server))


# --- Chat and the keyword index --------------------------------------------------------------


def test_two_chats_started_together_never_duplicate_keyword_rows(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    settings = load_settings()
    ingest(str(notes(tmp_path / "notes", 20, 9)))
    library = server_library(settings)
    assert library.collection() is not None
    # An index that is behind (as on a chat machine in server mode): both chats find it so.
    for path in index_path(settings, library.store.key, library.record.active).parent.glob("*"):
        path.unlink()
    chats = [
        start("app.chat", "-q", "Who is the harbour master?", log=tmp_path / f"chat-{n}.log")
        for n in range(2)
    ]
    logs = []
    for n, chat in enumerate(chats):
        assert chat.wait(timeout=180) == 0, (tmp_path / f"chat-{n}.log").read_text()
        logs.append((tmp_path / f"chat-{n}.log").read_text())
        assert ANSWER in logs[-1], logs[-1]
        assert "locked" not in logs[-1], logs[-1]
    assert any("Keyword index: caught up on 1 changed sources" in log for log in logs), logs
    assert_index_in_step(settings)


@pytest.mark.unit
def test_a_keyword_index_opened_while_another_connection_writes_it_waits(tmp_path: Path) -> None:
    """Two chats opening one new index at once: one holds a write lock while the other asks
    for the exclusive lock WAL mode needs, a wait SQLite refuses at once ("database is locked")
    as a possible deadlock. The opener tries again until the writer is done."""
    import threading

    from app.store.keyword_index import KeywordIndex

    path = tmp_path / "index.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE held (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO held VALUES (1)")
    done = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    done.start()
    try:
        started = time.monotonic()
        index = KeywordIndex(path, "collection-uid")
        assert time.monotonic() - started >= 0.4  # it waited for the writer
        assert index.ids() == set()
        index.close()
    finally:
        done.join()
        writer.close()


def test_auto_with_the_librarys_provider_down_names_the_model_and_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ollama embedded the library; now it is down and `auto` would pick the embedded model.
    Neither chat nor ingest may open an empty library of their own or ingest the samples."""
    for key in ("EMBEDDING_PROVIDER", "CHAT_PROVIDER"):
        monkeypatch.setenv(key, "auto")
    settings = load_settings()
    with OllamaTestServer(embedding_dim=64) as srv:
        made = run("app.ingest", str(notes(tmp_path / "notes", 3, 1)), OLLAMA_BASE_URL=srv.base_url)
        assert made.returncode == 0, made.stderr
    down = {"OLLAMA_BASE_URL": f"http://127.0.0.1:{closed_port()}"}

    chat = run("app.chat", "-q", "Who is the harbour master?", **down)
    sync = run("app.ingest", **down)

    for done in (chat, sync):
        assert done.returncode == 4, done.stderr
        assert "ollama/nomic-embed-text" in done.stderr
        assert "ollama serve" in done.stderr
        assert "--rebuild" in done.stderr
    names = {c.name for c in chroma_client(settings).list_collections()}
    assert not any(n.startswith("localrag-local") for n in names), names  # no sample ingest


# --- Private by default ------------------------------------------------------------------------


@pytest.mark.unit
def test_store_directory_is_0700_and_chat_history_0600(tmp_path: Path) -> None:
    from app.chat import save_line_history

    settings = load_settings(chroma_dir=tmp_path / "new-store")
    open_store(settings)
    assert stat.S_IMODE(settings.chroma_dir.stat().st_mode) == 0o700

    history = tmp_path / "history"
    save_line_history(lambda path: path.open("a").write("who is the keeper?\n"), history)
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert history.read_text() == "who is the keeper?\n"
    history.chmod(0o644)  # made by an older version: made private on the next save
    save_line_history(lambda path: None, history)
    assert stat.S_IMODE(history.stat().st_mode) == 0o600


def modes(folder: Path) -> dict[str, int]:
    """Every folder's and file's permission bits under `folder` (itself included)."""
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[path.relative_to(folder).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_a_store_readable_by_others_is_made_private_when_opened(
    tmp_path: Path, server: OllamaTestServer
) -> None:
    """A CHROMA_DIR made 0755 with 0644 files (an older version, a wide umask, a copy) holds
    the text of every document: the next command that opens it makes it 0700/0600 and says so."""
    settings = load_settings()
    folder = notes(tmp_path / "notes", 3, 11)
    ingest(str(folder))
    for path in [settings.chroma_dir, *settings.chroma_dir.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    widened = modes(settings.chroma_dir)
    assert len(widened) > 3
    assert all(mode & 0o077 for mode in widened.values())

    done = run("app.ingest", "--json")

    assert done.returncode == 0, done.stderr
    assert "Made the store private" in done.stderr
    assert str(settings.chroma_dir) in " ".join(done.stderr.split())
    now = modes(settings.chroma_dir)
    assert {name: mode for name, mode in now.items() if mode & 0o077} == {}
    for name in widened:
        path = settings.chroma_dir / name
        assert now[name] == (0o700 if path.is_dir() else 0o600), name
    again = run("app.ingest", "--json")
    assert again.returncode == 0, again.stderr
    assert "Made the store private" not in again.stderr  # said once, when it was needed


# --- What --watch runs: scoped syncs ----------------------------------------------------------


@pytest.mark.unit
def test_a_scoped_sync_reads_only_the_files_it_names(
    settings: Settings, tmp_path: Path, spy: ParseSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What --watch runs: only the changed paths are parsed, and only their records are read,
    unless a folder changed; the store still ends equal to a clean ingest."""
    root = corpus(tmp_path / "notes", ("alpha", "beta", "delta", "eta"))
    fake_sync(settings, root)
    reads: list[Selection] = []
    real = ChromaCollection.rows

    def counted(collection: ChromaCollection, selection: Selection = EVERYTHING) -> Any:
        reads.append(selection)
        return real(collection, selection)

    monkeypatch.setattr(ChromaCollection, "rows", counted)
    write_doc(root / "alpha.txt", "alpha edited", 3)
    write_doc(root / "new.txt", "new", 2)
    (root / "beta.txt").unlink()
    spy.reset()

    report, _ = fake_sync(settings, scopes={"notes": ["alpha.txt", "new.txt", "beta.txt"]})

    assert sorted(spy.parsed) == ["notes/alpha.txt", "notes/new.txt"]
    assert (report.changed, report.new, report.deleted) == (
        ["notes/alpha.txt"],
        ["notes/new.txt"],
        ["notes/beta.txt"],
    )
    assert reads, "the scoped sync read nothing"
    assert Selection(root="notes") not in reads  # no read of the whole source
    shutil.rmtree(root / "sub")  # a deleted folder: its files are found below it
    report, _ = fake_sync(settings, scopes={"notes": ["sub"]})
    assert report.deleted == ["notes/sub/gamma.txt"]
    reference_settings = settings.model_copy(update={"chroma_dir": tmp_path / "reference"})
    fake_sync(reference_settings, root)
    assert_same_store(fake_store(settings), fake_store(reference_settings), "after scoped syncs")


@pytest.mark.unit
@pytest.mark.parametrize("change", ["file to folder", "folder to file"])
def test_a_scoped_sync_of_a_path_that_changed_kind_leaves_nothing_of_the_old(
    settings: Settings, tmp_path: Path, spy: ParseSpy, change: str
) -> None:
    """A file replaced by a folder of the same name, or the reverse: the watcher reports the
    one path, and the sync of it leaves no chunk of what was there before."""
    root = corpus(tmp_path / "notes")
    chapter = root / "chapter.txt"
    if change == "file to folder":
        write_doc(chapter, "chapter as a file", 3)
    else:
        write_doc(chapter / "one.txt", "first inner file", 2)
        write_doc(chapter / "deeper" / "two.txt", "second inner file", 2)
    fake_sync(settings, root)
    before = fake_store(settings).sources
    if change == "file to folder":
        chapter.unlink()
        write_doc(chapter / "inner.txt", "inner file", 2)
    else:
        shutil.rmtree(chapter)
        write_doc(chapter, "chapter as a file", 3)

    report, _ = fake_sync(settings, scopes={"notes": ["chapter.txt"]})

    now = fake_store(settings).sources
    gone = before - now
    assert gone == (
        {"notes/chapter.txt"}
        if change == "file to folder"
        else {"notes/chapter.txt/one.txt", "notes/chapter.txt/deeper/two.txt"}
    )
    assert sorted(report.deleted) == sorted(gone)
    reference_settings = settings.model_copy(update={"chroma_dir": tmp_path / "reference"})
    fake_sync(reference_settings, root)
    assert_same_store(fake_store(settings), fake_store(reference_settings), f"after {change}")


@pytest.mark.unit
def test_a_collection_from_before_libraries_is_named_and_replaced_by_the_folders_added(
    settings: Settings, tmp_path: Path, spy: ParseSpy
) -> None:
    name = library_name(settings, FAKE_INFO.key)
    fresh_store(settings).create_collection(name, FAKE_INFO.key, 64)  # as earlier versions did
    root = corpus(tmp_path / "notes")

    # A run without paths would re-embed the sample documents (DOCS_DIR): refused, with the fix.
    with pytest.raises(StoreError, match=r"earlier localrag.*python -m app\.ingest PATH"):
        fake_sync(settings)
    report, _ = fake_sync(settings, root)

    assert sorted(report.new) == ["notes/alpha.txt", "notes/beta.txt", "notes/sub/gamma.txt"]
    assert fresh_store(settings).collection(name) is None  # replaced once complete
    assert [s.label for s in fake_library(settings).sources] == ["notes"]
    assert len(fake_store(settings).ids) == report.chunks_added
