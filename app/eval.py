"""`python -m app.eval`: measure retrieval on a BEIR folder, or answers on a question file.

    python -m app.eval --dataset DIR [--json PATH] [--plot PATH.png] [--markdown]
    python -m app.eval --dataset DIR --embeddings local,local:FOLDER,ollama:bge-m3 [...]
    python -m app.eval --questions data/eval/questions.jsonl [--seeds N] [--json PATH]
    python -m app.eval --conversations data/eval/conversations.jsonl [--dataset DIR] [--seeds N]

--dataset ingests the folder's corpus.jsonl through the app's own pipeline into a collection of
its own (`eval-<dataset>-<hash>-<model>`, in the same store; reused while the corpus is
unchanged), runs every judged query through each retrieval mode (similarity, mmr, hybrid) and
two baselines on the same chunks and embedding model (bm25s, exact numpy search), and reports
nDCG@10, Recall@10, MRR@10 and latency p50/p95 per query. With --embeddings it runs each named
embedding model on the same corpus instead and prints one table of models (see
app/evaluation/compare.py).

--questions asks each question through the chat chain (app/evaluation/answers.py); with
--seeds N, N times, the chat model sampling from seeds 1..N, and reports the mean and range
over seeds and which questions flip with the seed, and the answers that state a fact their
sources lack.

--conversations asks each conversation's turns in order through the chat chain and reports,
for the follow-ups, the expected source listed with the history (the app's path), asked alone
(the floor) and as a hand-written standalone question (the ceiling), and whether what was
searched for is a question naming what it refers to (app/evaluation/conversations.py); with
--dataset, over that BEIR folder's corpus, expected sources being corpus ids.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from app.config import Settings, load_settings
from app.console import out, run, status
from app.errors import ConfigError, ExitCode

DEFAULT_CHUNK_K = 20
DEFAULT_FETCH_K = 50
DEFAULT_REPEATS = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.eval",
        description="Measure retrieval on a BEIR folder (--dataset) or answers on a question "
        "file (--questions).",
        epilog="Exit status: 0 measured; 2 bad arguments, settings or dataset; 4 model server "
        "failed; 5 store refused.",
    )
    what = parser.add_mutually_exclusive_group()
    parser.add_argument(
        "--dataset",
        type=Path,
        metavar="DIR",
        help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (with --conversations: "
        "the corpus they are asked over)",
    )
    what.add_argument(
        "--questions", type=Path, metavar="FILE", help="JSON lines: question, source, answer"
    )
    what.add_argument(
        "--conversations",
        type=Path,
        metavar="FILE",
        help="JSON lines: turns (question, source; standalone and entities for follow-ups)",
    )
    parser.add_argument("--split", default="test", help="qrels file to score (default: test)")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="write the results as JSON (- for stdout)"
    )
    parser.add_argument("--plot", type=Path, metavar="PATH", help="bar chart as PNG (--dataset)")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (--dataset)"
    )
    parser.add_argument(
        "--embeddings",
        metavar="SPEC[,SPEC...]",
        help="compare embedding models on --dataset: local, local:FOLDER_OR_PACKAGE, ollama, "
        "ollama:MODEL (e.g. local,ollama:bge-m3)",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=DEFAULT_CHUNK_K,
        help=f"chunks fetched per query before keeping 10 distinct documents "
        f"(default {DEFAULT_CHUNK_K})",
    )
    parser.add_argument(
        "--fetch-k",
        type=int,
        help=f"candidates for MMR and fusion (default FETCH_K, else {DEFAULT_FETCH_K})",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=DEFAULT_REPEATS,
        help=f"times each query is timed, its median kept (default {DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="--questions: ask every question N times, the chat model sampling from seeds "
        "1..N; report the mean, min and max over seeds (default: once, the model's own seed)",
    )
    args = parser.parse_args(argv)
    if not (args.dataset or args.questions or args.conversations):
        parser.error("one of --dataset, --questions or --conversations is required")
    if args.questions and args.dataset:
        parser.error("argument --questions: not allowed with argument --dataset")
    if args.seeds is not None and not (args.questions or args.conversations):
        parser.error("--seeds goes with --questions or --conversations")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.chunks < 10:
        parser.error("--chunks must be at least 10")
    if (args.questions or args.conversations) and (args.plot or args.markdown or args.embeddings):
        parser.error("--plot, --markdown and --embeddings go with --dataset alone")
    return args


def evaluate_dataset(
    settings: Settings,
    folder: Path,
    *,
    split: str,
    chunk_k: int,
    fetch_k: int,
    repeats: int = DEFAULT_REPEATS,
) -> dict[str, Any]:
    from app.evaluation.baselines import read_chunks
    from app.evaluation.beir import describe, load_judged
    from app.evaluation.corpus import ingest_corpus
    from app.evaluation.metrics import evaluate
    from app.evaluation.report import ceiling, load_average, machine, now, system_entry
    from app.evaluation.runs import (
        DOCS_K,
        MODES,
        bm25_system,
        exact_system,
        mode_system,
        overlap,
        run_queries,
    )
    from app.session.resources import open_embeddings
    from app.store import open_store
    from app.store.keyword_index import open_keyword_index
    from app.store.library import Library
    from app.text.writing_systems import covers

    load_start = load_average()
    dataset, queries = load_judged(folder, split)
    judged = [q for q, _ in queries]
    status(
        f"Dataset {dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} "
        f"queries, {len(judged)} with relevant judgements"
    )

    embeddings = open_embeddings(settings)
    eval_settings, corpus, report = ingest_corpus(settings, dataset, embeddings)
    files = report.as_dict()["files"]
    status(
        "Ingest: {new} new, {changed} changed, {unchanged} unchanged, {deleted} deleted, "
        "{failed} failed files; ".format(**files)
        + f"{report.chunks_added} chunks embedded in {report.seconds.get('total', 0):.1f} s"
    )
    notes = list(dataset.notes)
    uncovered = [q for q, text in queries if not covers(embeddings.info.scripts, text)]
    if uncovered:
        notes.append(
            f"{len(uncovered)} of {len(queries)} queries are mostly in scripts "
            f"{embeddings.info.key} was not trained on: every mode answers them from the keyword "
            "index (the exact baseline shows the model's own vectors)"
        )
    if report.failed:
        sample = "; ".join(f"{s}: {r}" for s, r in list(report.failed.items())[:3])
        notes.append(f"{len(report.failed)} corpus documents could not be ingested ({sample})")

    store = open_store(eval_settings)
    library = Library.find(store, eval_settings.collection_name)
    collection = library.collection() if library is not None else None
    if collection is None or collection.count() == 0:
        raise ConfigError(f"No document of {folder / 'corpus.jsonl'} could be ingested.")
    keyword_index = open_keyword_index(eval_settings, store, collection)  # kept in step by sync
    try:
        runs = [
            mode_system(
                mode,
                collection=collection,
                embeddings=embeddings,
                keyword_index=keyword_index,
                chunk_k=chunk_k,
                fetch_k=fetch_k,
            )
            for mode in MODES
        ]
        start = time.perf_counter()
        chunks = read_chunks(collection)
        runs.append(bm25_system(chunks, chunk_k))
        runs.append(exact_system(chunks, embeddings, chunk_k, time.perf_counter() - start))
        status(f"Searching {len(queries)} queries with {len(runs)} systems")
        run_queries(runs, queries, corpus.source_to_id, repeats)
    finally:
        keyword_index.close()

    systems: dict[str, dict[str, Any]] = {}
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    for system in runs:
        scores = evaluate(system.rankings, dataset.qrels, DOCS_K)
        systems[system.name] = system_entry(system, scores)
        per_query[system.name] = {
            q: {m: round(v, 4) for m, v in values.items()} for q, values in scores.per_query.items()
        }
    by_name = {r.name: r for r in runs}
    return {
        "kind": "retrieval",
        "date": now(),
        "machine": machine() | {"load_average_start": load_start},
        "dataset": describe(dataset, judged, DOCS_K, notes),
        "embedding_model": embeddings.info.key,
        "collection": collection.name,
        "store": report.store,
        "chunks": len(chunks.ids),
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "docs_k": DOCS_K,
        "chunk_k": chunk_k,
        "fetch_k": fetch_k,
        "latency_repeats": repeats,
        "ingest": report.as_dict()
        | {"corpus_files_written": corpus.written, "corpus_files_removed": corpus.removed},
        "systems": systems,
        "ceiling": ceiling(systems, overlap(by_name["similarity"], by_name["exact"])),
        "per_query": per_query,
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if str(path) == "-":
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")
    status(f"Wrote {path}")


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    show = str(args.json) != "-"  # `--json -`: stdout holds the JSON alone
    if args.questions:
        from app.evaluation.answers import evaluate_answers, load_questions, print_answers
        from app.evaluation.report import load_average, machine, now

        seeds = list(range(1, args.seeds + 1)) if args.seeds else []
        load_start = load_average()
        result = evaluate_answers(settings, load_questions(args.questions), seeds)
        result = {
            "date": now(),
            "machine": machine()
            | {"load_average_start": load_start, "load_average_end": load_average()},
        } | result
        if show:
            print_answers(result)
    elif args.conversations:
        from app.evaluation.conversations import (
            evaluate_conversations,
            load_conversations,
            print_conversations,
        )
        from app.evaluation.report import load_average, machine, now

        seeds = list(range(1, args.seeds + 1)) if args.seeds else []
        load_start = load_average()
        result = evaluate_conversations(
            settings, load_conversations(args.conversations), seeds=seeds, dataset=args.dataset
        )
        result = {
            "date": now(),
            "machine": machine()
            | {"load_average_start": load_start, "load_average_end": load_average()},
            "conversations_file": str(args.conversations),
        } | result
        if show:
            print_conversations(result)
    elif args.embeddings:
        from app.evaluation.compare import compare_embeddings, parse_specs
        from app.evaluation.report import comparison_markdown, plot_comparison, print_comparison

        result = compare_embeddings(
            settings,
            args.dataset,
            parse_specs(args.embeddings),
            split=args.split,
            chunk_k=args.chunks,
            repeats=args.repeats,
        )
        if show:
            print_comparison(result)
            if args.markdown:
                out.print(comparison_markdown(result), markup=False, soft_wrap=True)
        if args.plot:
            plot_comparison(result, args.plot)
            status(f"Wrote {args.plot}")
    else:
        from app.evaluation.report import markdown_table, plot, print_table

        result = evaluate_dataset(
            settings,
            args.dataset,
            split=args.split,
            chunk_k=args.chunks,
            fetch_k=args.fetch_k or settings.fetch_k or DEFAULT_FETCH_K,
            repeats=args.repeats,
        )
        if show:
            print_table(result)
            if args.markdown:
                out.print(markdown_table(result), markup=False, soft_wrap=True)
        if args.plot:
            plot(result, args.plot)
            status(f"Wrote {args.plot}")
    if args.json:
        write_json(result, args.json)
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
