"""What "live" costs per question: `Resources.follow_library`, which every reader (chat, the
server, the MCP server, eval) calls before each question so that it answers from the library
as it is now, whoever wrote it.

    python benchmarks/live_follow.py [--sizes 1000 50000] [--calls 500] [--writes 5]

For each size, a library of that many chunks (text files split by the real ingest, vectors
from a deterministic fake 384-dimensional model, as all-MiniLM-L6-v2 has; Chroma in a
temporary CHROMA_DIR) is opened as a server opens it, then:

1. nothing changed: `follow_library()` called `--calls` times in a row (one `stat` of the
   database file and one read of the library record), and each part alone, against a search
   of the collection (k=8) for scale;
2. after a write: `--writes` times, another process edits one file and syncs (as
   `python -m app.ingest` does); then the reader's `follow_library()` (which reopens the Chroma
   client: the file changed), its first search (which loads the vector index again) and a
   second search: what the next question pays when it is the first to look;
3. the same with the server's `LibraryFollower` (app/api/service.py), which looks every second
   between questions and makes that first search itself: its work after each write, then what
   the next question pays (`follow_library()` and a search).

Results: stdout and benchmarks/results/live-follow.json (date, CPU as `lscpu` names it, load
average at start and end). docs/serving.md ("How the server follows writes") quotes them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.api.service import LibraryFollower  # noqa: E402
from app.config import Settings, load_settings  # noqa: E402
from app.evaluation.report import load_average, write_results  # noqa: E402
from app.indexing.sync import sync_collection  # noqa: E402
from app.models.embeddings import EmbeddingModelInfo, ModelEmbeddings  # noqa: E402
from app.session.resources import Resources  # noqa: E402
from app.store import open_store  # noqa: E402
from app.store.keyword_index import open_keyword_index  # noqa: E402
from app.store.library import Library, library_name  # noqa: E402
from tests.fakes import fake_embeddings  # noqa: E402

INFO = EmbeddingModelInfo("fake", "fake-384")
DIM = 384
CHUNKS_PER_FILE = 50
WORDS = [
    "harbour",
    "ferry",
    "lighthouse",
    "tide",
    "quay",
    "bell",
    "kite",
    "moss",
    "salt",
    "mole",
    "rope",
    "sail",
]
RESULT = ROOT / "benchmarks" / "results" / "live-follow.json"


def settings_for(root: Path) -> Settings:
    return load_settings(
        chroma_dir=root / "chroma",
        docs_dir=root / "docs",
        chunk_size=400,
        chunk_overlap=0,
        ingest_workers=1,
    )


def embeddings_for(settings: Settings) -> ModelEmbeddings:
    embeddings, _ = fake_embeddings(settings, INFO, DIM)
    return embeddings


def paragraph(file: int, number: int, version: int = 0) -> str:
    words = [WORDS[(file * 7 + number * 3 + i) % len(WORDS)] for i in range(50)]
    return f"File {file} part {number} version {version}: " + " ".join(words) + "."


def write_file(folder: Path, file: int, version: int = 0) -> None:
    text = "\n\n".join(paragraph(file, n, version) for n in range(CHUNKS_PER_FILE))
    (folder / f"f{file:05d}.txt").write_text(text, encoding="utf-8")


def build(root: Path, chunks: int) -> None:
    docs = root / "docs"
    docs.mkdir(parents=True)
    for file in range(max(1, chunks // CHUNKS_PER_FILE)):
        write_file(docs, file)
    settings = settings_for(root)
    sync_collection(settings, [docs], embeddings_for(settings))


def writer(root: str, version: int) -> None:
    """Another process: edit one file and sync, as `python -m app.ingest` does."""
    folder = Path(root)
    write_file(folder / "docs", 0, version)
    settings = settings_for(folder)
    sync_collection(settings, [], embeddings_for(settings))


def open_reader(root: Path) -> Resources:
    """The parts of a server's Resources that following the library touches."""
    settings = settings_for(root)
    embeddings = embeddings_for(settings)
    store = open_store(settings)
    library = Library.find(store, library_name(settings, embeddings.info.key))
    assert library is not None
    collection = library.collection()
    assert collection is not None
    index = open_keyword_index(settings, store, collection)
    return Resources(settings, embeddings, store, library, collection, index, None, None)  # type: ignore[arg-type]


