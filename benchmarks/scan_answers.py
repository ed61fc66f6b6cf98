"""The answers evaluation on questions whose answers are only in scans, for each OCR engine.

    python benchmarks/scan_answers.py [--engines rapidocr,rapidocr-onnxruntime,tesseract]
        [--engine-path DIR] [--questions data/eval/scan-questions.jsonl]
        [--files F,...] [--limit N] [--json benchmarks/results/scan-answers.json]

The scan library (benchmarks/scan_set.py, seeded: scanned PDFs, a TIFF, page images and
photos in English and Chinese) is made in --set, then for each engine, in a process of its own:
the folder is ingested into a fresh store as `python -m app.ingest DOCS_DIR` does it
(app.ingest.ingest: discovery, parse workers with OCR, chunking, embedding, the keyword index),
and every question is asked through the chat chain as `python -m app.eval --questions` asks it
(app.evaluation.answers: the same settings, retriever and chain as `python -m app.chat`). Per
language it reports the expected file and page listed first and among the sources (hit@1 and
hit@k, k being the chain's retrieval k), cited with [n], and every expected fact in the answer
(`fact_key`: NFKC, case folded, no whitespace or thousands separators), with the pages read by
OCR, the OCR seconds, the ingest seconds and the seconds per question.

Engines, as benchmarks/ocr_engines.py runs them:
- `rapidocr`: the app's own OCR (rapidocr 3.10), untouched; only timed.
- `rapidocr-onnxruntime` (1.4.4) and `tesseract` (tesserocr on Debian's tesseract-ocr with
  tesseract-ocr-eng and tesseract-ocr-chi-sim, `chi_sim+eng`) take the place of
  loaders.ocr.ocr_image in the parse workers, and the rest of the pipeline is the app's. They
  are not project dependencies: install them out of the way, e.g.
  `pip install --target /tmp/ocr-engines --no-deps rapidocr-onnxruntime==1.4.4 tesserocr==2.13.0`
  (the other packages rapidocr-onnxruntime needs come with the app; its `cv2` is the app's
  opencv-python-headless) and pass --engine-path /tmp/ocr-engines.

How the engine reaches the workers: parse workers start from multiprocessing's forkserver,
which is told to import this module first (and each worker imports it again as its main
module); on import, with SCAN_ANSWERS_OCR_ENGINE set, it replaces loaders.ocr.ocr_image, once,
and logs every page read to SCAN_ANSWERS_OCR_LOG: the log proves which engine read them.

The embedded default answers (the settings come from the environment as for the app, without
the .env file; CHROMA_DIR and DOCS_DIR are the benchmark's own). Models are cached in
MODEL_CACHE_DIR if set, else where the app keeps them. Results: benchmarks/results/
scan-answers.json (each engine's latest run kept; date, lscpu model name, load average), and a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
DEFAULT_SET = BENCHMARKS / "scan-set"
DEFAULT_QUESTIONS = ROOT / "data" / "eval" / "scan-questions.jsonl"
RESULTS = BENCHMARKS / "results" / "scan-answers.json"
ENGINES = ("rapidocr", "rapidocr-onnxruntime", "tesseract")
ENGINE_ENV = "SCAN_ANSWERS_OCR_ENGINE"
LOG_ENV = "SCAN_ANSWERS_OCR_LOG"


# --- in the parse workers ------------------------------------------------------------------


def install_ocr_hook(engine: str, log: Path) -> None:
    """Make loaders.ocr.ocr_image read with `engine` (the app's own for rapidocr), logging
    each page: engine, seconds, characters. Once per process (a worker imports this module
    twice: from the forkserver and as its main module)."""
    import loaders.ocr

    if getattr(loaders.ocr.ocr_image, "engine", None) == engine:
        return
    app_ocr = loaders.ocr.ocr_image
    recognise: list[Any] = []  # loaded on the first page, in the worker that reads it

    def ocr_image(image: Any) -> loaders.ocr.OcrPage:
        started = time.perf_counter()
        if engine == "rapidocr":
            page = app_ocr(image)
        else:
            if not recognise:
                from ocr_engines import load_engine

                recognise.append(load_engine(engine))
            page = loaders.ocr.OcrPage(recognise[0](image), [], 0.0)
        entry = {
            "engine": engine,
            "pid": os.getpid(),
            "size": list(image.size),
            "seconds": round(time.perf_counter() - started, 3),
            "chars": len(page.text),
        }
        with log.open("a", encoding="utf-8") as file:  # one short line: appends do not mix
            file.write(json.dumps(entry) + "\n")
        return page

    ocr_image.engine = engine  # type: ignore[attr-defined]
    loaders.ocr.ocr_image = ocr_image


# --- one engine, in a process of its own ---------------------------------------------------------


def run_engine(args: argparse.Namespace) -> None:
    """Ingest --set with the engine of ENGINE_ENV into a fresh store, ask the questions, write
    the evaluation (with the ingest report and the OCR log) to --one-result."""
    import multiprocessing.forkserver

    # Workers start from the forkserver: it imports this module first (see install_ocr_hook);
    # a file parsed in this process (no workers) is read by the same engine.
    multiprocessing.forkserver.set_forkserver_preload([Path(__file__).stem])
    install_ocr_hook(os.environ[ENGINE_ENV], Path(os.environ[LOG_ENV]))

    from app.config import load_settings
    from app.evaluation.answers import evaluate_answers, load_questions
    from app.ingest import ingest, list_files

    settings = load_settings(_env_file=None)
    started = time.perf_counter()
    report = ingest(settings, [settings.docs_dir])
    ingest_seconds = time.perf_counter() - started
    log = Path(os.environ[LOG_ENV])
    pages = (
        [json.loads(line) for line in log.read_text("utf-8").splitlines()] if log.is_file() else []
    )
    result = evaluate_answers(settings, load_questions(args.questions))
    result["ingest"] = report.as_dict() | {"wall_seconds": round(ingest_seconds, 2)}
    listing = list_files(settings, [], None)  # what `python -m app.ingest --files` shows
    result["files"] = listing["files"] if listing else []
    result["page_texts"] = stored_page_texts(settings)
    result["ocr_log"] = pages
    args.one_result.write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")


def stored_page_texts(settings: Any) -> dict[str, str]:
    """The text the library holds for each file and page ("name#page"): its chunks in order,
    what OCR made of the page (overlaps repeated)."""
    from app.session.resources import open_embeddings
    from app.store import open_store
    from app.store.library import find_library

    store = open_store(settings, lambda message: None)
    library = find_library(store, settings, open_embeddings(settings).info.key)
    collection = library.collection() if library is not None else None
    if collection is None:
        return {}
    chunks = collection.get([chunk_id for chunk_id, _ in collection.rows()])
    chunks.sort(
        key=lambda c: (
            str(c.metadata.get("source")),
            int(c.metadata.get("page") or 0),
            int(c.metadata.get("chunk_index") or 0),
        )
    )
    pages: dict[str, str] = {}
    for chunk in chunks:
        key = f"{chunk.metadata.get('source')}#{chunk.metadata.get('page')}"
        pages[key] = (pages.get(key, "") + "\n" + chunk.text).strip()
    return pages


# --- all engines ---------------------------------------------------------------------------------


def questions_of(path: Path, files: set[str] | None, limit: int | None) -> list[dict[str, Any]]:
    """The questions on the files made, at most `limit` per language, in file order."""
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    kept: list[dict[str, Any]] = []
    for row in rows:
        if files is not None and row["source"] not in files:
            continue
        if limit is not None and sum(r["lang"] == row["lang"] for r in kept) >= limit:
            continue
        kept.append(row)
    return kept


def summarise(
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    files: list[dict[str, Any]],
    page_texts: dict[str, str],
) -> dict[str, Any]:
    """Per language: the pages read by OCR and the counts of one engine's answers, with
    whether OCR got each expected fact right on its page (in the library's text of it)."""
    from app.evaluation.answers import fact_key

    by_question = {r["question"]: r for r in records}
    for record in records:
        text = fact_key(
            page_texts.get(f"{record['expected_source']}#{record['expected_page']}", "")
        )
        record["facts_on_page"] = all(fact_key(fact) in text for fact in record["facts"])
    summary: dict[str, Any] = {}
    for lang in sorted({row["lang"] for row in rows}):
        mine = [by_question[row["question"]] for row in rows if row["lang"] == lang]
        seconds = sorted(r["seconds"] for r in mine)
        # Stored names are the library folder's label, then the path in it: en/..., zh/...
        ocr_pages = [f["ocr_pages"] or 0 for f in files if f["file"].split("/")[1] == lang]
        summary[lang] = {
            "pages_ocr": sum(ocr_pages),
            "questions": len(mine),
            "page_first": sum(r["page_rank"] == 1 for r in mine),
            "page_listed": sum(r["page_listed"] for r in mine),
            "page_cited": sum(r["page_cited"] for r in mine),
            "file_listed": sum(r["source_listed"] for r in mine),
            "facts_on_page": sum(r["facts_on_page"] for r in mine),
            "facts_in_sources": sum(r["facts_in_sources"] for r in mine),
            "facts_in_answer": sum(r["facts_in_answer"] for r in mine),
            "seconds_per_question_p50": seconds[len(seconds) // 2],
        }
    return summary


def measure(
    engine: str, args: argparse.Namespace, rows: list[dict[str, Any]], work: Path
) -> dict[str, Any]:
    from app.evaluation.report import load_average, now

    home = work / engine
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    result_file = home / "result.json"
    log = home / "ocr-log.jsonl"
    path = [str(ROOT), str(BENCHMARKS), *args.engine_path]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(path),  # the forkserver's sys.path comes from here
        "CHROMA_DIR": str(home / "chroma"),
        "DOCS_DIR": str(args.set / "library"),
        "MODEL_CACHE_DIR": str(args.model_cache),
        "LOCALRAG_ENV_FILE": os.devnull,
        ENGINE_ENV: engine,
        LOG_ENV: str(log),
    }
    questions = home / "questions.jsonl"
    questions.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    load_start = load_average()
    command = [
        sys.executable,
        __file__,
        "--one-result",
        str(result_file),
        "--questions",
        str(questions),
    ]
    print(f"{engine}: ingesting {args.set / 'library'}, asking {len(rows)} questions", flush=True)
    done = subprocess.run(command, env=env, cwd=ROOT, check=False)
    if done.returncode != 0 or not result_file.is_file():
        raise SystemExit(f"{engine}: the run failed (exit status {done.returncode})")
    result = json.loads(result_file.read_text("utf-8"))
    pages = result.pop("ocr_log")
    engines_seen = sorted({page["engine"] for page in pages})
    ocr = result["ingest"]["ocr"]
    if engines_seen != [engine] or len(pages) != ocr["pages"]:
        raise SystemExit(
            f"{engine}: the OCR log has {len(pages)} pages read by {engines_seen}, the ingest "
            f"{ocr['pages']}: the engine did not reach the parse workers"
        )
    return {
        "date": now(),
        "load_average_start_end": [load_start[0], load_average()[0]],
        "pages_ocr": ocr["pages"],
        "files_ocr": ocr["files"],
        "ocr_seconds": round(sum(page["seconds"] for page in pages), 1),
        "ingest_seconds": result["ingest"]["wall_seconds"],
        "by_language": summarise(result["questions"], rows, result["files"], result["page_texts"]),
        "evaluation": result,
    }


def tables(results: dict[str, Any]) -> str:
    """Markdown: the answers per engine and language, then each engine's OCR and ingest."""
    answers = [
        "| engine | language | pages OCR'd | facts read right by OCR | file+page first "
        "(hit@1) | file+page listed (hit@k) | file+page cited | facts in the sources given "
        "| facts in the answer | s/question p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    engines = [
        "| engine | pages OCR'd | OCR s (summed over workers) | ingest s (wall) | load |",
        "|---|---:|---:|---:|---:|",
    ]
    for engine, entry in results["engines"].items():
        k = entry["evaluation"]["retrieval"]["k"]
        for lang, row in entry["by_language"].items():
            n = row["questions"]
            answers.append(
                f"| {engine} | {lang} | {row['pages_ocr']} | {row['facts_on_page']}/{n} "
                f"| {row['page_first']}/{n} | {row['page_listed']}/{n} (k {k}) "
                f"| {row['page_cited']}/{n} | {row['facts_in_sources']}/{n} "
                f"| {row['facts_in_answer']}/{n} | {row['seconds_per_question_p50']} |"
            )
        load = entry["load_average_start_end"]
        engines.append(
            f"| {engine} | {entry['pages_ocr']} | {entry['ocr_seconds']} "
            f"| {entry['ingest_seconds']} | {load[0]} → {load[1]} |"
        )
    return "\n".join(answers) + "\n\n" + "\n".join(engines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--engines", default="rapidocr", help=f"comma-separated: {', '.join(ENGINES)}"
    )
    parser.add_argument(
        "--engine-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder the other engines are installed in (pip --target); repeatable",
    )
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="where the scans are made")
    parser.add_argument("--seed", type=int, default=7, help="the scans' random seed")
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--files", help="comma-separated files of the set (default: all)")
    parser.add_argument("--limit", type=int, help="at most N questions per language")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (merged)")
    parser.add_argument("--one-result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.one_result:
        run_engine(args)
        return
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCHMARKS))
    from scan_set import build

    from app.config import load_settings
    from app.evaluation.report import machine

    files = set(args.files.split(",")) if args.files else None
    rows = questions_of(args.questions, files, args.limit)
    if not rows:
        raise SystemExit("no question is on the files asked for")
    args.set = args.set.resolve()
    if args.set.exists() and any(args.set.iterdir()):
        if not (args.set / "manifest.json").is_file():
            raise SystemExit(f"--set {args.set} holds files the scan set did not make")
        shutil.rmtree(args.set)  # the library holds this run's files and nothing else
    build(args.set, args.seed, files)
    args.model_cache = Path(
        os.environ.get("MODEL_CACHE_DIR") or load_settings(_env_file=None).model_cache_path
    ).resolve()
    results: dict[str, Any] = {}
    if args.json.is_file():
        results = json.loads(args.json.read_text("utf-8"))
    results.setdefault("engines", {})
    with tempfile.TemporaryDirectory(prefix="scan-answers-") as work:
        for engine in args.engines:
            entry = measure(engine, args, rows, Path(work))
            entry["command"] = "python benchmarks/scan_answers.py " + " ".join(sys.argv[1:])
            results["engines"][engine] = entry
            results["machine"] = machine()
            questions = args.questions.resolve()
            results["questions"] = str(
                questions.relative_to(ROOT) if questions.is_relative_to(ROOT) else questions
            )
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(tables(results))
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
elif os.environ.get(ENGINE_ENV) and os.environ.get(LOG_ENV):
    # Imported by the forkserver the parse workers start from (run_engine asks for it).
    install_ocr_hook(os.environ[ENGINE_ENV], Path(os.environ[LOG_ENV]))
