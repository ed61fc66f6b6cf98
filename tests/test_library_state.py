"""The library against a model, as Chroma tests its collections: random sequences of what users
do to their folders and their library, with a server left running, checked after every step.

Rules create, edit, truncate while the ingest reads, rename, delete and replace files and
folders, add symlinks, add/remove/rebuild sources, unplug and replug a source (a mount point
left with a placeholder file), sync (all sources, or scoped as `--watch` syncs) and ask the
running server. After every sync: the store equals what a clean sync of the current files holds
(per present source, chunk texts and fingerprints), the keyword index holds exactly the store's
chunk ids, an unplugged source keeps its chunks, and no source is lost. After every question:
every cited source is a file the library holds now, and the server's chunk count is the store's.

Syncs run in this process (parsing serially, as the sync tests do); the server is a real
`python -m app.serve` process on the Ollama test server, so it sees the writes as a user's
server does: through another process. The short profile runs in CI; LIBRARY_STATE_EXAMPLES and
LIBRARY_STATE_STEPS make the long run (docs/library.md reports one).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import app.indexing.sync
from app.config import Settings
from app.errors import ConfigError
from app.indexing.maintenance import remove_sources
from app.indexing.sync import sync_collection
from app.models import registry
from app.store import open_store
from app.store.keyword_index import open_keyword_index
from app.store.library import Library, library_name
from loaders.discovery import SourceFile
from loaders.parsers import UnreadableFile, parse_file
from loaders.pool import Failed, Parsed, PoolLimits
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, serve_env

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("LIBRARY_STATE_EXAMPLES", "6"))
STEPS = int(os.environ.get("LIBRARY_STATE_STEPS", "30"))
MODEL = "ollama/nomic-embed-text"
WORDS = ["harbour", "ferry", "lighthouse", "salt", "tide", "mole", "quay", "bell", "kite", "moss"]

names = st.sampled_from(["a", "b", "c", "d"])
texts = st.lists(st.sampled_from(WORDS), min_size=3, max_size=40).map(" ".join)


class Env:
    """What every example shares: the Ollama test server. Each example gets a fresh store and
    its own running app.serve (`fresh`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ollama = OllamaTestServer(embedder=bag_of_words_embedding).start()
        self.chroma = root / "store"
        self.server: ServeProcess | None = None

    def fresh(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.chroma = Path(tempfile.mkdtemp(dir=self.root, prefix="store-"))

    @property
    def values(self) -> dict[str, str]:
        return {
            "CHROMA_DIR": str(self.chroma),
            "OLLAMA_BASE_URL": self.ollama.base_url,
            "EMBEDDING_PROVIDER": "ollama",
            "CHAT_PROVIDER": "ollama",
            "CHUNK_SIZE": "200",
            "CHUNK_OVERLAP": "20",
            "SCORE_THRESHOLD": "-1",
        }

    def settings(self) -> Settings:
        return Settings(
            chroma_dir=self.chroma,
            ollama_base_url=self.ollama.base_url,
            embedding_provider="ollama",
            chat_provider="ollama",
            chunk_size=200,
            chunk_overlap=20,
            score_threshold=-1,
        )

    def serve(self) -> ServeProcess:
        if self.server is None:
            self.server = ServeProcess(serve_env(self.chroma, **self.values)).start()
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.ollama.stop()


def serial_parse(mutations: dict[str, str]) -> Any:
    """Parses in this process; a file listed in `mutations` is rewritten while it is read, as
    an editor saving it during an ingest would."""

    def parse(files: list[SourceFile], limits: PoolLimits) -> Iterator[Parsed | Failed]:
        for file in files:
            try:
                documents = parse_file(file.path, file.source, limits.parse)
            except UnreadableFile as exc:
                yield Failed(file, str(exc))
                continue
            if file.path.as_posix() in mutations:
                file.path.write_text(mutations.pop(file.path.as_posix()))
            yield Parsed(file, documents)

    return parse


def stored(settings: Settings) -> dict[str, Counter[str]]:
    """source file -> its chunk texts, as the library's collection holds them."""
    store = open_store(settings)
    store.refresh(force=True)
    library = Library.find(store, library_name(settings, MODEL))
    collection = library.collection() if library is not None else None
    if collection is None:
        return {}
    ids = [chunk_id for chunk_id, _ in collection.rows()]
    found: dict[str, Counter[str]] = {}
    for chunk in collection.get(ids):
        found.setdefault(str(chunk.metadata["source"]), Counter())[chunk.text] += 1
    return found


class LibraryMachine(RuleBasedStateMachine):
    env: Env

    @initialize()
    def start(self) -> None:
        self.work = Path(tempfile.mkdtemp(dir=self.env.root))
        self.sources: dict[str, Path] = {}  # label -> path, as the model expects the library
        self.unplugged: dict[str, tuple[Path, dict[str, Counter[str]]]] = {}
        self.mutations: dict[str, str] = {}
        self.monkey = pytest.MonkeyPatch()
        self.monkey.setattr(app.indexing.sync, "parse_in_workers", serial_parse(self.mutations))
        self.env.fresh()
        self.embeddings, _ = registry.build_embeddings(self.env.settings(), lambda line: None)
        for label in ("notes", "papers"):
            folder = self.work / label
            folder.mkdir()
            (folder / "start.md").write_text(f"{label} harbour ferry start")
        self.sync([self.work / "notes", self.work / "papers"])

    def teardown(self) -> None:
        self.monkey.undo()
        shutil.rmtree(self.work, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------------------

    def sync(self, paths: list[Path] | None = None, **kwargs: Any) -> None:
        before = stored(self.env.settings())
        report = sync_collection(self.env.settings(), paths or [], self.embeddings, **kwargs)
        for added in report.sources:
            if added.status == "added":
                self.sources[added.label] = Path(added.path)
        scopes = kwargs.get("scopes")
        if (
            paths and scopes is None
        ):  # `ingest PATH` syncs that source; the others stay as they were
            synced = {s.label for s in report.sources}
            self.check_store(lambda name: name.split("/", 1)[0] in synced)
            self.check_untouched(before, synced)
        elif scopes is None:
            self.check_store()
        else:  # a scoped sync brings just those paths up to date
            self.check_store(
                lambda name: any(
                    name == f"{label}/{p}" or name.startswith(f"{label}/{p}/")
                    for label, paths in scopes.items()
                    for p in paths
                )
            )

    def present(self) -> dict[str, Path]:
        return {label: p for label, p in self.sources.items() if label not in self.unplugged}

    def folder_of(self, label: str) -> Path:
        return self.sources[label]

    def check_untouched(self, before: dict[str, Counter[str]], changed: set[str]) -> None:
        """Every source but `changed` holds what it held before."""
        now = stored(self.env.settings())
        for label in set(self.sources) - changed:
            mine = {s: c for s, c in now.items() if s.split("/", 1)[0] == label}
            held = {s: c for s, c in before.items() if s.split("/", 1)[0] == label}
            assert mine == held, f"source {label} changed although it was not synced"

    def check_store(self, selected: Any = None) -> None:
        """The store against a clean sync of the current files of the present sources (only
        the files `selected` accepts, after a scoped sync)."""
        settings = self.env.settings()
        now = stored(settings)
        scratch = Path(tempfile.mkdtemp(dir=self.env.root))
        clean_settings = settings.model_copy(update={"chroma_dir": scratch})
        present = self.present()
        pending = dict(self.mutations)
        self.mutations.clear()  # the clean sync reads the files as they are
        try:
            sync_collection(clean_settings, list(present.values()), self.embeddings)
        finally:
            self.mutations.update(pending)
        expected = stored(clean_settings)
        shutil.rmtree(scratch, ignore_errors=True)
        for label in present:
            mine = {s: c for s, c in now.items() if s.split("/", 1)[0] == label}
            theirs = {s: c for s, c in expected.items() if s.split("/", 1)[0] == label}
            if selected is not None:
                mine = {s: c for s, c in mine.items() if selected(s)}
                theirs = {s: c for s, c in theirs.items() if selected(s)}
            assert mine == theirs, f"source {label} differs from a clean sync"
        for label, (_, kept) in self.unplugged.items():
            mine = {s: c for s, c in now.items() if s.split("/", 1)[0] == label}
            assert mine == kept, f"unplugged source {label} lost chunks"
        library = Library.find(open_store(settings), library_name(settings, MODEL))
        assert library is not None
        assert {s.label for s in library.sources} == set(self.sources), "a source was lost"
        collection = library.collection()
        if collection is not None:
            index = open_keyword_index(settings, open_store(settings), collection)
            try:
                assert index.ids() == {i for i, _ in collection.rows()}
            finally:
                index.close()

    # --- files -----------------------------------------------------------------------------------

    @rule(label=st.sampled_from(["notes", "papers"]), name=names, text=texts)
    def write_file(self, label: str, name: str, text: str) -> None:
        if label in self.unplugged:
            return
        path = self.folder_of(label) / f"{name}.md"
        if path.is_dir():
            return
        path.write_text(text)

    @rule(label=st.sampled_from(["notes", "papers"]), name=names, text=texts)
    def write_nested(self, label: str, name: str, text: str) -> None:
        if label in self.unplugged:
            return
        folder = self.folder_of(label) / "sub"
        if folder.exists() and not folder.is_dir():
            return
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.txt").write_text(text)

    @rule(label=st.sampled_from(["notes", "papers"]), name=names, text=texts)
    def save_while_ingest_reads(self, label: str, name: str, text: str) -> None:
        """The file is rewritten while the next sync parses it."""
        if label in self.unplugged:
            return
        path = self.folder_of(label) / f"{name}.md"
        if not path.is_dir():
            path.write_text(text)  # changed, so the next sync reads it...
            self.mutations[path.as_posix()] = text + " saved"  # ...while it is saved again

    @rule(label=st.sampled_from(["notes", "papers"]), name=names)
    def delete_file(self, label: str, name: str) -> None:
        if label in self.unplugged:
            return
        path = self.folder_of(label) / f"{name}.md"
        if path.is_file():
            path.unlink()

    @rule(label=st.sampled_from(["notes", "papers"]), old=names, new=names)
    def rename_file(self, label: str, old: str, new: str) -> None:
        if label in self.unplugged:
            return
        source, target = self.folder_of(label) / f"{old}.md", self.folder_of(label) / f"{new}.md"
        if source.is_file() and not target.exists():
            source.rename(target)

    @rule(label=st.sampled_from(["notes", "papers"]), name=names, text=texts)
    def replace_file_by_folder(self, label: str, name: str, text: str) -> None:
        if label in self.unplugged:
            return
        path = self.folder_of(label) / f"{name}.md"
        if path.is_file():
            path.unlink()
            path.mkdir()
            (path / "inside.txt").write_text(text)
        elif path.is_dir():
            shutil.rmtree(path)
            path.write_text(text)

    @rule(label=st.sampled_from(["notes", "papers"]))
    def symlink_into_the_other_source(self, label: str) -> None:
        if label in self.unplugged:
            return
        other = "papers" if label == "notes" else "notes"
        link = self.folder_of(label) / "link"
        if not os.path.lexists(link):
            link.symlink_to(self.folder_of(other), target_is_directory=True)

    @rule(label=st.sampled_from(["notes", "papers"]))
    def symlink_loop(self, label: str) -> None:
        if label in self.unplugged:
            return
        loop = self.folder_of(label) / "loop"
        if not os.path.lexists(loop):
            loop.symlink_to(loop)

    # --- the library -----------------------------------------------------------------------------

    @rule()
    def sync_all(self) -> None:
        self.sync()

    @rule(label=st.sampled_from(["notes", "papers"]), name=names)
    def sync_scoped(self, label: str, name: str) -> None:
        """What `--watch` does after a change: a sync limited to the changed paths."""
        if label in self.unplugged:
            return
        self.sync(scopes={label: [f"{name}.md", "sub"]})

    @rule()
    def rebuild(self) -> None:
        """Refused while a source cannot be read (unplugged: its chunks would be lost)."""
        if self.unplugged:
            before = stored(self.env.settings())
            with pytest.raises(ConfigError):
                self.sync(rebuild=True)
            assert stored(self.env.settings()) == before
        else:
            self.sync(rebuild=True)

    @rule()
    def rebuild_with_a_path_is_refused(self) -> None:
        before = stored(self.env.settings())
        with pytest.raises(ConfigError):
            self.sync([self.work / "notes"], rebuild=True)
        assert stored(self.env.settings()) == before

    @rule(label=st.sampled_from(["notes", "papers"]))
    def unplug(self, label: str) -> None:
        """The drive goes away; the mount point stays with a placeholder file in it."""
        if label in self.unplugged or label not in self.sources:
            return
        folder = self.folder_of(label)
        away = self.work / f"{label}-away"
        kept = {s: c for s, c in stored(self.env.settings()).items() if s.startswith(label + "/")}
        folder.rename(away)
        folder.mkdir()
        (folder / "NOT_MOUNTED").write_text("the drive is not mounted")
        self.unplugged[label] = (away, kept)

    @rule(label=st.sampled_from(["notes", "papers"]))
    def replug(self, label: str) -> None:
        if label not in self.unplugged:
            return
        away, _ = self.unplugged.pop(label)
        folder = self.folder_of(label)
        shutil.rmtree(folder)
        away.rename(folder)

    @rule(label=st.sampled_from(["extra"]))
    def add_and_remove_a_source(self, label: str) -> None:
        folder = self.work / label
        folder.mkdir(exist_ok=True)
        (folder / "x.md").write_text("kite moss extra")
        self.sync([folder])
        found = next(lab for lab, p in self.sources.items() if p == folder)
        before = stored(self.env.settings())
        remove_sources(self.env.settings(), MODEL, [str(folder)])
        del self.sources[found]
        self.check_store(lambda name: name.split("/", 1)[0] not in self.sources)
        self.check_untouched(before, {found})
        assert not [s for s in stored(self.env.settings()) if s.split("/", 1)[0] == found]

    # --- the running server ----------------------------------------------------------------------

    @rule(word=st.sampled_from(WORDS))
    def ask_the_server(self, word: str) -> None:
        server = self.env.serve()
        response = httpx.post(
            server.url + "/api/chat",
            json={"question": f"What about the {word}?"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        sources: list[dict[str, Any]] = []
        for block in response.text.split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if lines.get("event") == "sources":
                sources = json.loads(lines["data"])["sources"]
        stored_now = stored(self.env.settings())
        files = set(stored_now)
        for source in sources:
            assert source["file"] != "unknown", "a chunk id without its text was cited"
            assert source["file"] in files, f"{source['file']} is not in the library now"
        health = httpx.get(server.url + "/api/health", timeout=30).json()
        assert health["store"]["chunks"] == sum(sum(c.values()) for c in stored_now.values())

    @invariant()
    def nothing_pending_is_lost(self) -> None:
        assert set(self.unplugged) <= set(self.sources)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    shared = Env(tmp_path_factory.mktemp("library-state"))
    yield shared
    shared.close()


def test_library_holds_against_random_use(env: Env) -> None:
    LibraryMachine.env = env
    run = LibraryMachine.TestCase
    run.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not os.environ.get("LIBRARY_STATE_RANDOM"),
    )
    run().runTest()