def timed(call: Callable[[], Any], times: int) -> list[float]:
    seconds = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "max_ms": round(ms[-1], 3),
    }


def measure(chunks: int, calls: int, writes: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="live-follow-"))
    try:
        started = time.perf_counter()
        build(root, chunks)
        built = time.perf_counter() - started
        reader = open_reader(root)
        reader.follow_library()  # the first look counts as a change
        stored = reader.collection.count()
        query = reader.embeddings.embed_query("When does the ferry leave the harbour?")

        def search() -> None:
            reader.collection.search(query, 8)

        search()  # the index is loaded
        unchanged = {
            "follow_library": summary(timed(reader.follow_library, calls)),
            "stat_only": summary(timed(reader.store.refresh, calls)),
            "record_read_only": summary(timed(reader.library.reload, calls)),
            "keyword_index_check": summary(
                timed(lambda: reader.keyword_index.behind(reader.library.record), calls)
            ),
            "search_k8": summary(timed(search, min(calls, 200))),
        }
        context = multiprocessing.get_context("spawn")
        version = 0

        def another_process_writes() -> None:
            nonlocal version
            version += 1
            process = context.Process(target=writer, args=(str(root), version))
            process.start()
            process.join()
            assert process.exitcode == 0

        follow, first, second = [], [], []
        for _ in range(writes):
            another_process_writes()
            start = time.perf_counter()
            assert reader.follow_library()  # it saw the write
            follow.append(time.perf_counter() - start)
            first += timed(search, 1)
            second += timed(search, 1)
            found = reader.collection.search(query, 8)
            assert all(chunk.text for chunk in found)
        follower = LibraryFollower(reader, interval=1.0)

        def ask() -> None:  # what a question does with the library: look, then search
            reader.follow_library()
            search()

        background, question = [], []
        for _ in range(writes):
            another_process_writes()
            start = time.perf_counter()
            assert reader.follow_library()
            follower.warm()
            background.append(time.perf_counter() - start)
            question += timed(ask, 1)
        print(
            f"{stored:,} chunks (built in {built:.0f} s): follow_library unchanged "
            f"{unchanged['follow_library']['median_ms']} ms, after a write "
            f"{summary(follow)['median_ms']} ms + first search {summary(first)['median_ms']} ms "
            f"(steady search {unchanged['search_k8']['median_ms']} ms); with the follower: "
            f"{summary(background)['median_ms']} ms in the background, then the question "
            f"{summary(question)['median_ms']} ms",
            flush=True,
        )
        return {
            "chunks": stored,
            "files": max(1, chunks // CHUNKS_PER_FILE),
            "build_seconds": round(built, 1),
            "unchanged": unchanged,
            "after_write": {
                "writes": writes,
                "follow_library": summary(follow),
                "first_search": summary(first),
                "second_search": summary(second),
            },
            "after_write_with_follower": {
                "writes": writes,
                "follower_work": summary(background),
                "next_question_follow_and_search": summary(question),
            },
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lscpu_model() -> str | None:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description="What following the library costs per question (Resources.follow_library): "
        "nothing changed, and after another process wrote, at each library size."
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 50000], metavar="CHUNKS")
    parser.add_argument("--calls", type=int, default=500, help="calls when nothing changed")
    parser.add_argument("--writes", type=int, default=5, help="writes by another process")
    parser.add_argument("--json", type=Path, default=RESULT, help=f"results (default {RESULT})")
    args = parser.parse_args()
    load_start = load_average()
    sizes = [measure(size, args.calls, args.writes) for size in args.sizes]
    write_results(
        args.json,
        load_start,
        lscpu_model_name=lscpu_model(),
        command="python benchmarks/live_follow.py " + " ".join(sys.argv[1:]),
        embedding_dimension=DIM,
        sizes=sizes,
    )
    print(f"Results in {args.json}")


if __name__ == "__main__":
    main()
