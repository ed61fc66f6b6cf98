"""A real `python -m app.ingest`, killed with SIGKILL at random points, then run once more, must
leave the store equal to a clean ingest; one writer at a time; readers keep working meanwhile.

The Ollama test server is the embedder (fast, deterministic, and its `delay` stretches a run so
that kills land while it writes). References are clean ingests into a separate CHROMA_DIR, run in
this process with the same sync code; parsing there is done serially in-process (the worker pool
only adds a start-up cost the subprocess runs already pay).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import app.indexing.sync
from app.config import Settings, load_settings
from app.indexing.sync import sync_collection
from app.models.embeddings import ModelEmbeddings
from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR
from app.store.library import library_name
from loaders.discovery import SourceFile
from loaders.pool import Failed, Parsed, PoolLimits
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.test_sync import (
    ParseSpy,
    StoreSnapshot,
    assert_same_store,
    collection_of,
    fresh_store,
    library_of,
    read_store,
)

pytestmark = pytest.mark.integration

EMBED_BATCH = 8
# The killed runs write every two embedded batches (LOCALRAG_WRITE_CHUNKS, a test knob read by
# the sync): by default a flush's batches go to the store in one request of up to 1,024 chunks,
# a handful of writes per run, and too few kills would land in the middle of one. Two batches a
# write still exercise the gathering of batches; the repairing runs write as users' runs do.
KILLED_WRITE_CHUNKS = 2 * EMBED_BATCH
DELAY = 0.02  # seconds per embedding request during the killed and the repairing runs
GENERATED = 150
ITERATIONS = int(os.environ.get("CRASH_ITERATIONS", "12"))
SEED = int(os.environ.get("CRASH_SEED", "20250210"))

WORDS = [
    *("harbour", "ferry", "tide", "lantern", "pontoon", "dredger", "basin", "slip", "mole"),
    *("buoy", "channel", "skipper", "cooperative", "timetable", "observatory", "meteor"),
    *("volunteer", "telescope", "archive", "minutes", "council", "quay", "beacon", "gale"),
    *("anchor", "mooring", "pilot", "cargo", "netting", "kelp", "shingle", "estuary"),
]


# --- Store access from this process ---------------------------------------------------------


def chroma_client(settings: Settings) -> Any:
    """A raw chromadb client (for the checks of Chroma itself) that sees what other processes
    wrote: Chroma caches one System per path, and a cached one keeps serving its old index."""
    import chromadb
    from chromadb.api.client import SharedSystemClient
    from chromadb.config import Settings as ChromaSettings

    SharedSystemClient.clear_system_cache()
    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_host:
        return chromadb.HttpClient(
            host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
        )
    return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)


def snapshot_of(settings: Settings, embeddings: ModelEmbeddings) -> StoreSnapshot:
    return read_store(collection_of(settings, embeddings.info.key))


UPSTREAM_UNREACHABLE = "chroma-core/chroma#7758"


def check_vector_index(settings: Settings, embeddings: ModelEmbeddings) -> list[str]:
    """The vector index agrees with the records: it holds as many as the store, and a query
    never returns a record the store no longer holds (a chat would get a chunk without text).

    Returns the live records that a query cannot reach even with their own vector. Chroma 1.5.9
    leaves a few of those after deletes and upserts, with or without a crash (upstream issue
    chroma-core/chroma#7758; reproduced here in one process without kills; seen once in a
    collection of 8 files after one edit and one delete), so they are printed, not failed, once
    `get` has shown them whole: their ids, documents, metadata and vectors are checked elsewhere."""
    library = library_of(settings, embeddings.info.key)
    assert library is not None
    collection = chroma_client(settings).get_collection(library.record.active)
    stored = collection.get(include=["embeddings"])
    ids = list(stored["ids"])
    vectors: Any = [list(v) for v in stored["embeddings"]]  # type: ignore[union-attr]
    assert collection.count() == len(ids) == len(vectors)
    probes = [vectors[i] for i in (0, len(ids) // 2, len(ids) - 1)]
    result = collection.query(query_embeddings=probes, n_results=len(ids))
    assert result["documents"] is not None
    returned = {i for found in result["ids"] for i in found}
    assert returned <= set(ids), f"the index returns removed records: {returned - set(ids)}"
    assert all(d is not None for found in result["documents"] for d in found)
    # HNSW search is approximate: asked for every record, it may leave some out.
    position = {chunk_id: n for n, chunk_id in enumerate(ids)}
    unreachable = []
    for chunk_id in sorted(set(ids) - returned):
        found = collection.query(query_embeddings=[vectors[position[chunk_id]]], n_results=5)
        assert set(found["ids"][0]) <= set(ids)
        if chunk_id not in found["ids"][0]:
            unreachable.append(chunk_id)
    if unreachable:  # the upstream symptom: live records, whole, that HNSW search misses
        got = collection.get(ids=unreachable, include=["documents", "metadatas"])
        assert sorted(got["ids"]) == sorted(unreachable)
        assert all(d for d in got["documents"] or [None])
        assert all(m and m.get("source") for m in got["metadatas"] or [None])
        print(f"  {len(unreachable)} live records unreachable by query ({UPSTREAM_UNREACHABLE})")
    return unreachable


def stored_hashes(settings: Settings, library_name: str) -> dict[str, str] | None:
    """id -> file_hash of the collection the library is writing (a rebuild's new one, else
    the active one), straight from Chroma's SQLite file, read-only, without opening Chroma (so
    looking does not repair anything). Only to tell at what stage a kill landed; None when
    there is no such collection; raises sqlite3.Error if the file cannot be read."""
    path = settings.chroma_dir / "chroma.sqlite3"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        record = db.execute(
            "SELECT m.str_value FROM collections c JOIN collection_metadata m "
            "ON m.collection_id = c.id WHERE c.name = ? AND m.key = 'localrag_library'",
            (library_name + ".library",),
        ).fetchone()
        if record is None:
            return None
        library = json.loads(record[0])
        name = library["building"] or library["active"]
        found = db.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        if found is None:
            return None
        rows = db.execute(
            "SELECT e.embedding_id, m.string_value FROM segments s "
            "JOIN embeddings e ON e.segment_id = s.id "
            "LEFT JOIN embedding_metadata m ON m.id = e.id AND m.key = 'file_hash' "
            "WHERE s.collection = ? AND s.scope = 'METADATA'",
            (found[0],),
        ).fetchall()
    return {chunk_id: file_hash for chunk_id, file_hash in rows}


ADDING = "adding chunks"
CLEANING = "updating/deleting (all chunks in, stale records left)"
IN_TRANSACTION = "inside a SQLite transaction (hot journal left)"
MID_WRITE = {ADDING, CLEANING, IN_TRANSACTION}


def stage_of(
    after: dict[str, str] | None, before: dict[str, str] | None, target: dict[str, str]
) -> str:
    """Where the killed run was, judged by what it left behind."""
    if after is None:
        return "no collection (start-up, or dropped by --rebuild)"
    if after == (before or {}):
        return "before its first write"
    if after == target:
        return "after its last write"
    if set(target) - set(after):
        return ADDING
    return CLEANING


# --- The corpus ----------------------------------------------------------------------------


def generated_text(rng: random.Random, title: str, paragraphs: int) -> str:
    body = []
    for n in range(paragraphs):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 60)))
        body.append(f"{title}, part {n}: {words}.")
    return "\n\n".join(body) + "\n"


class Corpus:
    """The sample docs plus generated notes; mutations are random but seeded."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.added = 0
        shutil.copytree(SAMPLE_DOCS_DIR, root)
        for i in range(GENERATED):
            self.write(f"notes/note-{i:03d}.txt", rng.randint(2, 4))

    def write(self, source: str, paragraphs: int) -> None:
        path = self.root / source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated_text(self.rng, f"Note {source}", paragraphs))

    def texts(self) -> list[Path]:
        return sorted(self.root.rglob("*.txt"))

    def mutate(self, edits: int, deletes: int, adds: int) -> str:
        rng = self.rng
        texts = self.texts()
        for path in rng.sample(texts, min(edits, len(texts))):
            paragraphs = path.read_text().strip().split("\n\n")
            how = rng.choice(["replace", "append", "drop"])
            if how == "replace" or len(paragraphs) < 2:
                paragraphs[rng.randrange(len(paragraphs))] = generated_text(rng, "Edited", 1)
            elif how == "append":
                paragraphs.append(generated_text(rng, "Appended", 1))
            else:
                del paragraphs[rng.randrange(len(paragraphs))]
            path.write_text("\n\n".join(p.strip() for p in paragraphs) + "\n")
        notes = sorted(self.root.glob("notes/*.txt"))
        for path in rng.sample(notes, min(deletes, len(notes))):
            path.unlink()
        for _ in range(adds):
            self.added += 1
            self.write(f"notes/added-{self.added:03d}.txt", rng.randint(1, 4))
        return f"{edits} edited, {deletes} deleted, {adds} added"


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture
def embed_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OllamaTestServer]:
    """The test server as the embedder, for subprocesses (environment) and this process."""
    with OllamaTestServer(embedding_dim=384, embedder=bag_of_words_embedding) as server:
        monkeypatch.setenv("EMBEDDING_PROVIDER", "ollama")
        monkeypatch.setenv("OLLAMA_BASE_URL", server.base_url)
        monkeypatch.setenv("EMBEDDING_BATCH_SIZE", str(EMBED_BATCH))
        monkeypatch.setenv("OLLAMA_PROBE_TIMEOUT", "10")  # a loaded machine is slow to answer
        yield server


