"""A BM25 keyword index over the stored chunks (SQLite FTS5) that follows the collection.

It lives beside the store and is brought up to date by id: chunks the collection gained are
added, chunks it lost are removed, so nothing is rebuilt from scratch on start.

How text becomes terms is `index_terms` / `query_terms`: words for scripts that put spaces
between words (porter-stemmed by FTS5), and overlapping character bigrams plus single characters
for scripts that do not (Chinese, Japanese, Thai...), where FTS5's `unicode61` would make a
whole run of characters between punctuation one token that no question ever matches.
Measured on the Chinese sample set against unigrams, bigrams alone, FTS5 `trigram` and jieba
words: benchmarks/keyword_terms.py and the README.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from app.vectorstore import READ_PAGE, iter_pages

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection as ChromaCollection

WORD = re.compile(r"\w+", re.UNICODE)
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, kana, Han (with its
# extension A, compatibility and supplementary planes) and Hangul (whose spaces separate
# phrases with their particles attached, so bigrams help there too).
UNSPACED = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
UNSPACED_RUN = re.compile(f"[{UNSPACED}]+")
# A line break between two Han or kana characters is layout (PDF lines, wrapped text), not a
# word boundary: "竹\n编" is "竹编".
HAN_KANA = "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]"
LAYOUT_BREAK = re.compile(f"(?<={HAN_KANA})\\s+(?={HAN_KANA})")
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
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # check_same_thread=False: LangChain may call the retriever from a worker thread.
        self.db = sqlite3.connect(path, check_same_thread=False)
        with self.db:
            if self.db.execute("PRAGMA user_version").fetchone()[0] != TERMS_VERSION:
                # Written with other terms (or new): rebuilt from the collection by follow().
                self.db.execute("DROP TABLE IF EXISTS chunks")
                self.db.execute(f"PRAGMA user_version = {TERMS_VERSION}")
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
                        (
                            index_terms(text or ""),
                            chunk_id,
                            (meta or {}).get("source"),
                            (meta or {}).get("type"),
                        )
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
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
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


def _all_ids(collection: ChromaCollection) -> Iterator[str]:
    for page in iter_pages(collection, []):
        yield from page["ids"]


def open_keyword_index(directory: Path, collection_name: str) -> KeywordIndex:
    return KeywordIndex(directory / "keyword-index" / f"{collection_name}.sqlite3")
