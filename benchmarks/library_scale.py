"""A library of N generated files, synced as a user syncs it: times, CPU and peak memory per step.

    python benchmarks/library_scale.py --files 10000
    python benchmarks/library_scale.py --files 100000 --seeded-catalog
    python benchmarks/library_scale.py --files 1000 --provider local   # the embedded MiniLM

The library is generated from a seed: nested folders (two top folders, `half-a` and `half-b`,
each a source), small .txt/.md/.html files of words, 1% large ones (20-60 KB), 3% exact
duplicates of another file and 0.5% of an unsupported type (skipped). Each step runs as a real
`python -m app.ingest ...` in a fresh process (through benchmarks/support/hashing_embedder.py,
which registers the fast deterministic `hashing` embedding provider first, so what is timed is the
app's own work; `--provider local` embeds with the app's model instead). Per step: wall seconds,
CPU seconds and peak RSS of the process and the parse workers it reaped (`os.wait4`), and what
the step reported (`--json`: files, chunks, per-stage seconds). Steps:

1. full ingest of both sources (files/s, chunks/s, stages);
2. re-sync with nothing changed (it must read no file: 0 new, 0 changed);
3. `--edit` files edited (a line appended), re-sync;
4. `--list`, `--files`;
5. `--watch`: start-up (until it says it is watching), then a new file saved -> its row in the
   file catalog with its chunks (the sync writes the row after the chunks and the keyword
   index: the file is answerable from then on);
6. `--rebuild` (skipped with --seeded-catalog or --no-rebuild), then `--remove` of `half-a`.

`--seeded-catalog` builds the library in one Python process instead of step 1, with the app's own
sync whose parse step reads each file's text directly (no parser pool, no unstructured; vectors
from the hashing embedder): the state a full ingest leaves (record, chunks, keyword index, file
catalog) for measuring steps 2-6 at 100,000 files without hours of parsing.

Results: benchmarks/results/library-scale-N.json (machine, load averages before and after) and
a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.evaluation.report import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks.support, for the seeded build
RESULTS = ROOT / "benchmarks" / "results"
SOURCES = ("half-a", "half-b")
EMBEDDER = "benchmarks.support.hashing_embedder"  # registers `hashing`, then runs app.ingest
PER_FOLDER = 50
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "ta",
    "so",
    "vi",
    "de",
    "pa",
    "gu",
    "ze",
    "fo",
    "hi",
    "ja",
    "be",
    "ni",
    "wo",
    "ly",
    "xe",
]


# --- the library ----------------------------------------------------------------------------


def vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    return ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(size)]


def text_of(rng: random.Random, words: list[str], chars: int) -> str:
    out: list[str] = []
    length = 0
    while length < chars:
        sentence = " ".join(rng.choices(words, k=rng.randint(6, 16))).capitalize() + "."
        out.append(sentence)
        length += len(sentence) + 1
    paragraphs = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paragraphs)


def render(kind: str, title: str, body: str) -> str:
    if kind == "md":
        parts = body.split("\n\n")
        return f"# {title}\n\n" + "\n\n".join(
            f"## Part {i}\n\n{p}" if i % 3 == 2 else p for i, p in enumerate(parts)
        )
    if kind == "html":
        paragraphs = "".join(f"<p>{p}</p>\n" for p in body.split("\n\n"))
        head = f"<html><head><title>{title}</title></head>"
        return f"{head}<body><h1>{title}</h1>\n{paragraphs}</body></html>\n"
    return f"{title}\n\n{body}\n"


def generate(root: Path, count: int, seed: int) -> dict[str, Any]:
    """`count` files under root/half-a and root/half-b; returns what was made."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    made: list[str] = []
    skipped = duplicates = large = 0
    texts: list[str] = []
    for i in range(count):
        source = SOURCES[i % 2]
        n = i // 2
        folder = root / source / f"d{n // (PER_FOLDER * 20):03d}" / f"s{(n // PER_FOLDER) % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        roll = rng.random()
        if roll < 0.005:
            path = folder / f"f{i:06d}.bin"
            path.write_bytes(rng.randbytes(64))
            skipped += 1
            made.append(str(path.relative_to(root)))
            continue
        kind = rng.choices(["txt", "md", "html"], weights=[6, 3, 1])[0]
        path = folder / f"f{i:06d}.{kind}"
        if roll < 0.035 and texts:
            path.write_text(rng.choice(texts))
            duplicates += 1
        else:
            chars = rng.randint(20_000, 60_000) if roll > 0.99 else rng.randint(200, 2_400)
            large += roll > 0.99
            content = render(kind, f"Document {i}", text_of(rng, words, chars))
            path.write_text(content)
            if len(texts) < 200:
                texts.append(content)
        made.append(str(path.relative_to(root)))
    return {"files": count, "skipped": skipped, "duplicates": duplicates, "large": large}


