"""What drawing a cited page costs (`GET /api/passages/{chunk_id}/page.png`): app.retrieval.
page_images.render_page on every page of the sample PDFs, with the passage marked (the page's own
text, as pypdf reads it at ingest, stands for the cited chunk), and on the largest pages a PDF
may have, which the pixel bound (MAX_PIXELS) keeps small.

    python benchmarks/page_images.py [--width 1000] [--repeats 5]

Per page: the median time of `--repeats` draws (PNG encoding included), the PNG's size and
whether the passage was found to mark; the server caches what it drew, so a page is drawn once
per file version and width. Also: the file fingerprint the route checks first (a hash of the
whole file), and the process's peak resident memory after the largest pages.

Results: stdout and benchmarks/results/page-images.json (date, CPU, load average at start and
end). docs/serving.md ("Checking a citation") quotes them.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.evaluation.report import load_average, write_results  # noqa: E402
from app.indexing.splitter import ChunkPolicy  # noqa: E402
from app.indexing.sync import file_fingerprint  # noqa: E402
from app.paths import SAMPLE_DOCS_DIR  # noqa: E402
from app.retrieval.page_images import render_page  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "page-images.json"


def timed(repeats: int, work: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1), result


def sample_pages(width: int, repeats: int) -> list[dict[str, Any]]:
    from pypdf import PdfReader

    rows = []
    for path in sorted(SAMPLE_DOCS_DIR.rglob("*.pdf")):
        texts = [page.extract_text() or "" for page in PdfReader(path).pages]
        for number, text in enumerate(texts, 1):
            ms, image = timed(repeats, lambda p=path, n=number, t=text: render_page(p, n, width, t))
            rows.append(
                {
                    "file": str(path.relative_to(SAMPLE_DOCS_DIR)),
                    "page": number,
                    "ms": ms,
                    "png_bytes": image.size,
                    "pixels": [image.width, image.height],
                    "marked": image.marked,
                }
            )
            print(f"{rows[-1]['file']} p{number}: {ms} ms, {image.size:,} B, marked {image.marked}")
    return rows


def largest_pages(repeats: int) -> list[dict[str, Any]]:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(14_400, 14_400))  # the largest page PDF allows, 5 m square
    pdf.add_page()
    pdf.set_font("helvetica", size=400)
    pdf.text(400, 800, "A poster")
    pdf.add_page(format=(300, 14_400))  # a till roll, 48 times as tall as wide
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "huge.pdf"
        pdf.output(str(path))
        for number, shape in ((1, "14,400 pt square"), (2, "300 x 14,400 pt")):
            ms, image = timed(repeats, lambda n=number: render_page(path, n, 1200))
            rows.append(
                {
                    "page": shape,
                    "ms": ms,
                    "png_bytes": image.size,
                    "pixels": [image.width, image.height],
                }
            )
            print(f"{shape}: {ms} ms, {image.width} x {image.height} px")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description="What drawing a cited page costs: each sample PDF page with its passage "
        "marked, and the largest pages a PDF may have."
    )
    parser.add_argument("--width", type=int, default=1000, help="pixels (the page's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULT, help=f"results (default {RESULT})")
    args = parser.parse_args()
    load_start = load_average()
    pages = sample_pages(args.width, args.repeats)
    report = SAMPLE_DOCS_DIR / "observatory" / "annual-report-2024.pdf"
    fingerprint_ms, _ = timed(
        args.repeats, lambda: file_fingerprint(report, ChunkPolicy(1000, 150))
    )
    largest = largest_pages(args.repeats)
    write_results(
        args.json,
        load_start,
        command="python benchmarks/page_images.py " + " ".join(sys.argv[1:]),
        width=args.width,
        sample_pages=pages,
        sample_median_ms=statistics.median(p["ms"] for p in pages),
        sample_max_ms=max(p["ms"] for p in pages),
        fingerprint_ms={"file": report.name, "bytes": report.stat().st_size, "ms": fingerprint_ms},
        largest_pages=largest,
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    print(f"Results in {args.json}")


if __name__ == "__main__":
    main()
