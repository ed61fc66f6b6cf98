"""Hostile input: every bad file is skipped with a reason, every good file still goes in.

The CLI tests run the real `python -m app.ingest` against the Ollama test server and read the
Chroma store back. The pool tests call `parse_in_workers` directly with files whose reading is
made pathological (a read that never returns, one that allocates gigabytes, one that kills its
process), since no real parser hangs on demand.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PosixPath
from typing import Any

import pytest

from app.config import load_settings
from app.paths import SAMPLE_DOCS_DIR
from loaders.discovery import SourceFile, discover
from loaders.parsers import UnreadableFile, decode_text
from loaders.pool import Failed, Parsed, PoolLimits, parse_in_workers
from tests.ollama_server import OllamaTestServer
from tests.test_sync import fresh_store

# The command and the worker pool run for real; the discovery and decoding tests are fast and
# marked unit as well.
pytestmark = pytest.mark.integration

GOOD_FILES = {
    "about-brindlemoor.md": SAMPLE_DOCS_DIR / "about-brindlemoor.md",
    "annual-report-2024.pdf": SAMPLE_DOCS_DIR / "observatory" / "annual-report-2024.pdf",
    "agm-minutes-2024.docx": SAMPLE_DOCS_DIR / "ferry" / "agm-minutes-2024.docx",
}
LEGACY_TEXT = "Menu at the quay café – naïve “quotes” and crème brûlée, 4 € a slice.\n"  # noqa: RUF001
# Limits for the CLI runs: every good file is well under both (the .docx declares 0.8 MB
# uncompressed), and small limits keep the hostile files small and quick to make.
LIMITS = {"MAX_FILE_MB": "0.1", "MAX_UNZIPPED_MB": "2"}
IS_ROOT = os.geteuid() == 0

# source -> words the reason must contain (case-insensitive)
EXPECTED_FAILURES = {
    "truncated.pdf": ["damaged pdf"],
    "random-bytes.txt": ["binary"],
    "empty.md": ["empty"],
    "too-big.txt": ["size limit", "MAX_FILE_MB"],
    "zip-bomb.docx": ["uncompressed", "zip bomb"],
    "data.xyz": ["unsupported", ".xyz"],
    "notes.txt": ["symbolic link", "outside the root"],
    "elsewhere-link": ["symbolic link", "outside the root"],
    "pipe.txt": ["not a regular file"],
    "bad-name-\ufffd.txt": ["not valid utf-8"],
}
if not IS_ROOT:  # root reads any file whatever its mode
    EXPECTED_FAILURES["locked.md"] = ["permission denied"]


def make_zip_bomb(docx: Path, target: Path, inflated_mb: int) -> None:
    """A real .docx plus an entry of `inflated_mb` MB of zeros: ~1 KB per MB on disk."""
    with (
        zipfile.ZipFile(docx) as source,
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb,
    ):
        for info in source.infolist():
            bomb.writestr(info, source.read(info))
        block = bytes(2**20)
        with bomb.open("word/media/padding.bin", "w", force_zip64=True) as entry:
            for _ in range(inflated_mb):
                entry.write(block)


def copy_good_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in GOOD_FILES.items():
        shutil.copy(path, folder / name)


@pytest.fixture
def hostile_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "hostile"
    copy_good_files(folder)
    pdf = GOOD_FILES["annual-report-2024.pdf"].read_bytes()
    (folder / "truncated.pdf").write_bytes(pdf[: len(pdf) // 2])
    (folder / "random-bytes.txt").write_bytes(os.urandom(4000) + b"\x00" + os.urandom(4000))
    (folder / "empty.md").write_bytes(b"")
    legacy = LEGACY_TEXT.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        legacy.decode("utf-8")
    (folder / "legacy-cp1252.txt").write_bytes(legacy)
    (folder / "too-big.txt").write_text("A harbour town on the estuary. " * 5000)  # 155 KB
    make_zip_bomb(GOOD_FILES["agm-minutes-2024.docx"], folder / "zip-bomb.docx", inflated_mb=8)
    assert (folder / "zip-bomb.docx").stat().st_size < 0.1 * 2**20
    (folder / "data.xyz").write_bytes(b"a format nobody parses")
    locked = folder / "locked.md"
    locked.write_text("# Locked\n\nNobody may read this file.\n")
    locked.chmod(0)
    (folder / "notes.txt").symlink_to("/etc/passwd")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "smuggled.md").write_text("# Smuggled\n\nThis file lives outside the root.\n")
    (folder / "elsewhere-link").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(folder / "pipe.txt")  # opening it would block for ever
    with open(os.fsencode(folder) + b"/bad-name-\xff.txt", "wb") as handle:
        handle.write(b"A file whose name is not UTF-8.\n")
    (folder / ".secret.md").write_text("# Secret\n\nHidden files stay out.\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "config.md").write_text("# Config\n\nHidden folders stay out.\n")
    yield folder
    locked.chmod(0o644)


def ingest(run_module: Callable[..., Any], folder: Path | None, server: OllamaTestServer) -> Any:
    """`python -m app.ingest [FOLDER] --json` (no folder: every source) on the test server."""
    return run_module(
        "app.ingest",
        *([str(folder)] if folder else []),
        "--json",
        EMBEDDING_PROVIDER="ollama",
        OLLAMA_BASE_URL=server.base_url,
        **LIMITS,
    )


def stored_documents(collection_name: str) -> dict[str, list[str]]:
    """source (after the folder's label) -> the chunks the store holds for it."""
    collection = fresh_store(load_settings()).collection(collection_name)
    assert collection is not None, collection_name
    documents: dict[str, list[str]] = {}
    for chunk in collection.get([chunk_id for chunk_id, _ in collection.rows()]):
        inside = str(chunk.metadata["source"]).partition("/")[2]
        documents.setdefault(inside, []).append(chunk.text)
    return documents


# --- The CLI on a folder of hostile files ---------------------------------------------------


@pytest.mark.timeout(300)
def test_hostile_files_are_skipped_with_reasons_and_good_files_go_in(
    run_module: Callable[..., Any], hostile_folder: Path, ollama_server: OllamaTestServer
) -> None:
    result = ingest(run_module, hostile_folder, ollama_server)

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    failed = {item["source"].partition("/")[2]: item["reason"] for item in report["failed"]}
    assert set(failed) == set(EXPECTED_FAILURES), failed
    for source, words in EXPECTED_FAILURES.items():
        for word in words:
            assert word.lower() in failed[source].lower(), (source, failed[source])
    assert report["files"]["failed"] == len(EXPECTED_FAILURES)

    stored = stored_documents(report["collection"])
    ingested = {*GOOD_FILES, "legacy-cp1252.txt"} | ({"locked.md"} if IS_ROOT else set())
    assert set(stored) == ingested  # nothing hidden, nothing from behind a link
    legacy = "\n".join(stored["legacy-cp1252.txt"])
    for word in ("café", "naïve", "“quotes”", "crème brûlée", "4 €"):
        assert word in legacy


@pytest.mark.timeout(300)
def test_a_folder_of_good_files_exits_0(
    run_module: Callable[..., Any], tmp_path: Path, ollama_server: OllamaTestServer
) -> None:
    copy_good_files(tmp_path / "good")
    (tmp_path / "good" / "legacy-cp1252.txt").write_bytes(LEGACY_TEXT.encode("cp1252"))

    result = ingest(run_module, tmp_path / "good", ollama_server)

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == []
    assert set(stored_documents(report["collection"])) == {*GOOD_FILES, "legacy-cp1252.txt"}


def make_too_long_path(folder: Path, name: str = "d" * 250, depth: int = 18) -> None:
    """Folders nested until the path is longer than the system allows (PATH_MAX, 4096 on
    Linux), with a file at the bottom: made one level at a time, relative to each folder."""
    here = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=here)
            inner = os.open(name, os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = inner
        made = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=here)
        os.write(made, b"A file no path can reach.\n")
        os.close(made)
    finally:
        os.close(here)
    assert len(str(folder)) + depth * (len(name) + 1) > os.pathconf(folder, "PC_PATH_MAX")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("odd", ["link loop", "path too long"])
