"""Prompt evaluation and generation speed of the embedded chat model per GGUF type.

    python benchmarks/gguf_types.py [--runs 3] [--json benchmarks/results/gguf-types.json]

The packaged SmolLM2-135M-Instruct Q4_1 file is converted in-process (llama_model_quantize,
allow_requantize) to F16, F32 and Q8_0 in a temporary folder, as
`app.models.llama_chat.prepare_gguf` does. Each type is loaded the way the app loads it (n_ctx
2048, n_batch 512, all cores), and
also the packaged file with n_batch 8, the default of langchain-community's ChatLlamaCpp that the
app used before. The prompt is the `rag` chain's (system prompt, sources block, question) with
two 800-character chunks, the first of two sample files, as the chain sends k=2 chunks of the
default size. For each, the median of --runs runs, taken round-robin over the types (so a
change in the machine's load weighs on all of them), each in a fresh process on a cleared
context: seconds to load, seconds to evaluate the prompt (the first token's wait), prompt
tokens per second, and generation speed over 64 tokens. A type that crashes llama.cpp on this
CPU is reported as such.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.evaluation.report import machine  # noqa: E402

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

QUESTION = "Who founded the town of Brindlemoor?"
GENERATE = 64


def prompt_messages() -> list[ChatCompletionRequestMessage]:
    from langchain_core.documents import Document

    from app.paths import SAMPLE_DOCS_DIR
    from chains.core.context import format_context
    from chains.rag import QUESTION_PROMPT, SYSTEM_PROMPT

    files = sorted(p for p in SAMPLE_DOCS_DIR.rglob("*.txt"))[:2]
    chunks = [
        Document(page_content=p.read_text()[:800], metadata={"source": p.name}) for p in files
    ]
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": QUESTION_PROMPT.format(context=format_context(chunks), question=QUESTION),
        },
    ]


def measure(model_path: Path, n_batch: int, runs: int) -> dict[str, Any]:
    import os

    from llama_cpp import Llama

    from app.models.llama_chat import without_weight_repacking

    started = time.perf_counter()
    with without_weight_repacking():  # as the app loads it (see app/models/llama_chat.py)
        llama = Llama(
            model_path=str(model_path),
            n_ctx=2048,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=os.cpu_count(),
            n_threads_batch=os.cpu_count(),
            verbose=False,
            seed=1,
        )
    load = time.perf_counter() - started
    messages = prompt_messages()
    evals, gens, prompt_tokens = [], [], 0
    for _ in range(runs):
        llama.reset()  # no prompt prefix reused from the previous run
        llama._ctx.kv_cache_clear()
        started = time.perf_counter()
        first = llama.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
        evals.append(time.perf_counter() - started)
        prompt_tokens = first["usage"]["prompt_tokens"]  # type: ignore[index]
        # Same prompt again: llama-cpp-python reuses the evaluated prefix, so this times the
        # generation alone (minus one token's evaluation).
        started = time.perf_counter()
        out = llama.create_chat_completion(
            messages=messages, max_tokens=GENERATE, temperature=0, stop=[]
        )
        generated = out["usage"]["completion_tokens"]  # type: ignore[index]
        gens.append(generated / (time.perf_counter() - started))
    llama.close()
    eval_s = statistics.median(evals)
    return {
        "file_mib": round(model_path.stat().st_size / 2**20, 1),
        "n_batch": n_batch,
        "load_s": round(load, 3),
        "prompt_tokens": prompt_tokens,
        "prompt_eval_s": round(eval_s, 3),
        "prompt_tokens_per_s": round(prompt_tokens / eval_s, 1),
        "generation_tokens_per_s": round(statistics.median(gens), 1),
        "runs": runs,
    }


def measure_in_child(model_path: Path, n_batch: int, runs: int) -> dict[str, Any]:
    """One case in its own process: a crash in llama.cpp is then a result, not the end."""
    child = subprocess.run(
        [sys.executable, __file__, "--case", str(model_path), str(n_batch), "--runs", str(runs)],
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        signal_name = signal.Signals(-child.returncode).name if child.returncode < 0 else "exit"
        return {"crashed": f"{signal_name} ({child.returncode})", "n_batch": n_batch}
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds; a crash in any round is the result."""
    crashed = [r for r in runs if "crashed" in r]
    if crashed:
        return crashed[0]
    row = dict(runs[0])
    for key in ("load_s", "prompt_eval_s", "prompt_tokens_per_s", "generation_tokens_per_s"):
        row[key] = round(statistics.median(r[key] for r in runs), 3)
    row["runs"] = len(runs)
    row["each_prompt_eval_s"] = [r["prompt_eval_s"] for r in runs]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--case", nargs=2, metavar=("GGUF", "N_BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(Path(args.case[0]), int(args.case[1]), args.runs)))
        return
    from app.models.llama_chat import prepare_gguf
    from app.models.local import local_chat_model_path

    packaged = Path(local_chat_model_path())
    results: dict[str, Any] = {"machine_at_start": machine(), "types": {}}
    with tempfile.TemporaryDirectory() as cache:
        cases: list[tuple[str, Path, int]] = [("Q4_1 (packaged), n_batch 8", packaged, 8)]
        cases.append(("Q4_1 (packaged)", packaged, 512))
        for gguf_type in ("Q8_0", "F16", "F32"):
            started = time.perf_counter()
            path = prepare_gguf(packaged, Path(cache), gguf_type)
            convert = time.perf_counter() - started
            cases.append((gguf_type, path, 512))
            results.setdefault("convert_s", {})[gguf_type] = round(convert, 2)
        # Round-robin, one run per case and round: a machine whose load changes during the
        # benchmark then weighs on every type alike.
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in cases}
        for _ in range(args.runs):
            for label, path, n_batch in cases:
                rounds[label].append(measure_in_child(path, n_batch, 1))
        for label, _, _ in cases:
            results["types"][label] = row = median_row(rounds[label])
            if "crashed" in row:
                print(f"{label:<28} crashed: {row['crashed']}", flush=True)
                continue
            print(
                f"{label:<28} {row['file_mib']:>6} MiB  load {row['load_s']:.2f} s  "
                f"{row['prompt_tokens']} prompt tokens in {row['prompt_eval_s']:.2f} s "
                f"({row['prompt_tokens_per_s']:.0f}/s)  generation "
                f"{row['generation_tokens_per_s']:.0f} tokens/s",
                flush=True,
            )
    results["machine_at_end"] = machine()
    print(f"machine: {results['machine_at_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
