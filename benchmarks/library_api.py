"""`GET /api/library` on a 100,000-file library: what the web page's Library section costs the
server each time it polls (every 1.5 s while a sync runs).

    python benchmarks/library_api.py [--files 100000] [--requests 20]

A real `python -m app.serve` (models: the Ollama test server on loopback) with a one-file
library; its file catalog is then seeded directly with `--files` rows in that source (1% OCR'd,
1% skipped, 1% failed, the rest indexed), as a sync of that many files leaves it. Measured over
HTTP, one request at a time, `--requests` each: wall time at the client (median, p95) and the
server's CPU time per request (psutil on its pid), for `GET /api/library` (counts in SQL from
the catalog's (status, root) index, one page of 100 skipped/failed files) and, for comparison,
`GET /api/files?limit=100` (which reads every row).

Results: stdout and benchmarks/results/library-api.json (date, lscpu model name, load averages
before and after).
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.store.catalog import FileCatalog, FileRow  # noqa: E402
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding  # noqa: E402
from tests.serve_process import ServeProcess, ollama_env  # noqa: E402


def lscpu_model() -> str:
    output = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next(
        (line.split(":", 1)[1].strip() for line in output.splitlines() if "Model name" in line), ""
    )


def seed(chroma: Path, files: int) -> None:
    (path,) = chroma.glob("catalog/*/*.sqlite3")
    catalog = FileCatalog(path)
    rows = []
    for n in range(files):
        name = f"docs/folder{n // 1000:03}/file{n:06}.txt"
        kind = n % 100
        if kind == 0:
            rows.append(FileRow(name, "docs", "ocr", "", 40_000, "s", "f", 3, 3, 6, 9_000))
        elif kind == 1:
            rows.append(FileRow(name, "docs", "skipped", "unsupported file type (.xyz)"))
        elif kind == 2:
            rows.append(FileRow(name, "docs", "failed", "damaged PDF (no trailer)", 900, "s"))
        else:
            rows.append(FileRow(name, "docs", "indexed", "", 2_000, "s", "f", 1, 0, 2, 1_800))
    catalog.put(rows)
    catalog.close()


def measure(server: ServeProcess, path: str, requests: int) -> dict[str, Any]:
    import psutil

    assert server.process is not None
    proc = psutil.Process(server.process.pid)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        first = client.get(path)
        first.raise_for_status()
        walls = []
        cpu_before = sum(proc.cpu_times()[:2])
        for _ in range(requests):
            start = time.perf_counter()
            client.get(path).raise_for_status()
            walls.append((time.perf_counter() - start) * 1000)
        cpu = (sum(proc.cpu_times()[:2]) - cpu_before) * 1000 / requests
    walls.sort()
    return {
        "path": path,
        "wall_ms_median": round(statistics.median(walls), 1),
        "wall_ms_p95": round(walls[max(0, int(len(walls) * 0.95) - 1)], 1),
        "server_cpu_ms_per_request": round(cpu, 1),
        "response_bytes": len(first.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/library-api.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        OllamaTestServer(reply="ok", embedder=bag_of_words_embedding) as ollama,
    ):
        docs = Path(tmp) / "docs"
        docs.mkdir()
        (docs / "bakery.txt").write_text("The bakery sells rye bread.")
        env = ollama_env(
            Path(tmp) / "chroma",
            ollama.base_url,
            docs,
        )
        with ServeProcess(env) as server:
            seed(Path(tmp) / "chroma", args.files)
            results = [
                measure(server, "/api/library", args.requests),
                measure(server, "/api/files?limit=100", args.requests),
            ]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["python", *sys.argv]),
        "files": args.files,
        "requests": args.requests,
        "lscpu_model_name": lscpu_model(),
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    print(json.dumps(report, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