def test_a_link_loop_or_a_too_long_path_is_skipped_with_a_reason(
    run_module: Callable[..., Any], tmp_path: Path, ollama_server: OllamaTestServer, odd: str
) -> None:
    """No traceback: the path is reported as skipped with the system's reason, the other files
    go in, and later runs do the same (nothing is re-embedded)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "good.txt").write_text("The harbour master keeps the tide tables.\n")
    if odd == "link loop":
        (folder / "loop").symlink_to(folder / "loop")
        (folder / "ping").symlink_to("pong")
        (folder / "pong").symlink_to("ping")
        expected = {"loop": "symbolic link", "ping": "symbolic link", "pong": "symbolic link"}
    else:
        make_too_long_path(folder)
        expected = {"d" * 250: "path too long for the system (ENAMETOOLONG)"}

    for run in (1, 2):
        result = ingest(run_module, folder if run == 1 else None, ollama_server)

        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 3, result.stderr
        report = json.loads(result.stdout)
        # source (inside the folder, its first part: a too long one is cut where it failed)
        failed = {item["source"].split("/")[1]: item["reason"] for item in report["failed"]}
        assert len(failed) == len(report["failed"]) == len(expected), report["failed"]
        assert set(failed) == set(expected), failed
        for name, words in expected.items():
            assert words in failed[name], failed
        assert report["files"]["new" if run == 1 else "unchanged"] == 1
        assert report["chunks"]["added"] == (1 if run == 1 else 0)
    assert set(stored_documents(report["collection"])) == {"good.txt"}


def test_a_source_path_that_is_not_utf8_is_refused_readably(
    run_module: Callable[..., Any], tmp_path: Path, ollama_server: OllamaTestServer
) -> None:
    """Its name could be neither stored nor shown faithfully: exit 2, the name shown with
    U+FFFD for the bad bytes, nothing written."""
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9-notes"))
    folder.mkdir()
    (folder / "menu.txt").write_text("Crab soup on Fridays.\n")

    result = ingest(run_module, folder, ollama_server)

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "caf\ufffd-notes" in message
    assert "is not valid UTF-8" in message
    assert fresh_store(load_settings()).record_names() == []  # no library was started


@pytest.mark.unit
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    if IS_ROOT:
        pytest.skip("root can read a file whatever its mode")
    (tmp_path / "locked.md").write_text("# Locked\n")
    (tmp_path / "locked.md").chmod(0)
    (tmp_path / "shut").mkdir()
    (tmp_path / "shut" / "inside.md").write_text("# Inside\n")
    (tmp_path / "shut").chmod(0)
    try:
        found = discover(tmp_path)
    finally:
        (tmp_path / "shut").chmod(0o755)
    reasons = {s.source: s.reason for s in found.skipped}
    assert "permission denied" in reasons["locked.md"]
    assert "cannot be read" in reasons["shut"]
    assert found.files == []


# --- The worker pool: time and memory limits ------------------------------------------------
# Workers unpickle these Path subclasses, so they import this module: keep it light.


class HangingPath(PosixPath):
    """A file whose reading never returns, like a parser caught in an endless loop."""

    def read_bytes(self) -> bytes:
        while True:
            time.sleep(60)


class GreedyPath(PosixPath):
    """A file whose reading asks for 2 GiB, like a parser inflating a bomb."""

    def read_bytes(self) -> bytes:
        return bytes(2 * 2**30)  # without a memory limit: 2 GiB of NULs, "binary data"


class KillerPath(PosixPath):
    """A file whose parser dies, as one does when the kernel's OOM killer picks it."""

    def read_bytes(self) -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class PidPath(PosixPath):
    """A file whose text names the process that read it."""

    def read_bytes(self) -> bytes:
        return f"Read by process {os.getpid()}.".encode()


