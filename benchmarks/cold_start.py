"""Cold start of `python -m app.chat -q` on the embedded default: seconds to the first answer
token, measured from process start, with the sample corpus already ingested.

    python benchmarks/cold_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Who founded the town of Brindlemoor?"


def first_token_seconds(env: dict[str, str]) -> tuple[float, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        env = {
            **os.environ,
            "CHROMA_DIR": store,
            "EMBEDDING_PROVIDER": "local",
            "CHAT_PROVIDER": "local",
            "LOCALRAG_ENV_FILE": os.devnull,
        }
        subprocess.run(
            [sys.executable, "-m", "app.ingest"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        results = [first_token_seconds(env) for _ in range(args.runs)]
    firsts = [r[0] for r in results]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"first token (s): {', '.join(f'{f:.1f}' for f in firsts)}; "
        f"median {statistics.median(firsts):.1f}"
    )
    print(f"whole answer (s): median {statistics.median(r[1] for r in results):.1f}")


if __name__ == "__main__":
    main()
