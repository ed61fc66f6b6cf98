"""The corpus as files, ingested through the app's own pipeline into a collection of its own.

Each document becomes `<cache>/docs/<shard>/<name>.txt` (title, blank line, text) and the
folder is kept equal to the corpus by `sync_collection`, exactly as `python -m app.ingest`
would: on a re-run unchanged files are skipped, so the collection is reused. A file is only
rewritten when its text changed, so its content hash, and with it the stored chunks, stay put.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.console import RichProgress, err, status
from app.evaluation.beir import BeirDataset, CorpusDoc
from app.indexing.reports import IngestReport, SyncProgress
from app.indexing.sync import sync_collection
from app.models.embeddings import ModelEmbeddings
from app.store import open_store
from app.store.library import Library
from loaders.discovery import file_name

SAFE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
SHARDS_HEX = 2  # 256 sub-folders: ~20 files each at 5k documents, ~4k at a million


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def doc_source(doc_id: str) -> str:
    """The file (relative to the docs folder) that holds a corpus document.

    Ids that are safe as file names on every file system (lower-case letters, digits, `-`, `_`)
    are used as they are; any other id (slashes, dots, upper case, which would collide on
    case-insensitive disks, anything non-ASCII) becomes `_<readable part>-<hash of the id>`.
    A safe name never starts with `_`, so the two kinds cannot collide.
    """
    digest = short_hash(doc_id, 40)
    shard = digest[:SHARDS_HEX]
    name = doc_id if SAFE_ID.fullmatch(doc_id) else f"_{slug(doc_id, 40)}-{digest[:16]}"
    return f"{shard}/{name}.txt"


def cache_dir(settings: Settings, dataset_folder: Path) -> Path:
    """One cache per dataset folder: its name plus a hash of its absolute path."""
    folder = dataset_folder.expanduser().resolve()
    return settings.chroma_dir / "eval" / f"{slug(folder.name)}-{short_hash(str(folder))}"


def eval_collection_name(dataset_folder: Path, embeddings: ModelEmbeddings) -> str:
    """`eval-<dataset>-<path hash>-<provider>-<model>`: its own collection per dataset and model,
    never the user's (Chroma allows 3-512 characters of [a-zA-Z0-9._-])."""
    folder = dataset_folder.expanduser().resolve()
    model = slug(f"{embeddings.info.provider}-{embeddings.info.name}", 60)
    return f"eval-{slug(folder.name, 40)}-{short_hash(str(folder), 6)}-{model}"


@dataclass
class WrittenCorpus:
    folder: Path
    source_to_id: dict[str, str]
    written: int  # files created or rewritten this run
    removed: int  # files of documents no longer in the corpus


def write_corpus(docs: Iterable[CorpusDoc], folder: Path) -> WrittenCorpus:
    """Make `folder` hold exactly one file per document, touching only what differs."""
    folder.mkdir(parents=True, exist_ok=True)
    source_to_id: dict[str, str] = {}
    written = 0
    for doc in docs:
        source = doc_source(doc.doc_id)
        if source in source_to_id:  # only a 64-bit hash collision could get here
            raise RuntimeError(f"ids {source_to_id[source]!r} and {doc.doc_id!r} share {source}")
        source_to_id[source] = doc.doc_id
        path = folder / source
        data = doc.file_text.encode("utf-8", "surrogatepass")
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written += 1
    removed = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() not in source_to_id:
            path.unlink()
            removed += 1
    return WrittenCorpus(folder, source_to_id, written, removed)


class LogProgress:
    """Progress for runs without a terminal (nohup, CI): a status line every ~10%."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.next_report = 0

    def files_to_parse(self, count: int) -> None:
        if count:
            status(f"Parsing {count} corpus files")

    def stage(self, name: str) -> None: ...

    def file_parsed(self, file: str, pages: int, ocr_pages: int, reason: str) -> None: ...

    def working(self, line: str) -> None: ...

    def chunks_to_embed(self, count: int) -> None:
        self.total += count

    def chunks_embedded(self, count: int) -> None:
        self.done += count
        if self.done >= self.next_report:
            status(f"Embedded {self.done} chunks so far ({self.total} queued)")
            self.next_report = self.done + max(500, self.total // 10)


def ingest_corpus(
    settings: Settings, dataset: BeirDataset, embeddings: ModelEmbeddings
) -> tuple[Settings, WrittenCorpus, IngestReport]:
    """Write the corpus as files and sync the eval collection with them."""
    cache = cache_dir(settings, dataset.folder)
    corpus = write_corpus(dataset.corpus.values(), cache / "docs")
    eval_settings = settings.model_copy(
        update={"collection_name": eval_collection_name(dataset.folder, embeddings)}
    )
    status(
        f"Corpus: {len(dataset.corpus)} documents in {corpus.folder} "
        f"({corpus.written} written, {corpus.removed} removed); "
        f"syncing collection {eval_settings.collection_name}"
    )
    # A collection from before libraries is derived data like the rest: made again.
    store = open_store(eval_settings)
    name = eval_settings.collection_name
    if Library.find(store, name) is None and store.collection(name) is not None:
        store.drop_collection(name)
    progress: SyncProgress = RichProgress() if err.is_terminal else LogProgress()
    with progress.display if isinstance(progress, RichProgress) else contextlib.nullcontext():
        report = sync_collection(
            eval_settings, [corpus.folder], embeddings, progress=progress, store=store
        )
    # Stored names start with the folder's label in the library (`docs/`).
    store.refresh()
    library = Library.find(store, name)
    assert library is not None
    label = next(s.label for s in library.sources if Path(s.path) == corpus.folder.absolute())
    corpus.source_to_id = {file_name(label, k): v for k, v in corpus.source_to_id.items()}
    return eval_settings, corpus, report
