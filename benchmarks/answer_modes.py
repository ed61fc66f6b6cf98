"""How the embedded default should answer, measured: the answers evaluation and the
conversations evaluation for each way of answering and of searching after a follow-up.

    python benchmarks/answer_modes.py answers [--variants generate-k2,extract-k4,...] [--seeds 5]
    python benchmarks/answer_modes.py conversations [--variants rewrite,own-words] [--seeds 5]
        [--file data/eval/conversations.jsonl] [--dataset DIR] [--tag NAME]

Each variant is `python -m app.eval --questions ...` (or `--conversations ...`) with a few
settings changed; the other settings come from the environment as for the app (point
CHROMA_DIR at a store holding DOCS_DIR, so it is ingested once). Each variant's full report goes
to benchmarks/results/answer-modes/NAME.json (an existing one is reused: delete it to measure
again), and a table of all of them to stdout as Markdown.

Answer variants: `generate-k2` (the model writes from 2 chunks, the check replaces what the
sources lack), `extract-k2` / `extract-k4` (the sources' best sentences from 2 or 4 chunks).
Conversation variants: `rewrite` (the model rewrites under its grammar, the check decides,
else the user's own words: the app), `own-words` (the model is not asked: the previous
question and the follow-up, or the follow-up alone).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import load_settings  # noqa: E402
from app.evaluation.report import load_average, write_results  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "answer-modes"


@dataclass(frozen=True)
class Variant:
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    ask_model_to_rewrite: bool = True


ANSWERS = {
    "generate-k2": Variant(
        "the model writes from 2 chunks; checked, replaced by the sources' sentences when it "
        "states what they lack",
        {"answer_mode": "generate", "retrieval_k": 2},
    ),
    "extract-k2": Variant(
        "the sources' best sentences from 2 chunks", {"answer_mode": "extract", "retrieval_k": 2}
    ),
    "extract-k4": Variant(
        "the sources' best sentences from 4 chunks (the default)",
        {"answer_mode": "extract", "retrieval_k": 4},
    ),
}
CONVERSATIONS = {
    "rewrite": Variant("the model rewrites (grammar, few-shot), the check decides (the default)"),
    "own-words": Variant(
        "the model is not asked: previous question + follow-up, or the follow-up alone",
        ask_model_to_rewrite=False,
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["answers", "conversations"])
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--questions", type=Path, default=ROOT / "data/eval/questions.jsonl")
    parser.add_argument("--file", type=Path, default=ROOT / "data/eval/conversations.jsonl")
    parser.add_argument("--dataset", type=Path, help="BEIR folder the conversations are over")
    parser.add_argument("--tag", default="", help="suffix for the result files (e.g. zh)")
    args = parser.parse_args()
    known = ANSWERS if args.what == "answers" else CONVERSATIONS
    args.variants = args.variants.split(",") if args.variants else list(known)
    unknown = [v for v in args.variants if v not in known]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(known)}")
    return args


def without_rewrites() -> None:
    """The model is never asked to rewrite: its draft is empty, so the check falls back."""
    from langchain_core.runnables import RunnableLambda

    import chains.core.answering as answering

    answering.constrained = lambda model, question: RunnableLambda(lambda messages: "")


def run(args: argparse.Namespace, name: str, variant: Variant) -> dict[str, Any]:
    settings = load_settings().model_copy(update=variant.settings)
    seeds = list(range(1, args.seeds + 1))
    if args.what == "answers":
        from app.evaluation.answers import evaluate_answers, load_questions

        return evaluate_answers(settings, load_questions(args.questions), seeds)
    from app.evaluation.conversations import evaluate_conversations, load_conversations

    if not variant.ask_model_to_rewrite:
        without_rewrites()
    return evaluate_conversations(
        settings, load_conversations(args.file), seeds=seeds, dataset=args.dataset
    )


def answers_row(name: str, r: dict[str, Any]) -> str:
    inside, outside = r["over_seeds"]["inside"], r["over_seeds"]["outside"]
    n, m = inside["questions"], outside["questions"]

    def spread(value: dict[str, Any], total: int) -> str:
        return f"{value['mean']:g}/{total} ({value['min']}-{value['max']})"

    return (
        f"| {name} | {len(r['seeds'])} | {spread(inside['expected_text_in_answer'], n)} "
        f"| {spread(inside['unsupported'], n)} | {spread(inside['replaced'], n)} "
        f"| {spread(inside['source_listed'], n)} | {spread(outside['says_unknown'], m)} "
        f"| {r['seconds_per_question']['p50']} / {r['seconds_per_question']['p95']} |"
    )


def conversations_row(name: str, r: dict[str, Any]) -> str:
    s = r["over_seeds"]

    def spread(key: str, total: int) -> str:
        return f"{s[key]['mean']:g}/{total} ({s[key]['min']}-{s[key]['max']})"

    n, f = r["scored"], r["follow_ups"]
    return (
        f"| {name} | {len(r['seeds'])} | {spread('with_history', n)} | {spread('alone', n)} "
        f"| {spread('ceiling', r['with_ceiling'])} | {spread('searched_is_question', f)} "
        f"| {spread('searched_keeps_entities', r['with_entities'])} "
        f"| {spread('searched_own_words', f)} |"
    )


def main() -> int:
    args = parse_args()
    known = ANSWERS if args.what == "answers" else CONVERSATIONS
    rows = []
    for name in args.variants:
        stem = f"{args.what}-{name}" + (f"-{args.tag}" if args.tag else "")
        path = OUT / f"{stem}.json"
        if not path.is_file():
            print(f"== {stem}: {known[name].description}", file=sys.stderr, flush=True)
            load = load_average()
            result = run(args, name, known[name])
            write_results(path, load, variant=name, description=known[name].description, **result)
        result = json.loads(path.read_text(encoding="utf-8"))
        row = answers_row if args.what == "answers" else conversations_row
        rows.append(row(name, result))
    if args.what == "answers":
        print(
            "| variant | passes | expected text | states a fact the sources lack | replaced "
            "| expected file listed | outside: don't know | s/question p50 / p95 |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print(
            "| variant | passes | with history | alone (floor) | standalone (ceiling) "
            "| searched is a question | names what it refers to | user's own words |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