def server_embeddings(settings: Settings) -> ModelEmbeddings:
    """The Ollama provider's embeddings (the test server's), built in this process."""
    from app.models.ollama import PROVIDER

    return PROVIDER.embeddings(settings, lambda line: None)


def ingest_command(folder: Path | None, *args: str) -> list[str]:
    """`python -m app.ingest [FOLDER] ARGS` (no folder: every source of the library)."""
    return [sys.executable, "-m", "app.ingest", *([str(folder)] if folder else []), *args]


def run_ingest(folder: Path, *args: str, timeout: float = 300) -> dict[str, Any]:
    done = subprocess.run(
        ingest_command(folder, "--json", *args),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"ingest failed ({done.returncode}):\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def start_ingest(
    folder: Path | None, *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Its own process group, so a kill takes the parsing workers and the forkserver too."""
    with log.open("wb") if log else open(os.devnull, "wb") as stderr:
        return subprocess.Popen(
            ingest_command(folder, *args),
            cwd=PROJECT_ROOT,
            env={**os.environ, "LOCALRAG_WRITE_CHUNKS": str(KILLED_WRITE_CHUNKS)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the ingest and everything it started (parsing workers, forkserver, resource
    tracker): the signal reaches the whole group at once, so nothing of it runs afterwards."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


class CachedParse:
    """Parses in this process, once per file content: parsing is a pure function of the bytes."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], Parsed | Failed] = {}

    def __call__(self, files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
        for file in files:
            key = (file.source, hashlib.sha256(file.path.read_bytes()).hexdigest())
            if key not in self.cache:
                self.cache[key] = next(ParseSpy()([file], limits))
            cached = self.cache[key]
            if isinstance(cached, Parsed):
                yield Parsed(file, copy.deepcopy(cached.documents))
            else:
                yield Failed(file, cached.reason)


class Reference:
    """Clean ingests of the current folder into fresh CHROMA_DIRs, made in this process (with
    big embedding batches: a chunk's vector does not depend on its batch)."""

    def __init__(self, tmp_path: Path, server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch):
        self.tmp_path = tmp_path
        self.server = server
        self.runs = 0
        monkeypatch.setattr(app.indexing.sync, "parse_in_workers", CachedParse())

    def of(self, folder: Path) -> StoreSnapshot:
        self.runs += 1
        settings = load_settings(
            chroma_dir=self.tmp_path / f"reference-{self.runs}", embedding_batch_size=512
        )
        delay, self.server.delay = self.server.delay, 0.0
        try:
            embeddings = server_embeddings(settings)
            report = sync_collection(settings, [folder], embeddings)
            assert report.ok, report.failed
            return snapshot_of(settings, embeddings)
        finally:
            self.server.delay = delay


@dataclass
class Kill:
    iteration: int
    before: str  # mutation before the killed run
    rebuild: bool
    trigger: str
    seconds: float
    embed_requests: int
    stage: str
    after: str  # mutation after the kill
    repair: dict[str, int]
    repair_seconds: float

    def __str__(self) -> str:
        return (
            f"kill {self.iteration:2d}{' (--rebuild)' if self.rebuild else ''}: "
            f"{self.trigger}; killed at {self.seconds:.1f} s after {self.embed_requests} "
            f"embedding requests, stage: {self.stage}. Before: {self.before}; after: "
            f"{self.after}. Repair run ({self.repair_seconds:.1f} s): {self.repair}"
        )


# --- The crash test ------------------------------------------------------------------------


def test_sigkill_at_random_points_then_one_run_repairs_everything(
    tmp_path: Path, embed_server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(SEED)
    print(f"\ncrash test seed {SEED} (CRASH_SEED=... to replay), {ITERATIONS} kills")
    corpus = Corpus(tmp_path / "docs", rng)
    store = load_settings(chroma_dir=tmp_path / "store")
    monkeypatch.setenv("CHROMA_DIR", str(store.chroma_dir))
    embeddings = server_embeddings(store)
    name = library_name(store, embeddings.info.key)
    reference = Reference(tmp_path, embed_server, monkeypatch)
    expected = reference.of(corpus.root)
    rebuild_at = rng.randrange(3, ITERATIONS) if ITERATIONS > 3 else -1
    run_seconds = [4.0]  # how long recent ingest runs took here: the window for kills by time
    kills: list[Kill] = []

    for iteration in range(ITERATIONS):
        before = "-"
        if iteration > 0:
            before = corpus.mutate(rng.randint(5, 40), rng.randint(0, 3), rng.randint(0, 5))
            expected = reference.of(corpus.root)
        rebuild = iteration == rebuild_at
        left_before = stored_hashes(store, name)  # the previous run completed: readable
        target = {i: m["file_hash"] for i, m in expected.metadatas.items()}
        to_embed = len(target) if rebuild else len(set(target) - set(left_before or {}))
        requests_needed = math.ceil(to_embed / EMBED_BATCH)

        embed_server.delay = DELAY
        seen = len(embed_server.requests_to("/api/embed"))
        # Kill by time (start-up, parsing, anywhere), while it embeds and writes (after its
        # k-th embedding request: k-1 batches written), or just after its last batch (updating
        # kept chunks, deleting stale ones and deleted files). A --rebuild is killed by time:
        # by then it has dropped the collection or not, and killing its re-embedding differs
        # little from iteration 0 but costs a re-parse of every sample document.
        how = 1.0 if iteration == 0 else rng.random()  # the first: mid-way through its writes
        if rebuild or not requests_needed or how < 0.2:
            k, jitter = 0, rng.uniform(0, statistics.median(run_seconds[-4:]))
            trigger = f"{jitter:.2f} s after start"
        elif how < 0.45:
            k, jitter = requests_needed, rng.uniform(DELAY, DELAY + 0.3)
            trigger = f"{jitter:.3f} s after its last embedding request ({k})"
        else:
            k = rng.randint(min(2, requests_needed), requests_needed)
            jitter = rng.uniform(0, 0.05)
            trigger = f"{jitter:.3f} s after embedding request {k}/{requests_needed}"
        # --rebuild takes no paths: it re-embeds every source (here, the corpus).
        named, flags = (None, ["--rebuild"]) if rebuild else (corpus.root, [])
        process = start_ingest(named, *flags, log=tmp_path / "killed.log")
        started = time.monotonic()
        fire_at = started + jitter if k == 0 else None
        while process.poll() is None:
            if fire_at is None and len(embed_server.requests_to("/api/embed")) - seen >= k:
                fire_at = time.monotonic() + jitter
            if fire_at is not None and time.monotonic() >= fire_at:
                break
            time.sleep(0.002)
        finished = process.poll() is not None
        kill_group(process)
        seconds = time.monotonic() - started
        requests = len(embed_server.requests_to("/api/embed")) - seen
        assert not finished or process.returncode == 0, (tmp_path / "killed.log").read_text()
        try:
            stage = stage_of(stored_hashes(store, name), left_before, target)
        except sqlite3.Error as exc:
            hot = (store.chroma_dir / "chroma.sqlite3-journal").exists()
            stage = IN_TRANSACTION if hot else f"? ({exc})"
        if finished:
            stage = "finished before the kill"
            run_seconds.append(seconds)

        after = "-"
        if rng.random() < 0.35:
            after = corpus.mutate(rng.randint(1, 8), rng.randint(0, 2), rng.randint(0, 2))
            expected = reference.of(corpus.root)

        started = time.monotonic()
        report = run_ingest(corpus.root)
        repair_seconds = time.monotonic() - started
        if iteration > 0:  # the first run parses and embeds everything: not typical
            run_seconds.append(repair_seconds)
        kill = Kill(
            iteration,
            before,
            rebuild,
            trigger,
            seconds,
            requests,
            stage,
            after,
            report["files"] | {"added": report["chunks"]["added"]},
            repair_seconds,
        )
        kills.append(kill)
        print(kill)
        assert_same_store(snapshot_of(store, embeddings), expected, f"after kill {kill}")
        check_vector_index(store, embeddings)

    # A final run has nothing left to do.
    report = run_ingest(corpus.root)
    assert report["files"]["unchanged"] == len(expected.sources)
    assert report["chunks"] == {"added": 0, "kept": 0, "removed": 0}

    stages = Counter(k.stage for k in kills)
    print("stages:", dict(stages))
    mid_write = sum(n for stage, n in stages.items() if stage in MID_WRITE)
    assert mid_write >= ITERATIONS // 4, f"too few kills landed while writing: {dict(stages)}"


# --- One writer, many readers -----------------------------------------------------------------


def lock_holder_running(settings: Settings) -> bool:
    return any(settings.chroma_dir.glob("ingest-*.owner.json"))


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def write_notes(folder: Path, count: int, rng: random.Random, prefix: str = "note") -> None:
    for i in range(count):
        path = folder / f"{prefix}-{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated_text(rng, f"{prefix} {i}", 3))


LIGHTHOUSE = (
    "The Skerrow lighthouse keeper is Morwenna Tregarthen. She winds the clockwork lamp "
    "every evening at dusk and logs passing vessels in the keeper's journal."
)


def slow_ingest_holding_the_lock(
    tmp_path: Path, server: OllamaTestServer, settings: Settings
) -> tuple[Path, subprocess.Popen[bytes]]:
    """A completed ingest of a small folder, then a slow one of many new files, left running
    once it holds the lock and has started embedding."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lighthouse.txt").write_text(LIGHTHOUSE + "\n")
    write_notes(folder, 5, random.Random(1))
    run_ingest(folder)
    write_notes(folder / "more", 120, random.Random(2), "more")
    # ~30 embedding requests: with writes gathered per flush, the model's time is most of the
    # run, so this is what keeps it running while the checks start their processes.
    server.delay = 0.8
    seen = len(server.requests_to("/api/embed"))
    writer = start_ingest(folder)
    wait_until(
        lambda: len(server.requests_to("/api/embed")) > seen or writer.poll() is not None,
        60,
        "the slow ingest to start embedding",
    )
    assert writer.poll() is None, "the slow ingest ended early"
    assert lock_holder_running(settings)
    return folder, writer


def test_a_second_ingest_is_refused_at_once_naming_the_holder(
    tmp_path: Path, embed_server: OllamaTestServer
) -> None:
    settings = load_settings()
    folder, writer = slow_ingest_holding_the_lock(tmp_path, embed_server, settings)
    try:
        started = time.monotonic()
        second = subprocess.run(
            ingest_command(folder),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        waited = time.monotonic() - started
        assert writer.poll() is None, "the first ingest finished before the second was refused"
    finally:
        kill_group(writer)
    assert second.returncode == 5
    assert "Another ingest is writing to" in second.stderr
    assert f"held by process {writer.pid}" in second.stderr
    assert "app.ingest" in second.stderr
    assert "Traceback" not in second.stderr
    print(f"second ingest refused after {waited:.1f} s (interpreter start-up included)")


def test_readers_query_while_an_ingest_writes(
    tmp_path: Path, embed_server: OllamaTestServer
) -> None:
    settings = load_settings()
    folder, writer = slow_ingest_holding_the_lock(tmp_path, embed_server, settings)
    embeddings = server_embeddings(settings)
    try:
        answers = []
        for _ in range(3):
            store = fresh_store(settings)
            library = library_of(settings, embeddings.info.key)
            collection = library.collection() if library is not None else None
            assert collection is not None
            found = store.as_vectorstore(collection, embeddings).similarity_search(
                "Who is the lighthouse keeper?", k=2
            )
            answers.append(found[0].metadata["source"])
            assert writer.poll() is None, "the ingest finished before the reader was done"
        assert answers == ["docs/lighthouse.txt"] * 3
        # A reader in another process (a chat session, say) gets the same answer.
        reader = subprocess.run(
            [sys.executable, "-c", READER_SCRIPT],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CHROMA_DIR": str(settings.chroma_dir)},
        )
        assert reader.returncode == 0, reader.stderr
        assert reader.stdout.split() == ["docs/lighthouse.txt"]
        assert writer.poll() is None, "the ingest finished before the reader process was done"
        embed_server.delay = 0
        assert writer.wait(timeout=120) == 0
    finally:
        kill_group(writer)
    report = run_ingest(folder)
    assert report["files"]["unchanged"] == 126, report
    check_vector_index(settings, embeddings)


READER_SCRIPT = """
from app.config import load_settings
from app.models.ollama import PROVIDER
from app.store import open_store
from app.store.library import Library, library_name
settings = load_settings()
embeddings = PROVIDER.embeddings(settings, lambda line: None)
store = open_store(settings)
library = Library.find(store, library_name(settings, embeddings.info.key))
vectors = store.as_vectorstore(library.collection(), embeddings)
print(vectors.similarity_search("Who is the lighthouse keeper?", k=1)[0].metadata["source"])
"""
