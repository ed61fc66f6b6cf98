"""A BM25 keyword index over the stored chunks (SQLite FTS5), kept in step with the vectors.

Who writes it: the ingest, under the store's writer lock, in the same steps that write the
vectors (each batch of chunks written to Chroma is written here, each delete deleted here), so
after any kill and a rerun both hold the same chunk ids. A chunk id is UNIQUE, so writing one
twice changes nothing. Chat only reads it.

How it knows it is current: for every library source it records the library generation it
mirrors (the library bumps a source's generation whenever its chunks change). A copy that is
behind (server mode, where ingest runs on another machine; or a killed ingest) catches up on
just those sources, by chunk id, under the writer lock.

How text becomes terms is `index_terms` / `query_terms`: words for scripts that put spaces
between words (porter-stemmed by FTS5), and overlapping character bigrams plus single characters
for scripts that do not (Chinese, Japanese, Thai...), where FTS5's `unicode61` would make a
whole run of characters between punctuation one token that no question ever matches.
Measured on the Chinese sample set against unigrams, bigrams alone, FTS5 `trigram` and jieba
words: benchmarks/keyword_terms.py and the README. Change them together and bump TERMS_VERSION.
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_core.documents import Document

from app.config import Settings
from app.paths import private_dir
from app.store.base import ChunkCollection, ChunkStore, Selection
from app.text.writing_systems import HAN_KANA, UNSPACED

if TYPE_CHECKING:
    from app.store.library import LibraryRecord

# Bump when the tables change; TERMS_VERSION (below) when index_terms does: an index written
# otherwise is dropped, and every source then reads as behind and is caught up.
SCHEMA = "2"
TOKENIZER = "porter unicode61"
DIRTY = -1  # a source's generation while the ingest is writing its chunks
READ_PAGE = 5000  # chunks read from the store per request when catching up
WORD = re.compile(r"\w+", re.UNICODE)
UNSPACED_RUN = re.compile(f"[{UNSPACED}]+")
# A line break between two Han or kana characters is layout (PDF lines, wrapped text), not a
# word boundary: "竹\n编" is "竹编".
LAYOUT_BREAK = re.compile(f"(?<=[{HAN_KANA}])\\s+(?=[{HAN_KANA}])")
# Bump when index_terms changes: an index written with other terms is dropped and rebuilt.
TERMS_VERSION = 2


def _grams(run: str) -> list[str]:
    """Characters and overlapping bigrams of an unspaced run: 听雨桥 -> 听 雨 桥 听雨 雨桥."""
    return list(run) + [run[i : i + 2] for i in range(len(run) - 1)]


def index_terms(text: str) -> str:
    """The text FTS5 indexes: spaced words as they are, unspaced runs as grams between spaces."""
    text = LAYOUT_BREAK.sub("", text)
    return UNSPACED_RUN.sub(lambda m: " " + " ".join(_grams(m.group())) + " ", text)


def query_terms(query: str) -> list[str]:
    """The distinct terms of a question, lower-cased, in the same form as `index_terms`."""
    return list(dict.fromkeys(WORD.findall(index_terms(query).lower())))


class KeywordIndex:
    def __init__(self, path: Path, collection_id: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # check_same_thread=False: LangChain may call the retriever from a worker thread.
        # timeout: a reader waits for a writer's transaction instead of "database is locked".
        # isolation_level=None: transactions are explicit (`_transaction`), DDL included.
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=60, isolation_level=None)
        self._use_wal()
        wanted = {
            "schema": SCHEMA,
            "terms": str(TERMS_VERSION),
            "collection_id": collection_id,
        }
        with self._transaction():
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            found = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            if any(found.get(k) != v for k, v in wanted.items()):
                self._create(wanted)

    def _use_wal(self, patience: float = 60.0) -> None:
        """WAL: readers never block the writer. Two processes opening a new index at once (two
        chats started together) both ask for the lock that switch needs while each holds a
        shared one: SQLite answers "database is locked" at once, without waiting, to one of
        them, which then tries again."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE: writers queue for the lock up front, so two processes opening or
        catching up one index at once take turns instead of failing half-way."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _create(self, meta: dict[str, str]) -> None:
        """A fresh, empty index: every source then reads as behind and is caught up."""
        for table in ("chunks", "entries", "sources"):
            self.db.execute(f"DROP TABLE IF EXISTS {table}")
        self.db.execute(
            "CREATE TABLE entries (rowid INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, "
            "root TEXT NOT NULL, source TEXT, type TEXT)"
        )
        self.db.execute("CREATE INDEX entries_root ON entries (root)")
        self.db.execute("CREATE INDEX entries_source ON entries (source)")
        self.db.execute(f"CREATE VIRTUAL TABLE chunks USING fts5(text, tokenize='{TOKENIZER}')")
        # The library generation each source's rows mirror (DIRTY while being written).
        self.db.execute("CREATE TABLE sources (root TEXT PRIMARY KEY, generation INTEGER NOT NULL)")
        self.db.execute("DELETE FROM meta")
        self.db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())

    @property
    def collection_name(self) -> str:
        return self.path.stem

    def close(self) -> None:
        self.db.close()

    # --- Writing (the ingest, under the writer lock) -----------------------------------------

    def add(self, chunks: Iterable[Document]) -> int:
        """Index chunks by id; ones already indexed are left as they are (same id, same text)."""
        added = 0
        with self._transaction():
            for chunk in chunks:
                meta = chunk.metadata
                row = self.db.execute(
                    "INSERT INTO entries (chunk_id, root, source, type) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (chunk_id) DO NOTHING",
                    (
                        str(chunk.id),
                        str(meta.get("root", "")),
                        meta.get("source"),
                        meta.get("type"),
                    ),
                )
                if row.rowcount:
                    self.db.execute(
                        "INSERT INTO chunks (rowid, text) VALUES (?, ?)",
                        (row.lastrowid, index_terms(chunk.page_content)),
                    )
                    added += 1
        return added

    def remove(self, ids: Iterable[str]) -> None:
        with self._transaction():
            for chunk_id in ids:
                found = self.db.execute(
                    "SELECT rowid FROM entries WHERE chunk_id = ?", (chunk_id,)
                ).fetchone()
                if found:
                    self.db.execute("DELETE FROM chunks WHERE rowid = ?", found)
                    self.db.execute("DELETE FROM entries WHERE rowid = ?", found)

    def mark(self, root: str, generation: int) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO sources VALUES (?, ?) "
                "ON CONFLICT (root) DO UPDATE SET generation = excluded.generation",
                (root, generation),
            )

    def forget(self, root: str) -> None:
        """Drop a source that left the library: its rows and its generation."""
        self.remove(self.ids(root))
        with self._transaction():
            self.db.execute("DELETE FROM sources WHERE root = ?", (root,))

    # --- Reading -------------------------------------------------------------------------------

    def ids(self, root: str | None = None) -> set[str]:
        if root is None:
            return {r[0] for r in self.db.execute("SELECT chunk_id FROM entries")}
        return {
            r[0] for r in self.db.execute("SELECT chunk_id FROM entries WHERE root = ?", (root,))
        }

    def generations(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT root, generation FROM sources").fetchall())

    def behind(self, record: LibraryRecord) -> list[str]:
        """The sources (labels) whose rows may differ from the collection, removed ones too."""
        have = self.generations()
        stale = [s.label for s in record.sources if have.get(s.label) != s.generation]
        labels = {s.label for s in record.sources}
        rows = {r[0] for r in self.db.execute("SELECT DISTINCT root FROM entries")}
        return stale + sorted((set(have) | rows) - labels)

    def holds_below(self, folder: str) -> bool:
        """Whether any chunk of a file below `folder/` is indexed (an index range scan)."""
        prefix = f"{folder}/"
        found = self.db.execute(
            "SELECT 1 FROM entries WHERE source >= ? AND source < ? LIMIT 1",
            (prefix, f"{folder}0"),  # "0" follows "/": every name that starts with the prefix
        ).fetchone()
        return found is not None

    def sources(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT source FROM entries ORDER BY 1")]

    def search(
        self, query: str, limit: int, allowed_sources: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; higher is better."""
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        rows = self.db.execute(
            "SELECT e.chunk_id, e.source, -bm25(chunks) AS score FROM chunks "
            "JOIN entries e ON e.rowid = chunks.rowid "
            "WHERE chunks MATCH ? ORDER BY score DESC LIMIT ?",
            (match, limit * 4 if allowed_sources is not None else limit),
        )
        hits = [
            (chunk_id, score)
            for chunk_id, source, score in rows
            if allowed_sources is None or source in allowed_sources
        ]
        return hits[:limit]

    def coverage(self, query: str, texts: list[str]) -> list[float]:
        """For each text, the share of the question's keyword weight it contains (0-1): the
        question's words and character pairs, each weighted by its BM25 idf in this index, so a
        rare name counts for more than a question word such as 多少. Single characters of
        unspaced scripts are left out: nearly every chunk has some of them."""
        terms = [t for t in query_terms(query) if not UNSPACED_RUN.fullmatch(t) or len(t) > 1]
        if not terms:
            return [0.0 for _ in texts]
        total = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        weights = {}
        for term in terms:
            found = self.db.execute(
                "SELECT count(*) FROM chunks WHERE chunks MATCH ?", (f'"{term}"',)
            ).fetchone()[0]
            weights[term] = math.log((total - found + 0.5) / (found + 0.5) + 1)
        whole = sum(weights.values()) or 1.0
        return [
            sum(w for t, w in weights.items() if t in present) / whole
            for present in (set(query_terms(text)) for text in texts)
        ]

    # --- Catching up (under the writer lock) --------------------------------------------------

    def catch_up(self, collection: ChunkCollection | None, record: LibraryRecord) -> int:
        """Bring the sources that are behind in step with the collection, by chunk id: read
        their ids (not their text) and fetch only the chunks missing here. Returns the number
        of sources caught up."""
        stale = self.behind(record)
        labels = {s.label: s for s in record.sources}
        for root in stale:
            source = labels.get(root)
            if source is None or collection is None:
                self.forget(root)
                if source is not None:
                    self.mark(root, source.generation)
                continue
            stored = {chunk_id for chunk_id, _ in collection.rows(Selection(root=root))}
            indexed = self.ids(root)
            self.remove(indexed - stored)
            missing = sorted(stored - indexed)
            for start in range(0, len(missing), READ_PAGE):
                chunks = collection.get(missing[start : start + READ_PAGE])
                self.add(
                    Document(id=c.id, page_content=c.text, metadata=c.metadata) for c in chunks
                )
            self.mark(root, source.generation)
        return len(stale)


def index_path(settings: Settings, store_key: str, collection_name: str) -> Path:
    """Beside the store; per store, so a server's index never mixes with the local one's."""
    return (
        private_dir(settings.chroma_dir)
        / "keyword-index"
        / store_key
        / f"{collection_name}.sqlite3"
    )


def open_keyword_index(
    settings: Settings, store: ChunkStore, collection: ChunkCollection
) -> KeywordIndex:
    """The index of a physical collection. One left by an earlier collection of the same name
    (a server that was wiped and filled again) is started afresh."""
    return KeywordIndex(index_path(settings, store.key, collection.name), collection.uid)


def delete_keyword_index(settings: Settings, store: ChunkStore, collection_name: str) -> None:
    path = index_path(settings, store.key, collection_name)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
