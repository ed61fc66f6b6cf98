"""A BM25 keyword index over the stored chunks (SQLite FTS5) that follows the collection.

It lives beside the store and is brought up to date by id: chunks the collection gained are
added, chunks it lost are removed, so nothing is rebuilt from scratch on start.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from app.vectorstore import READ_PAGE, iter_pages

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection as ChromaCollection

WORD = re.compile(r"\w+", re.UNICODE)


class KeywordIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # check_same_thread=False: LangChain may call the retriever from a worker thread.
        self.db = sqlite3.connect(path, check_same_thread=False)
        with self.db:
            self.db.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5("
                "text, chunk_id UNINDEXED, source UNINDEXED, type UNINDEXED, "
                "tokenize='porter unicode61')"
            )

    def close(self) -> None:
        self.db.close()

    def ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT chunk_id FROM chunks")}

    def follow(self, collection: ChromaCollection) -> tuple[int, int]:
        """Add what the collection gained, drop what it lost; returns (added, removed)."""
        stored = set(_all_ids(collection))
        indexed = self.ids()
        gone = sorted(indexed - stored)
        new = sorted(stored - indexed)
        with self.db:
            self.db.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(i,) for i in gone])
            for start in range(0, len(new), READ_PAGE):
                page = collection.get(
                    ids=new[start : start + READ_PAGE], include=["documents", "metadatas"]
                )
                metadatas = page["metadatas"] or [{}] * len(page["ids"])
                documents = page["documents"] or [""] * len(page["ids"])
                self.db.executemany(
                    "INSERT INTO chunks (text, chunk_id, source, type) VALUES (?, ?, ?, ?)",
                    [
                        (text or "", chunk_id, (meta or {}).get("source"), (meta or {}).get("type"))
                        for chunk_id, text, meta in zip(
                            page["ids"], documents, metadatas, strict=True
                        )
                    ],
                )
        return len(new), len(gone)

    def sources(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT source FROM chunks ORDER BY 1")]

    def search(
        self, query: str, limit: int, allowed_sources: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; higher is better."""
        terms = WORD.findall(query.lower())
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in dict.fromkeys(terms))
        rows = self.db.execute(
            "SELECT chunk_id, source, -bm25(chunks) AS score FROM chunks "
            "WHERE chunks MATCH ? ORDER BY score DESC LIMIT ?",
            (match, limit * 4 if allowed_sources is not None else limit),
        )
        hits = [
            (chunk_id, score)
            for chunk_id, source, score in rows
            if allowed_sources is None or source in allowed_sources
        ]
        return hits[:limit]


def _all_ids(collection: ChromaCollection) -> Iterator[str]:
    for page in iter_pages(collection, []):
        yield from page["ids"]


def open_keyword_index(directory: Path, collection_name: str) -> KeywordIndex:
    return KeywordIndex(directory / "keyword-index" / f"{collection_name}.sqlite3")
