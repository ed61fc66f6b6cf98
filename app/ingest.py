"""`python -m app.ingest [PATH ...]`: make the collection match the files under PATH."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from app.cli import RichProgress, embeddings_for, out, run
from app.config import Settings, load_settings
from app.errors import ConfigError, ExitCode
from app.sync import IngestReport, sync_collection


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.ingest",
        description="Load, split, embed and store documents. Unchanged files are skipped; "
        "edited and deleted files are brought up to date.",
        epilog="Exit status: 0 every file went in; 2 bad arguments or settings; 3 some files "
        "were skipped (listed with reasons); 4 model server failed; 5 store refused.",
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, help="folders or files (default: DOCS_DIR, data/docs)"
    )
    parser.add_argument("--rebuild", action="store_true", help="drop the collection, re-embed all")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def ingest(settings: Settings, paths: list[Path], *, rebuild: bool = False) -> IngestReport:
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise ConfigError("No such file or folder: " + ", ".join(str(p) for p in missing))
    embeddings = embeddings_for(settings)
    progress = RichProgress()
    with progress.display:
        return sync_collection(settings, paths, embeddings, rebuild=rebuild, progress=progress)


def print_report(report: IngestReport) -> None:
    files = Table(title=f"Collection {report.collection} ({report.embedding_model})")
    for column in ("new", "changed", "unchanged", "deleted", "failed"):
        files.add_column(f"files {column}", justify="right")
    files.add_row(
        *(str(n) for n in report.as_dict()["files"].values()),
    )
    chunks = Table(show_header=True)
    for column in ("chunks added", "chunks kept", "chunks removed"):
        chunks.add_column(column, justify="right")
    chunks.add_row(str(report.chunks_added), str(report.chunks_kept), str(report.chunks_removed))
    stages = Table(show_header=True)
    for stage in report.seconds:
        stages.add_column(f"{stage} s", justify="right")
    stages.add_row(*(f"{s:.2f}" for s in report.seconds.values()))
    out.print(files, chunks, stages)
    for source, reason in sorted(report.failed.items()):
        out.print(f"[yellow]skipped[/] {escape(source)}: {escape(reason)}", soft_wrap=True)


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    report = ingest(settings, args.paths or [settings.docs_dir], rebuild=args.rebuild)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
    return int(ExitCode.OK if report.ok else ExitCode.PARTIAL)


if __name__ == "__main__":
    raise SystemExit(main())