def text_file(folder: Path, name: str, path_type: type[Path] = Path) -> SourceFile:
    path = folder / name
    path.write_text(f"The file {name}, with a sentence of text in it.\n")
    return SourceFile(path_type(path), name)


def parse_all(files: list[SourceFile], limits: PoolLimits) -> dict[str, Parsed | Failed]:
    return {result.file.source: result for result in parse_in_workers(files, limits)}


@pytest.mark.timeout(60)
def test_a_hung_parser_is_stopped_at_parse_timeout(tmp_path: Path) -> None:
    # One worker: the good files can only be parsed once the hung one has been stopped.
    files = [
        text_file(tmp_path, "before.txt"),
        text_file(tmp_path, "hangs.txt", HangingPath),
        text_file(tmp_path, "after.txt"),
    ]
    started = time.monotonic()
    results = parse_all(files, PoolLimits(workers=1, timeout_seconds=1, memory_mb=512))

    assert time.monotonic() - started < 30
    hung = results["hangs.txt"]
    assert isinstance(hung, Failed)
    assert "longer than 1 s (PARSE_TIMEOUT)" in hung.reason
    for name in ("before.txt", "after.txt"):
        assert isinstance(results[name], Parsed), results[name]


@pytest.mark.timeout(60)
def test_a_parser_that_blows_memory_is_stopped_by_parse_memory_mb(tmp_path: Path) -> None:
    # One worker, so the files are parsed in this order.
    files = [
        text_file(tmp_path, "first.txt", PidPath),
        text_file(tmp_path, "greedy.txt", GreedyPath),
        text_file(tmp_path, "second.txt", PidPath),
        text_file(tmp_path, "killed.txt", KillerPath),
        text_file(tmp_path, "third.txt", PidPath),
    ]
    results = parse_all(files, PoolLimits(workers=1, timeout_seconds=30, memory_mb=256))

    greedy, killed = results["greedy.txt"], results["killed.txt"]
    assert isinstance(greedy, Failed)
    assert "more memory than PARSE_MEMORY_MB (256 MB)" in greedy.reason, greedy.reason
    assert isinstance(killed, Failed)
    assert "killed (SIGKILL)" in killed.reason
    assert "PARSE_MEMORY_MB" in killed.reason
    # After each failure the files go on, in a fresh worker: a failed allocation may have
    # left the old one half-initialised.
    readers = []
    for name in ("first.txt", "second.txt", "third.txt"):
        result = results[name]
        assert isinstance(result, Parsed), result
        readers.append(result.documents[0].page_content)
    assert len(set(readers)) == 3, readers


