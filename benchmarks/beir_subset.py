"""A smaller BEIR folder drawn from a larger one: N documents at random (seeded), every query,
and the judgements of the documents kept. For comparing slow models when the full corpus would
take hours; scores on a subset are only comparable with other runs on the same subset.

    python benchmarks/beir_subset.py ../shared/bench-data/msmarco-5k /tmp/msmarco-500 --docs 500
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    text = (args.source / "corpus.jsonl").read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line.strip()]  # not splitlines: U+2028 in text
    kept = random.Random(args.seed).sample(lines, min(args.docs, len(lines)))
    ids = {json.loads(line)["_id"] for line in kept}
    (args.target / "qrels").mkdir(parents=True, exist_ok=True)
    (args.target / "corpus.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    queries = (args.source / "queries.jsonl").read_text(encoding="utf-8")
    (args.target / "queries.jsonl").write_text(queries, encoding="utf-8")
    header, *rows = (args.source / "qrels" / f"{args.split}.tsv").read_text().splitlines()
    judged = [row for row in rows if row.split("\t")[1] in ids]
    (args.target / "qrels" / f"{args.split}.tsv").write_text("\n".join([header, *judged]) + "\n")
    print(f"{len(kept)} documents, {len(judged)} judgements kept in {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
