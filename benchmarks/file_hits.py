"""Does retrieval find the file that answers a sample question, in English and in Chinese, on
the embedded default with no settings?

    python benchmarks/file_hits.py

Each sample set (data/docs with data/eval/questions.jsonl, data/docs-zh with
data/eval/questions-zh.jsonl) is ingested into a temporary store with the embedded MiniLM, then
every question goes through `DocumentRetriever` as a session builds it (mode similarity, the
default thresholds: SCORE_THRESHOLD 0.3 for MiniLM, KEYWORD_THRESHOLD) at k 2 (what the embedded
chat model gets) and k 4 (the default for Ollama models). Counts: answerable questions whose
file is among the chunks and not "not found"; outside questions that are "not found".
Writes benchmarks/results/file_hits.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import load_settings
from app.console import status
from app.evaluation.report import load_average, write_results
from app.indexing.sync import sync_collection
from app.models.local import local_embeddings
from app.paths import SAMPLE_DOCS_DIR, SAMPLE_DOCS_ZH_DIR, SAMPLE_QUESTIONS, SAMPLE_QUESTIONS_ZH
from app.retrieval.retriever import DocumentRetriever
from app.store import open_store
from app.store.keyword_index import open_keyword_index
from app.store.library import find_library

RESULTS = Path(__file__).resolve().parent / "results" / "file_hits.json"


def measure(docs: Path, questions_file: Path, store: Path) -> dict[str, object]:
    settings = load_settings(chroma_dir=store, _env_file=None)
    embeddings = local_embeddings(settings, status)
    chunk_store = open_store(settings, status)
    sync_collection(settings, [docs], embeddings, store=chunk_store)
    library = find_library(chunk_store, settings, embeddings.info.key)
    collection = library.collection() if library is not None else None
    assert collection is not None
    index = open_keyword_index(settings, chunk_store, collection)  # the sync wrote it
    questions = [json.loads(line) for line in questions_file.read_text("utf-8").splitlines()]
    row: dict[str, object] = {
        "answerable": sum(1 for q in questions if q["source"]),
        "outside": sum(1 for q in questions if not q["source"]),
    }
    for k in (2, 4):
        retriever = DocumentRetriever(
            collection=collection,
            embeddings=embeddings,
            keyword_index=index,
            k=k,
            fetch_k=5 * k,
            score_threshold=embeddings.info.default_threshold,
            keyword_threshold=settings.keyword_threshold,
            model_scripts=embeddings.info.scripts,
        )
        found = stopped = 0
        for q in questions:
            docs_found = retriever.invoke(q["question"])
            not_found = all(d.metadata.get("below_threshold") for d in docs_found)
            if q["source"]:
                expected = f"{docs.name}/{q['source']}"  # stored under the folder's label
                found += not not_found and expected in {d.metadata["source"] for d in docs_found}
            else:
                stopped += not_found
        row[f"file_found@{k}"] = found
        row[f"outside_not_found@{k}"] = stopped
    index.close()
    chunk_store.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (JSON)")
    args = parser.parse_args()
    load = load_average()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, docs, questions in (
            ("English", SAMPLE_DOCS_DIR, SAMPLE_QUESTIONS),
            ("Chinese", SAMPLE_DOCS_ZH_DIR, SAMPLE_QUESTIONS_ZH),
        ):
            results[name] = measure(docs, questions, Path(tmp) / name)
    write_results(args.json, load, sets=results)
    print("| sample set | file among 2 chunks | among 4 chunks | outside questions not found |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['file_found@2']}/{r['answerable']} | {r['file_found@4']}/"
            f"{r['answerable']} | {r['outside_not_found@2']}/{r['outside']} |"
        )


if __name__ == "__main__":
    main()