@pytest.mark.timeout(120)
def test_office_and_email_text_keeps_its_structure() -> None:
    """Tables keep their rows, emails their headers, slides their numbers."""
    names = {
        "agm.docx": SAMPLE_DOCS_DIR / "ferry" / "agm-minutes-2024.docx",
        "perseids.eml": SAMPLE_DOCS_DIR / "observatory" / "perseids-volunteers.eml",
        "guide.pptx": SAMPLE_DOCS_DIR / "observatory" / "visitor-guide.pptx",
    }
    results = parse_all([SourceFile(p, name) for name, p in names.items()], PoolLimits())
    docs = {}
    for name, result in results.items():
        assert isinstance(result, Parsed), result
        docs[name] = result.documents

    assert "Kittiwake Dawn | 88 | 580 | March 2026" in docs["agm.docx"][0].page_content
    email = docs["perseids.eml"][0].page_content
    assert email.startswith("Subject: Perseids watch party, mirror cleaning")
    assert "From: Juniper Ashcombe" in email
    assert "Dear volunteers" in email
    assert [d.metadata["page"] for d in docs["guide.pptx"]] == [1, 2, 3, 4, 5]


# --- Discovery --------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top.md").write_text("# Top\n")
    (root / "a" / "b" / "deep.txt").write_text("deep\n")
    (root / ".secret.md").write_text("# Secret\n")
    (root / ".git").mkdir()
    (root / ".git" / "config.md").write_text("# Config\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwords.txt").write_text("hunter2\n")
    (root / "notes.txt").symlink_to(outside / "passwords.txt")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "a" / "again.md").symlink_to(root / "top.md")
    return root


@pytest.mark.unit
def test_discovery_never_follows_links(tree: Path) -> None:
    found = discover(tree)
    reasons = {s.source: s.reason for s in found.skipped}

    assert "outside the root" in reasons["notes.txt"]
    assert "outside the root" in reasons["escape"]
    assert "symbolic link" in reasons["a/again.md"]
    assert all(tree in f.path.parents for f in found.files)
    assert all(not f.path.is_symlink() for f in found.files)
    assert "passwords.txt" not in {f.path.name for f in found.files}