def edit(root: Path, count: int, seed: int) -> list[Path]:
    """Append a line to `count` supported files (seeded choice)."""
    rng = random.Random(seed + 1)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".md"))
    chosen = rng.sample(files, min(count, len(files)))
    for path in chosen:
        with path.open("a") as handle:
            handle.write(f"\nEdited at {time.time_ns()}: the ferry timetable changed.\n")
    return chosen


# --- running a step -------------------------------------------------------------------------


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", EMBEDDER, *args]


def run_step(name: str, args: list[str], env: dict[str, str], work: Path) -> dict[str, Any]:
    """One `python -m app.ingest ARGS` in a fresh process: wall, CPU, peak RSS, its JSON."""
    out, err = work / f"{name}.out", work / f"{name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command(args), env=env, stdout=stdout, stderr=stderr, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {
        "step": name,
        "command": "python -m app.ingest " + " ".join(args),
        "exit": process.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    if process.returncode not in (0, 3):
        raise SystemExit(f"{name} failed ({process.returncode}):\n{err.read_text()[-3000:]}")
    if "--json" in args:
        row["report"] = json.loads(out.read_text())
    return row


def summarize(row: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an ingest report worth a table: files, chunks, stage seconds."""
    report = row.pop("report")
    row["files"] = report["files"]
    row["chunks"] = report["chunks"]
    row["stages_s"] = report["seconds"]
    return row


def catalog_chunks(store: Path, name: str) -> int | None:
    """Chunks the file catalog records for `name` (None: no row yet), read-only."""
    for path in (store / "catalog").rglob("*.sqlite3"):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                found = db.execute("SELECT chunks FROM files WHERE name = ?", (name,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            continue
        if found is not None and found[0]:
            return int(found[0])
    return None


def watch_step(env: dict[str, str], work: Path, library: Path, store: Path) -> dict[str, Any]:
    """`--watch`: seconds until it watches, then from a new file saved to its chunks listed."""
    out = work / "watch.out"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            command(["--watch"]),
            env=env | {"WATCH_DEBOUNCE": "0.5"},
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            startup = _wait_for(lambda: "Watching" in out.read_text(), process, 1800)
            time.sleep(1.0)  # the notifier arms after the line is printed
            new = library / SOURCES[1] / "watched" / "saved-now.md"
            new.parent.mkdir(exist_ok=True)
            new.write_text("# Saved now\n\nThe lighthouse keeper logged a new ferry crossing.\n")
            name = f"{SOURCES[1]}/watched/saved-now.md"
            # From the save (_wait_for counts from its own start, right after it).
            answerable_s = _wait_for(lambda: catalog_chunks(store, name) is not None, process, 600)
        finally:
            process.send_signal(signal.SIGINT)
            _, _, usage = os.wait4(process.pid, 0)
    return {
        "step": "watch",
        "command": "python -m app.ingest --watch (WATCH_DEBOUNCE=0.5)",
        "startup_s": round(startup, 3),
        "saved_to_answerable_s": round(answerable_s, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def _wait_for(done: Any, process: subprocess.Popen[bytes], limit: float) -> float:
    start = time.perf_counter()
    while not done():
        if process.poll() is not None:
            raise SystemExit(f"--watch ended early ({process.returncode})")
        if time.perf_counter() - start > limit:
            raise SystemExit("--watch: timed out")
        time.sleep(0.05)
    return time.perf_counter() - start


# --- seeded state ---------------------------------------------------------------------------


def seed_in_child(library: Path, env: dict[str, str]) -> dict[str, Any]:
    """`seed_library` in a spawned process: on Linux a child's peak RSS (ru_maxrss) starts from
    its parent's at fork, so a build of 1 GB in this process would be every later step's peak."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return dict(pool.apply(seed_library, (library, env)))


def seed_library(library: Path, env: dict[str, str]) -> dict[str, Any]:
    """The state a full ingest leaves, made by the app's sync with a direct text read in place
    of the parser pool (see the module's docstring). The environment and the parser are this
    process's again afterwards (the smoke test runs it inside the test session)."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return _seed(library)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _seed(library: Path) -> dict[str, Any]:
    from langchain_core.documents import Document

    from app.config import load_settings
    from app.console import status
    from app.indexing import sync
    from app.models.registry import build_embeddings
    from loaders.parsers import FileDocuments
    from loaders.pool import Failed, Parsed

    # By name, as the app loads a provider (mypy sees the file as a script of its own).
    importlib.import_module(EMBEDDER).register()

    def read_directly(files: list[Any], limits: Any) -> Iterator[Parsed | Failed]:
        for file in files:
            text = file.path.read_text(errors="replace").strip()
            if not text:
                yield Failed(file, "no text found in the file")
                continue
            kind = file.path.suffix.lstrip(".")
            yield Parsed(
                file,
                FileDocuments([Document(text, metadata={"source": file.source, "type": kind})]),
            )

    parse_in_workers = sync.parse_in_workers
    sync.parse_in_workers = read_directly
    try:
        settings = load_settings()
        embeddings, _ = build_embeddings(settings, status)
        start = time.perf_counter()
        report = sync.sync_collection(settings, [library / s for s in SOURCES], embeddings)
    finally:
        sync.parse_in_workers = parse_in_workers
    return {
        "step": "seeded build (one Python process, direct text read)",
        "wall_s": round(time.perf_counter() - start, 3),
        "files": report.as_dict()["files"],
        "chunks": report.as_dict()["chunks"],
    }


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=10_000, help="files in the library")
    parser.add_argument("--edit", type=int, default=300, help="files edited between syncs")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--provider", default="hashing", help="hashing (default) or local")
    parser.add_argument("--seeded-catalog", action="store_true", help="build step 1 directly")
    parser.add_argument("--no-rebuild", action="store_true", help="skip --rebuild")
    parser.add_argument("--no-watch", action="store_true", help="skip --watch")
    parser.add_argument("--workdir", type=Path, help="keep the library and store here")
    parser.add_argument("--output", type=Path, help="JSON results file")
    args = parser.parse_args(argv)

    info: dict[str, Any] = {"machine": machine(), "load_average_start": load_average()}
    info["settings"] = {k: v for k, v in vars(args).items() if k not in ("workdir", "output")}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="library-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    library, store, logs = work / "library", work / "store", work / "logs"
    for folder in (library, store):
        shutil.rmtree(folder, ignore_errors=True)
    logs.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "LOCALRAG_ENV_FILE": os.devnull,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "CHROMA_DIR": str(store),
        "EMBEDDING_PROVIDER": args.provider,
        "COLLECTION_NAME": "",
    }
    steps: list[dict[str, Any]] = []
    info["steps"] = steps
    output = args.output or RESULTS / f"library-scale-{args.files}.json"
    output.parent.mkdir(parents=True, exist_ok=True)

    def done(row: dict[str, Any]) -> None:
        """Keep a step's figures (the file too: a run stopped later keeps what it measured)."""
        steps.append(row)
        print(json.dumps(row), flush=True)
        output.write_text(json.dumps(info, indent=2) + "\n")

    try:
        start = time.perf_counter()
        info["library"] = generate(library, args.files, args.seed)
        info["library"]["generate_s"] = round(time.perf_counter() - start, 1)
        print(f"generated {args.files} files in {info['library']['generate_s']} s", flush=True)
        paths = [str(library / s) for s in SOURCES]
        if args.seeded_catalog:
            done(seed_in_child(library, env))
        else:
            done(summarize(run_step("full", [*paths, "--json"], env, logs)))
        done(summarize(run_step("unchanged", ["--json"], env, logs)))
        edited = edit(library, args.edit, args.seed)
        row = summarize(run_step(f"edited {len(edited)}", ["--json"], env, logs))
        done(row | {"edited": len(edited)})
        listed = run_step("list", ["--list", "--json"], env, logs)
        listed["sources"] = len(listed.pop("report")["sources"])
        done(listed)
        shown = run_step("files", ["--files", "--json"], env, logs)
        report = shown.pop("report")
        shown["files_listed"] = len(report["files"])
        shown["counts"] = report["counts"]
        done(shown)
        if not args.no_watch:
            done(watch_step(env, logs, library, store))
        if not (args.no_rebuild or args.seeded_catalog):
            done(summarize(run_step("rebuild", ["--rebuild", "--json"], env, logs)))
        removed = run_step("remove half", ["--remove", paths[0], "--json"], env, logs)
        removed["chunks_removed"] = removed.pop("report")["chunks_removed"]
        done(removed)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    info["load_average_end"] = load_average()
    output.write_text(json.dumps(info, indent=2) + "\n")
    print(f"\nwrote {output}\n")
    print(table(info))
    return info


def table(info: dict[str, Any]) -> str:
    lines = [
        "| step | wall s | CPU s | peak RSS MB | files (new / changed / unchanged) "
        "| chunks added |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for row in info["steps"]:
        files = row.get("files")
        described = (
            f"{files['new']} / {files['changed']} / {files['unchanged']}"
            if isinstance(files, dict)
            else str(row.get("files_listed", ""))
        )
        chunks = (
            row.get("chunks", {}).get("added", "") if isinstance(row.get("chunks"), dict) else ""
        )
        wall = row.get("wall_s", row.get("startup_s"))
        lines.append(
            f"| {row['step']} | {wall} | {row.get('cpu_s', '')} | {row.get('peak_rss_mb', '')} "
            f"| {described} | {chunks} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
