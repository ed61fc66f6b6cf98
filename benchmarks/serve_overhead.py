"""What `python -m app.serve` adds to an answer, and what running answers side by side buys.

    python benchmarks/serve_overhead.py [--requests 30] [--json benchmarks/results/serve.json]

The chat and embedding models are the Ollama test server (tests/ollama_server.py) on loopback,
so the model costs the same every time and what is measured is the rest:

1. Overhead: the same questions answered in-process (the conversation's chain `astream`, as
   the server runs it) and over HTTP (`POST /api/chat`, SSE read to the `done` event), to the
   first answer token and to the end; medians over `--requests` questions, one at a time.
2. Concurrency: 8 clients at once while the test server waits `--model-seconds` before each
   reply (the query embedding and the answer: two waits per question), with the server's
   Ollama default of 4 answers at a time and with 1 (what the embedded model gets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import load_settings  # noqa: E402
from app.evaluation.report import machine  # noqa: E402
from app.session.conversation import start_conversation  # noqa: E402
from app.session.resources import open_resources  # noqa: E402
from chains.core.events import AnswerText, aanswer_events  # noqa: E402
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding  # noqa: E402
from tests.serve_process import ServeProcess, serve_env  # noqa: E402

QUESTIONS = [
    "When does the first ferry leave?",
    "Who founded the town of Brindlemoor?",
    "How big is the telescope mirror?",
    "What happens at the Lantern Tide?",
    "Who chairs the ferry cooperative?",
]
REPLY = " ".join(f"word{i}" for i in range(60))  # 60 streamed pieces


def in_process(env: dict[str, str], count: int) -> tuple[list[float], list[float]]:
    os.environ.update(env)
    resources = open_resources(load_settings())
    session = start_conversation(resources, "rag")

    async def one(question: str) -> tuple[float, float]:
        session.rebuild()
        assert session.chain is not None
        start = time.perf_counter()
        first = None
        stream = session.chain.astream({"question": question, "history": []})
        async for event in aanswer_events(stream):
            if isinstance(event, AnswerText) and first is None:
                first = time.perf_counter() - start
        return first or 0.0, time.perf_counter() - start

    async def all_of_them() -> list[tuple[float, float]]:
        return [await one(QUESTIONS[i % len(QUESTIONS)]) for i in range(count)]

    timings = asyncio.run(all_of_them())
    session.close()
    resources.close()
    return [t[0] for t in timings], [t[1] for t in timings]


def over_http(url: str, question: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    with httpx.stream("POST", url + "/api/chat", json={"question": question}, timeout=120) as r:
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                if event == "token" and first is None:
                    first = time.perf_counter() - start
                if event == "error":
                    raise SystemExit(f"the server failed: {r.read()!r}")
    return first or 0.0, time.perf_counter() - start


def parallel_wall(url: str, clients: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: over_http(url, QUESTIONS[i % len(QUESTIONS)]), range(clients)))
    return time.perf_counter() - start


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--model-seconds", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    before = machine()
    ollama = OllamaTestServer(reply=REPLY, embedder=bag_of_words_embedding).start()
    try:
        with tempfile.TemporaryDirectory() as store:
            env = serve_env(
                Path(store),
                OLLAMA_BASE_URL=ollama.base_url,
                EMBEDDING_PROVIDER="ollama",
                CHAT_PROVIDER="ollama",
            )
            local_first, local_total = in_process(env, args.requests)
            with ServeProcess(env) as server:
                over_http(server.url, QUESTIONS[0])  # warm-up
                timings = [
                    over_http(server.url, QUESTIONS[i % len(QUESTIONS)])
                    for i in range(args.requests)
                ]
                ollama.delay = args.model_seconds
                four = parallel_wall(server.url, 8)
            with ServeProcess(env | {"SERVE_CONCURRENCY": "1"}) as serial:
                over_http(serial.url, QUESTIONS[0])
                one = parallel_wall(serial.url, 8)
            ollama.delay = 0.0
    finally:
        ollama.stop()
    result = {
        "command": "python benchmarks/serve_overhead.py " + " ".join(sys.argv[1:]),
        "machine_before": before,
        "machine_after": machine(),
        "requests": args.requests,
        "in_process_ms": {"first_token": ms(local_first), "whole_answer": ms(local_total)},
        "http_ms": {
            "first_token": ms([t[0] for t in timings]),
            "whole_answer": ms([t[1] for t in timings]),
        },
        "eight_clients": {
            "model_wait_seconds_per_call": args.model_seconds,
            "model_calls_per_answer": 2,
            "wall_seconds_4_at_a_time": round(four, 2),
            "wall_seconds_1_at_a_time": round(one, 2),
            "ratio_1_to_4": round(one / four, 2),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
