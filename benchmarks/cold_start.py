"""Cold start of `python -m app.chat -q` on the embedded default, and what of it is start-up.

    python benchmarks/cold_start.py [--runs 5] [--json benchmarks/results/cold-start.json]

The sample corpus is ingested into a temporary store with `python -m app.ingest` (which also
prepares the torch-free query model and the chat model's faster weights, as a user's first
ingest does), and one chat is run untimed (the operating system then has the model files in
its page cache, as it has on a user's second chat). Then, alternately, --runs times each:

- cold: a new `python -m app.chat -q QUESTION` process; seconds from its start to the first
  byte of the answer on stdout, and to its exit;
- warm: the same question asked in one long-lived process that opened its session once
  (`open_resources` and `start_conversation`, as the chat does), with llama.cpp's context cleared
  before each question so the prompt is evaluated again; seconds from the call to the first
  answer token, and to the last.

Cold-start overhead = median cold first token - median warm first token, from the same run:
what a new process costs before it can start on the question (interpreter, imports, loading
the models and the store). The warm process also reports the prompt's tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Who founded the town of Brindlemoor?"


def cold(env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first byte of the answer on stdout, seconds to exit)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "app.chat", "-q", QUESTION],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    process.stdout.read(1)
    first = time.perf_counter() - start
    process.stdout.read()
    if process.wait() != 0:
        raise SystemExit("chat failed; run it by hand to see why")
    return first, time.perf_counter() - start


def serve_warm() -> None:
    """Child mode: open a session once, then answer QUESTION for each line read on stdin."""
    sys.path.insert(0, str(ROOT))
    from langchain_core.callbacks import BaseCallbackHandler

    from app.config import load_settings
    from app.session.conversation import start_conversation
    from app.session.resources import open_resources
    from chains.core.events import AnswerText, answer_events

    class PromptTokens(BaseCallbackHandler):
        tokens = 0

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            usage = getattr(response.generations[0][0].message, "usage_metadata", None) or {}
            self.tokens = usage.get("input_tokens", 0)

    started = time.perf_counter()
    resources = open_resources(load_settings())
    session = start_conversation(resources, "rag")
    print(json.dumps({"session_open_s": time.perf_counter() - started}), flush=True)
    assert session.chain is not None
    for _ in sys.stdin:
        client = getattr(resources.model, "client", None)
        if client is not None:
            client.reset()  # no prompt prefix kept from the previous question
        counter = PromptTokens()
        start = time.perf_counter()
        first = None
        stream = session.chain.stream(
            {"question": QUESTION, "history": []}, config={"callbacks": [counter]}
        )
        for event in answer_events(stream):
            if isinstance(event, AnswerText) and first is None:
                first = time.perf_counter() - start
        whole = time.perf_counter() - start
        row = {"first": first, "whole": whole, "prompt_tokens": counter.tokens}
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_warm:
        serve_warm()
        return
    sys.path.insert(0, str(ROOT))
    from app.evaluation.report import machine

    at_start = machine()
    with tempfile.TemporaryDirectory() as store:
        env = {
            **os.environ,
            "CHROMA_DIR": store,
            "MODEL_CACHE_DIR": "",  # beside the store, as for a user
            "EMBEDDING_PROVIDER": "local",
            "CHAT_PROVIDER": "local",
            "LOCALRAG_ENV_FILE": os.devnull,
        }
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "app.ingest"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        ingest_s = time.perf_counter() - started
        cold(env)  # untimed: the model files into the page cache
        warm = subprocess.Popen(
            [sys.executable, __file__, "--serve-warm"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert warm.stdin is not None
        assert warm.stdout is not None
        session_open = json.loads(warm.stdout.readline())["session_open_s"]
        colds, warms = [], []
        for _ in range(args.runs):
            colds.append(cold(env))
            warm.stdin.write("ask\n")
            warm.stdin.flush()
            warms.append(json.loads(warm.stdout.readline()))
        warm.stdin.close()
        warm.wait()
    cold_first = statistics.median(c[0] for c in colds)
    warm_first = statistics.median(w["first"] for w in warms)
    result = {
        "question": QUESTION,
        "runs": args.runs,
        "cold_first_token_s": [round(c[0], 2) for c in colds],
        "cold_whole_answer_s": [round(c[1], 2) for c in colds],
        "warm_first_token_s": [round(w["first"], 2) for w in warms],
        "warm_whole_answer_s": [round(w["whole"], 2) for w in warms],
        "median": {
            "cold_first_token_s": round(cold_first, 2),
            "cold_whole_answer_s": round(statistics.median(c[1] for c in colds), 2),
            "warm_first_token_s": round(warm_first, 2),
            "warm_whole_answer_s": round(statistics.median(w["whole"] for w in warms), 2),
            "cold_start_overhead_s": round(cold_first - warm_first, 2),
        },
        "prompt_tokens": warms[-1]["prompt_tokens"],
        "warm_session_open_s": round(session_open, 2),
        "ingest_s": round(ingest_s, 1),
        "machine_at_start": at_start,
        "machine_at_end": machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
