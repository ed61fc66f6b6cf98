"""Which terms should the keyword index use? BM25 (SQLite FTS5, as app/store/keyword_index.py runs
it) over each BEIR folder with several ways of turning text into terms, scored like `app.eval`.

    python benchmarks/keyword_terms.py data/eval/lanxi-zh ../shared/bench-data/msmarco-5k

Each corpus document is indexed whole (title, blank line, text: what `app.eval` writes to its
file); every query is an OR of its terms, ranked by FTS5's bm25(); nDCG@10, Recall@10 and
MRR@10 as `app.eval` computes them. Variants:

- `unicode61`: the text as it is (the index before issue 10): a run of Han characters is one term
- `unigrams`, `bigrams`, `bigrams+unigrams`: unspaced scripts (Chinese, Japanese, Thai...) as
  single characters, overlapping pairs, or both; spaced words unchanged (porter unicode61)
- `trigram`: FTS5's own `trigram` tokenizer on everything (English words too)
- `jieba`: jieba's word segmentation for the unspaced runs (`pip install jieba`; skipped without)

Writes benchmarks/results/keyword_terms.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.evaluation.beir import load_beir
from app.evaluation.metrics import METRICS, evaluate, judged_queries
from app.evaluation.report import load_average, write_results
from app.store.keyword_index import LAYOUT_BREAK, UNSPACED_RUN, WORD, index_terms

RESULTS = Path(__file__).resolve().parent / "results" / "keyword_terms.json"


def spaced_runs(text: str, split: Callable[[str], list[str]]) -> str:
    text = LAYOUT_BREAK.sub("", text)
    return UNSPACED_RUN.sub(lambda m: " " + " ".join(split(m.group())) + " ", text)


def variants() -> dict[str, tuple[str, Callable[[str], str]]]:
    """name -> (FTS5 tokenizer, text -> what is indexed and queried)."""
    found: dict[str, tuple[str, Callable[[str], str]]] = {
        "unicode61": ("porter unicode61", lambda t: t),
        "unigrams": ("porter unicode61", lambda t: spaced_runs(t, list)),
        "bigrams": (
            "porter unicode61",
            lambda t: spaced_runs(t, lambda r: [r[i : i + 2] for i in range(max(1, len(r) - 1))]),
        ),
        "bigrams+unigrams": ("porter unicode61", index_terms),
        "trigram": ("trigram", lambda t: t),
    }
    try:
        import jieba

        jieba.setLogLevel(60)
        found["jieba"] = ("porter unicode61", lambda t: spaced_runs(t, jieba.lcut))
    except ImportError:
        print("jieba is not installed: its row is skipped", file=sys.stderr)
    return found


def query_match(tokenizer: str, text: str) -> str:
    if tokenizer == "trigram":
        # The trigram tokenizer matches substrings of 3+ characters; shorter words cannot match.
        pieces = [w for w in re.findall(r"\w+", text.lower()) if len(w) >= 3]
        grams = {p[i : i + 3] for p in pieces for i in range(len(p) - 2)}
        return " OR ".join(f'"{g}"' for g in sorted(grams))
    terms = dict.fromkeys(WORD.findall(text.lower()))
    return " OR ".join(f'"{t}"' for t in terms)


def run(folder: Path) -> dict[str, dict[str, float]]:
    dataset = load_beir(folder)
    judged = judged_queries(dataset.qrels, list(dataset.queries))
    rows: dict[str, dict[str, float]] = {}
    for name, (tokenizer, transform) in variants().items():
        db = sqlite3.connect(":memory:")
        db.execute(
            f"CREATE VIRTUAL TABLE t USING fts5(text, doc UNINDEXED, tokenize='{tokenizer}')"
        )
        db.executemany(
            "INSERT INTO t (text, doc) VALUES (?, ?)",
            [(transform(d.file_text), d.doc_id) for d in dataset.corpus.values()],
        )
        runs: dict[str, list[str]] = {}
        for query_id in judged:
            match = query_match(tokenizer, transform(dataset.queries[query_id]))
            hits = (
                db.execute(
                    "SELECT doc FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT 10", (match,)
                ).fetchall()
                if match
                else []
            )
            runs[query_id] = [doc for (doc,) in hits]
        scores = evaluate(runs, dataset.qrels)
        rows[name] = {m: round(v, 4) for m, v in scores.means.items()}
        print(f"{dataset.name:12} {name:18} " + "  ".join(f"{rows[name][m]:.4f}" for m in METRICS))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="BEIR folders")
    args = parser.parse_args()
    load = load_average()
    results = {f.name: run(f) for f in args.folders}
    write_results(RESULTS, load, nDCG=results)
    names = list(next(iter(results.values())))
    print("\n| terms | " + " | ".join(f"{d} nDCG@10" for d in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in names:
        cells = [
            f"{results[d][name]['ndcg@10']:.4f}" if name in results[d] else "-" for d in results
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
