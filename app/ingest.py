"""`python -m app.ingest`: add folders and files to your library, sync it, list, remove, watch
and rebuild it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from app.config import Settings, load_settings
from app.console import RichProgress, out, run, status
from app.errors import ConfigError, ExitCode
from app.store.catalog import STATUSES
from app.telemetry.tracing import setup_tracing

# The store, the model and the sync are imported where they are used: every parser worker
# runs this module again when it starts (multiprocessing re-imports `__main__` in each
# forkserver child, CPython gh-126631, fixed in 3.13 only), and the first chunk waits for
# that: 0.6 s of imports a worker, on the cores the model needs.
if TYPE_CHECKING:
    from app.indexing.reports import IngestReport, RemoveReport
    from app.store.catalog import Status
    from app.store.library import Library

EPILOG = (
    "Exit status: 0 done, every file went in; 2 bad arguments or settings; 3 some files were "
    "skipped (listed with reasons) or a source is missing (its chunks are kept); 4 model "
    "server failed, or the library was embedded with a model whose provider is unavailable; "
    "5 store refused (another ingest running, another model's collection, unreachable). "
    "--list and --files: 0 shown (whatever the files' statuses), 2 a path or label that is not "
    "in the library."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.ingest",
        description="Add folders and files to your library and keep its index in sync: new "
        "paths become sources; only the sources named are synced (all of them when none is). "
        "Unchanged files are skipped; edited and deleted files are brought up to date.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="folders or files to add and sync (default: every source of the library; "
        "DOCS_DIR, data/docs, when it has none)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--remove", action="store_true", help="remove these sources and their chunks"
    )
    action.add_argument("--list", action="store_true", help="list the library's sources")
    action.add_argument(
        "--files",
        action="store_true",
        help="show every file of the library (or of the sources, folders and files named) with "
        "its status: indexed, ocr (pages read by OCR), skipped or failed, and why",
    )
    action.add_argument(
        "--watch",
        action="store_true",
        help="sync, then keep syncing as files are created, changed, moved or deleted "
        "(Ctrl-C stops)",
    )
    action.add_argument(
        "--rebuild",
        action="store_true",
        help="re-embed every source into a new collection; chat uses the old one until the "
        "new one is complete",
    )
    parser.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="with --files: only files with this status (repeat for several)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.status and not args.files:
        parser.error("--status filters --files: add --files")
    if args.remove and not args.paths:
        parser.error("--remove needs the sources to remove (paths, or labels from --list)")
    if args.list and args.paths:
        parser.error("--list takes no paths")
    if args.watch and args.json:
        parser.error("--watch prints progress lines, not JSON")
    if args.rebuild and args.paths:
        parser.error(
            "--rebuild re-embeds every source of the library into a new collection, so it takes "
            "no paths (with some, the other sources would be lost). Run it alone; to re-read one "
            "source, --remove it and add it again"
        )
    return args


def ingest(settings: Settings, paths: list[Path], *, rebuild: bool = False) -> IngestReport:
    from app.indexing.sync import sync_collection
    from app.models import registry
    from app.session.resources import open_embeddings, prepare_for_questions
    from app.store import open_store

    embeddings = open_embeddings(settings)
    store = open_store(settings, status)
    progress = RichProgress()
    with progress.display:
        report = sync_collection(
            settings,
            paths,
            embeddings,
            rebuild=rebuild,
            progress=progress,
            advice=registry.advice(settings),
            store=store,
        )
    # Torch is loaded now anyway: the export of the query model costs least here.
    prepare_for_questions(settings, embeddings)
    return report


def print_report(report: IngestReport) -> None:
    for note in report.notes:
        status(note)
    sources = Table(title=f"Library {report.library} (collection {report.collection})")
    for column in ("source", "status", "files", "chunks", "path"):
        sources.add_column(column, justify="right" if column in ("files", "chunks") else "left")
    for source in report.sources:
        sources.add_row(
            escape(source.label),
            escape(source.status),
            str(source.files),
            str(source.chunks),
            escape(source.path),
        )
    files = Table(show_header=True)
    for column in ("new", "changed", "unchanged", "deleted", "failed"):
        files.add_column(f"files {column}", justify="right")
    files.add_row(*(str(n) for n in report.as_dict()["files"].values()))
    chunks = Table(show_header=True)
    for column in ("chunks added", "chunks kept", "chunks removed"):
        chunks.add_column(column, justify="right")
    chunks.add_row(str(report.chunks_added), str(report.chunks_kept), str(report.chunks_removed))
    stages = Table(show_header=True)
    for stage in report.seconds:
        stages.add_column(f"{stage} s", justify="right")
    stages.add_row(*(f"{s:.2f}" for s in report.seconds.values()))
    out.print(sources, files, chunks, stages)
    if report.ocr_files:
        out.print(
            f"Read by OCR: {report.ocr_pages} pages of {report.ocr_files} files "
            "(`python -m app.ingest --files --status ocr` lists them)."
        )
    for name, reason in sorted(report.failed.items()):
        out.print(f"[yellow]skipped[/] {escape(name)}: {escape(reason)}", soft_wrap=True)
    for message in report.missing:
        out.print(f"[yellow]kept[/] {escape(message)}", soft_wrap=True)


def watch(settings: Settings, paths: list[Path]) -> int:
    """Sync as a plain run does, then keep syncing what changes until Ctrl-C."""
    from app.indexing.sync import sync_collection
    from app.indexing.watch import StopRequest, watch_library
    from app.models import registry
    from app.session.resources import open_embeddings

    embeddings = open_embeddings(settings)
    request = StopRequest(
        lambda: status("Stopping after the sync under way (Ctrl-C again to stop at once).")
    )
    with request.installed() as stop:
        progress = RichProgress()
        with progress.display:
            report = sync_collection(
                settings, paths, embeddings, progress=progress, advice=registry.advice(settings)
            )
        print_report(report)
        labels = [s.label for s in report.sources] if paths else None
        if not stop.is_set():
            watch_library(
                settings,
                embeddings,
                labels,
                print_sync_line,
                status,
                stop,
                registry.advice(settings),
            )
    status("Stopped. Every change reported above is in the library.")
    return int(ExitCode.OK)


def print_sync_line(report: IngestReport) -> None:
    """One line per sync while watching."""
    changed = ", ".join(
        f"{n} {kind}" for kind, n in report.as_dict()["files"].items() if n and kind != "unchanged"
    )
    labels = ", ".join(dict.fromkeys(s.label for s in report.sources))
    out.print(
        f"{time.strftime('%H:%M:%S')} {escape(labels)}: {changed or 'no file changed'}; "
        f"{report.chunks_added} chunks embedded, {report.chunks_removed} removed "
        f"({report.seconds.get('total', 0):.1f} s)",
        soft_wrap=True,
    )
    for name, reason in sorted(report.failed.items()):
        out.print(f"[yellow]skipped[/] {escape(name)}: {escape(reason)}", soft_wrap=True)
    for message in report.missing:
        out.print(f"[yellow]kept[/] {escape(message)}", soft_wrap=True)


def library_to_list(settings: Settings) -> Library | None:
    """The library `--list` and `--files` show: the one of the configured embedding model."""
    from app.session.resources import open_embeddings
    from app.store import open_store
    from app.store.library import library_to_show

    model = open_embeddings(settings).info.key
    return library_to_show(open_store(settings, status), settings, model)


def list_library(settings: Settings) -> dict[str, Any] | None:
    from app.store.library import describe_library

    library = library_to_list(settings)
    return describe_library(library) if library is not None else None


def print_library(listing: dict[str, Any] | None) -> None:
    if listing is None:
        out.print("The library is empty: add a folder with `python -m app.ingest PATH`.")
        return
    table = Table(
        title=f"Library {listing['library']} ({listing['embedding_model']}, "
        f"collection {listing['collection']})"
    )
    for column in ("source", "files", "chunks", "last synced", "status", "path"):
        table.add_column(column, justify="right" if column in ("files", "chunks") else "left")
    for source in listing["sources"]:
        table.add_row(
            escape(source["label"]),
            str(source["files"]),
            str(source["chunks"]),
            escape(source["last_synced"] or "never"),
            escape(source["status"]),
            escape(source["path"]),
        )
    out.print(table)


def list_files(
    settings: Settings, args: list[str], statuses: list[Status] | None
) -> dict[str, Any] | None:
    from app.store.library import describe_files, file_selection

    library = library_to_list(settings)
    if library is None:
        if args:
            raise ConfigError(f"The library is empty: {', '.join(args)} is not in it.")
        return None
    return describe_files(settings, library, file_selection(library, args) or None, statuses)


STATUS_STYLE = {"indexed": "green", "ocr": "cyan", "skipped": "yellow", "failed": "red"}


def print_files(listing: dict[str, Any] | None) -> None:
    if listing is None:
        out.print("The library is empty: add a folder with `python -m app.ingest PATH`.")
        return
    table = Table(title=f"Files of library {listing['library']}")
    for column in ("file", "status", "pages", "OCR'd", "chunks", "chars", "reason"):
        table.add_column(
            column, justify="left" if column in ("file", "status", "reason") else "right"
        )
    for row in listing["files"]:
        paged = row["status"] in ("indexed", "ocr")
        table.add_row(
            escape(row["file"]),
            f"[{STATUS_STYLE[row['status']]}]{row['status']}[/]",
            str(row["pages"]) if paged else "",
            str(row["ocr_pages"]) if paged else "",
            str(row["chunks"]) if paged else "",
            str(row["chars"]) if paged else "",
            escape(row["reason"]),
        )
    if listing["files"]:
        out.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in listing["counts"].items())
    out.print(f"{sum(listing['counts'].values())} files: {counts}.")
    for label in listing["not_catalogued"]:
        out.print(
            f"[yellow]not recorded[/] {escape(label)}: synced before files had a status; "
            f"`python -m app.ingest` records them.",
            soft_wrap=True,
        )


def print_removed(report: RemoveReport) -> None:
    for note in report.notes:
        status(note)
    for source in report.removed:
        out.print(
            f"Removed {escape(source.label)} ({escape(source.path)}): "
            f"{source.files} files, {source.chunks} chunks.",
            soft_wrap=True,
        )
    out.print(f"{report.chunks_removed} chunks deleted from library {escape(report.library)}.")


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_tracing("ingest")  # only when OTEL_* variables ask for traces
    settings = load_settings()
    if args.list:
        listing = list_library(settings)
        if args.json:
            print(json.dumps(listing or {"sources": []}, indent=2, ensure_ascii=False))
        else:
            print_library(listing)
        return int(ExitCode.OK)
    if args.files:
        files = list_files(settings, [str(p) for p in args.paths], args.status)
        if args.json:
            print(json.dumps(files or {"files": []}, indent=2, ensure_ascii=False))
        else:
            print_files(files)
        return int(ExitCode.OK)
    if args.remove:
        from app.indexing.maintenance import remove_sources
        from app.session.resources import open_embeddings

        model = open_embeddings(settings).info.key
        removed = remove_sources(settings, model, [str(p) for p in args.paths])
        if args.json:
            print(json.dumps(removed.as_dict(), indent=2, ensure_ascii=False))
        else:
            print_removed(removed)
        return int(ExitCode.OK)
    if args.watch:
        return watch(settings, args.paths)
    report = ingest(settings, args.paths, rebuild=args.rebuild)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return int(ExitCode.OK if report.ok else ExitCode.PARTIAL)


if __name__ == "__main__":
    raise SystemExit(main())
