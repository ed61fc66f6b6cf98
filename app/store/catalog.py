"""The file catalog: one row per file of the library's sources, with its status (indexed, ocr,
skipped, failed), the reason in words, its pages, OCR'd pages, chunks and characters, and the
size, times and inode it had when it was read. `python -m app.ingest --files` shows it.

It is derived data, like the keyword index: written by the sync under the writer lock, in a
SQLite file beside the store, per physical collection. It also makes a sync of an unchanged
library cheap: a file whose size, times and inode match its row is unchanged, with no read
of the file or of the store, but only while the catalog is known to mirror the store: each
source's rows carry the library generation they were written at, a source being written is
marked DIRTY first, and a source whose generation differs from the library's (another machine
synced it, a run was killed) is checked the slow way, from its files and the store, and its
rows written again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Literal

from app.config import Settings
from app.paths import private_dir

SCHEMA = "1"
DIRTY = -1
Status = Literal["indexed", "ocr", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("indexed", "ocr", "skipped", "failed")


@dataclass
class FileRow:
    name: str  # label/path inside the source, as stored and cited
    root: str  # the source's label
    status: Status
    reason: str = ""  # for skipped and failed: why, in words a person understands
    size: int = -1
    stamp: str = ""  # size, mtime, ctime and inode when read: any write changes it
    fingerprint: str = ""
    pages: int = 0
    ocr_pages: int = 0
    chunks: int = 0
    chars: int = 0
    synced: str = ""

    @property
    def searchable(self) -> bool:
        return self.status in ("indexed", "ocr")

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COLUMNS = [f.name for f in fields(FileRow)]


class FileCatalog:
    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        # check_same_thread=False: the server reads it from worker threads.
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        with self._transaction():
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            found = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            if found.get("schema") != SCHEMA:
                self.db.execute("DROP TABLE IF EXISTS files")
                self.db.execute("DROP TABLE IF EXISTS sources")
                self.db.execute(
                    "CREATE TABLE files (name TEXT PRIMARY KEY, root TEXT NOT NULL, "
                    "status TEXT NOT NULL, reason TEXT, size INTEGER, stamp TEXT, "
                    "fingerprint TEXT, pages INTEGER, ocr_pages INTEGER, chunks INTEGER, "
                    "chars INTEGER, synced TEXT)"
                )
                self.db.execute("CREATE INDEX files_root ON files (root)")
                self.db.execute(
                    "CREATE TABLE sources (root TEXT PRIMARY KEY, generation INTEGER NOT NULL, "
                    "policy TEXT NOT NULL)"
                )
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA,))
            # Counts per status and the skipped/failed files are read from this index alone
            # (GET /api/library at 100,000 files): added to catalogs made before it too.
            self.db.execute("CREATE INDEX IF NOT EXISTS files_status ON files (status, root)")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # --- Trust ------------------------------------------------------------------------------

    def trusted(self, root: str, generation: int, policy: str) -> bool:
        """Whether the source's rows mirror the store at this library generation, written
        under this chunking policy (a new CHUNK_SIZE re-chunks every file)."""
        row = self.db.execute(
            "SELECT generation, policy FROM sources WHERE root = ?", (root,)
        ).fetchone()
        return row is not None and row[0] == generation != DIRTY and row[1] == policy

    def mark(self, root: str, generation: int, policy: str = "") -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO sources VALUES (?, ?, ?) ON CONFLICT (root) DO UPDATE SET "
                "generation = excluded.generation, policy = excluded.policy",
                (root, generation, policy),
            )

    # --- Rows -------------------------------------------------------------------------------

    def rows(self, root: str | None = None, names: Iterable[str] | None = None) -> list[FileRow]:
        query = f"SELECT {', '.join(COLUMNS)} FROM files"
        if names is not None:
            wanted = list(names)
            found: list[FileRow] = []
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                found += [
                    FileRow(*r)
                    for r in self.db.execute(
                        f"{query} WHERE name IN ({', '.join('?' * len(part))})", part
                    )
                ]
            return found
        if root is not None:
            return [FileRow(*r) for r in self.db.execute(f"{query} WHERE root = ?", (root,))]
        return [FileRow(*r) for r in self.db.execute(f"{query} ORDER BY name")]

    def counts(self) -> dict[str, dict[str, int]]:
        """root -> status -> files, from the index (no row is read)."""
        found: dict[str, dict[str, int]] = {}
        for root, status, count in self.db.execute(
            "SELECT root, status, COUNT(*) FROM files GROUP BY status, root"
        ):
            found.setdefault(root, {})[status] = count
        return found

    def ocr_totals(self) -> dict[str, tuple[int, int]]:
        """root -> (files, pages) read by OCR."""
        return {
            root: (files, pages or 0)
            for root, files, pages in self.db.execute(
                "SELECT root, COUNT(*), SUM(ocr_pages) FROM files WHERE status = 'ocr' "
                "GROUP BY root"
            )
        }

    def problems(self, roots: list[str], limit: int, offset: int) -> list[FileRow]:
        """Skipped and failed files of the roots, by name, a page of them."""
        if not roots:
            return []
        query = (
            f"SELECT {', '.join(COLUMNS)} FROM files WHERE status IN ('skipped', 'failed') "
            f"AND root IN ({', '.join('?' * len(roots))}) ORDER BY name LIMIT ? OFFSET ?"
        )
        return [FileRow(*r) for r in self.db.execute(query, [*roots, limit, offset])]

    def put(self, rows: Iterable[FileRow]) -> None:
        with self._transaction():
            self.db.executemany(
                f"INSERT OR REPLACE INTO files ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                [astuple(r) for r in rows],
            )

    def remove(self, names: Iterable[str]) -> None:
        with self._transaction():
            self.db.executemany("DELETE FROM files WHERE name = ?", [(n,) for n in names])

    def forget(self, root: str) -> None:
        with self._transaction():
            self.db.execute("DELETE FROM files WHERE root = ?", (root,))
            self.db.execute("DELETE FROM sources WHERE root = ?", (root,))


def file_stamp(stat: os.stat_result) -> str:
    """What changes whenever a file's content may have: size, modification and change times
    (nanoseconds) and inode (an editor that saves by renaming a new file over the old one)."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def catalog_path(settings: Settings, store_key: str, collection_name: str) -> Path:
    return private_dir(settings.chroma_dir) / "catalog" / store_key / f"{collection_name}.sqlite3"


def read_catalog(settings: Settings, store_key: str, collection_name: str) -> list[FileRow]:
    """Every row, by name, for showing: a collection no sync has catalogued yet has none (no
    file is created for asking)."""
    path = catalog_path(settings, store_key, collection_name)
    if not path.is_file():
        return []
    catalog = FileCatalog(path)
    try:
        return catalog.rows()
    finally:
        catalog.close()


def open_catalog(settings: Settings, store_key: str, collection_name: str) -> FileCatalog:
    return FileCatalog(catalog_path(settings, store_key, collection_name))


def delete_catalog(settings: Settings, store_key: str, collection_name: str) -> None:
    path = catalog_path(settings, store_key, collection_name)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