@pytest.mark.unit
def test_discovery_names_files_relative_to_the_root_with_forward_slashes(tree: Path) -> None:
    assert [f.source for f in discover(tree).files] == ["a/b/deep.txt", "top.md"]
    # In the library every name starts with its source's label; a file source is its label.
    assert [f.source for f in discover(tree, "notes").files] == [
        "notes/a/b/deep.txt",
        "notes/top.md",
    ]
    assert [f.source for f in discover(tree / "top.md", "top.md").files] == ["top.md"]


@pytest.mark.unit
def test_discovery_within_finds_what_the_whole_walk_finds_there(tree: Path) -> None:
    """A watcher's scoped look sees each path exactly as the full walk would: hidden names and
    anything under a link stay out, a path that is gone yields nothing."""
    whole = {f.source for f in discover(tree, "t").files}
    for within in (["a"], ["a/b/deep.txt"], ["top.md", "a/b"], [""]):
        found = {f.source for f in discover(tree, "t", within=within).files}
        prefixes = tuple(f"t/{w}" for w in within)
        assert found == {s for s in whole if s.startswith(prefixes)}, within
    assert discover(tree, "t", within=[".secret.md", ".git/config.md"]).files == []
    assert discover(tree, "t", within=["escape/passwords.txt", "notes.txt"]).files == []
    assert discover(tree, "t", within=["gone.md", "a/gone"]).files == []


@pytest.mark.unit
def test_discovery_skips_hidden_files_silently_unless_asked(tree: Path) -> None:
    found = discover(tree)
    names = {f.source for f in found.files} | {s.source for s in found.skipped}
    assert not any(name.startswith(".") for name in names)

    with_hidden = {f.source for f in discover(tree, include_hidden=True).files}
    assert {".secret.md", ".git/config.md"} <= with_hidden


@pytest.mark.unit
def test_discovery_reports_odd_entries_without_opening_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.md")
    with open(os.fsencode(root) + b"/caf\xe9.md", "wb") as handle:  # a latin-1 file name
        handle.write(b"# Cafe\n")
    (root / "link.md").symlink_to(root / "pipe.md")

    found = discover(root)
    reasons = {s.source: s.reason for s in found.skipped}
    assert found.files == []
    assert reasons == {
        "pipe.md": "not a regular file",
        "caf\ufffd.md": "file name is not valid UTF-8; rename the file",
        "link.md": "symbolic link (links are not followed)",
    }


@pytest.mark.unit
def test_discovery_reads_a_root_that_is_a_link(tmp_path: Path) -> None:
    """What the user names is read; only links found inside a root are not followed."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "guide.md").write_text("# Guide\n")
    (tmp_path / "docs").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "named.md").symlink_to(tmp_path / "real" / "guide.md")

    assert [f.source for f in discover(tmp_path / "docs").files] == ["guide.md"]
    named = discover(tmp_path / "named.md")
    assert [(f.path, f.source) for f in named.files] == [(tmp_path / "named.md", "named.md")]


# --- Decoding and parsing text ----------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param("\ufeffcafé naïve".encode(), "café naïve", id="utf-8 with BOM"),
        pytest.param("café naïve".encode(), "café naïve", id="utf-8"),
        pytest.param(LEGACY_TEXT.encode("cp1252"), LEGACY_TEXT, id="cp1252"),
        # 0x81 is undefined in cp1252: latin-1 decodes every byte.
        pytest.param(
            "Ærøskøbing og Æbeltoft \x81".encode("latin-1"),
            "Ærøskøbing og Æbeltoft \x81",
            id="latin-1 fallback",
        ),
        pytest.param("naïve ☃".encode("utf-16"), "naïve ☃", id="utf-16 with BOM"),
        pytest.param(b"\xfe\xff" + "naïve ☃".encode("utf-16-be"), "naïve ☃", id="utf-16-be"),
    ],
)
def test_decode_text(data: bytes, text: str) -> None:
    assert decode_text(data) == text


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"text\x00with a NUL", "NUL bytes", id="NUL bytes"),
        pytest.param(bytes(range(1, 256)) * 8, "control characters", id="binary without NULs"),
        pytest.param(b"\xff\xfeodd", "UTF-16", id="damaged utf-16"),
    ],
)
def test_decode_text_refuses_binary_data(data: bytes, reason: str) -> None:
    with pytest.raises(UnreadableFile, match=reason):
        decode_text(data)
