"""Should the support check also use the embedding model's sentence similarity? Measured on
the embedded model's own answers (an answers evaluation's JSON, one answer per question and
seed): each answer's weakest sentence, scored by its best cosine to any sentence of the sources
the answer was given, for the answers the lexical check passes with the expected text (sound)
and without it (wrong, yet stating nothing the sources lack). If similarity cannot tell those
apart, it cannot find what the lexical check misses.

    CHROMA_DIR=/path/to/a/store/holding/data/docs python benchmarks/support_similarity.py \\
        benchmarks/results/answer-modes/answers-before.json

Writes benchmarks/results/answer-modes/support-similarity.json and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import load_settings  # noqa: E402
from app.evaluation.report import load_average, write_results  # noqa: E402
from app.session.conversation import start_conversation  # noqa: E402
from app.session.resources import open_resources  # noqa: E402
from chains.core.extractive import SentenceRanker  # noqa: E402
from chains.core.sentences import split_sentences  # noqa: E402
from chains.core.support import check_support  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "answer-modes" / "support-similarity.json"


def auc(positives: list[float], negatives: list[float]) -> float:
    """How often a sound answer scores above a wrong one (0.5: no better than chance)."""
    pairs = [(p > n) + 0.5 * (p == n) for p in positives for n in negatives]
    return sum(pairs) / len(pairs) if pairs else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("answers", type=Path, help="an answers evaluation's JSON")
    args = parser.parse_args()
    answers = json.loads(args.answers.read_text(encoding="utf-8"))
    load = load_average()
    settings = load_settings().model_copy(update={"retrieval_k": answers["retrieval"]["k"]})
    resources = open_resources(settings)
    retriever = start_conversation(resources, settings.chain).retriever()
    ranker = SentenceRanker(resources.embeddings)
    groups: dict[str, list[float]] = {"sound": [], "wrong_but_supported": [], "unsupported": []}
    for question in answers["questions"]:
        if question["outside"]:
            continue
        context = retriever.invoke(question["question"])
        source_sentences = [s for d in context for s in split_sentences(d.page_content)]
        vectors = [ranker.vector(s) for s in source_sentences]
        for answer in question["answers"]:
            text = answer["answer"]
            sentences = split_sentences(text) or [text]
            weakest = min(max(_cosine(ranker.vector(s), v) for v in vectors) for s in sentences)
            supported = check_support(text, [d.page_content for d in context], question["question"])
            if not supported.supported:
                groups["unsupported"].append(weakest)
            elif answer["expected_text_in_answer"]:
                groups["sound"].append(weakest)
            else:
                groups["wrong_but_supported"].append(weakest)
    result: dict[str, Any] = {
        "answers_file": str(args.answers),
        "counts": {k: len(v) for k, v in groups.items()},
        "mean_weakest_sentence_cosine": {
            k: round(sum(v) / len(v), 3) if v else None for k, v in groups.items()
        },
        "auc_sound_above_wrong_but_supported": round(
            auc(groups["sound"], groups["wrong_but_supported"]), 3
        ),
        "auc_sound_above_unsupported": round(auc(groups["sound"], groups["unsupported"]), 3),
    }
    write_results(OUT, load, **result)
    print(json.dumps(result, indent=2))
    return 0


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


if __name__ == "__main__":
    raise SystemExit(main())
