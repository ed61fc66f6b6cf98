"""Read a BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (graded)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import ConfigError


@dataclass(frozen=True)
class CorpusDoc:
    doc_id: str
    title: str
    text: str

    @property
    def file_text(self) -> str:
        """What the document's file holds: title, blank line, text (text alone without title)."""
        return f"{self.title}\n\n{self.text}" if self.title else self.text


@dataclass
class BeirDataset:
    folder: Path
    split: str
    corpus: dict[str, CorpusDoc]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> graded relevance
    notes: list[str] = field(default_factory=list)  # oddities worth telling the user

    @property
    def name(self) -> str:
        return self.folder.name


def required_files(folder: Path, split: str) -> list[Path]:
    return [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """The whole dataset, or a ConfigError naming every missing file or the bad line."""
    folder = folder.expanduser()
    if not folder.is_dir():
        raise ConfigError(f"No such dataset folder: {folder}")
    missing = [p for p in required_files(folder, split) if not p.is_file()]
    if missing:
        names = ", ".join(p.relative_to(folder).as_posix() for p in missing)
        raise ConfigError(
            f"{folder} is not a BEIR folder: missing {names} (expected corpus.jsonl, "
            f"queries.jsonl and qrels/{split}.tsv)"
        )
    corpus: dict[str, CorpusDoc] = {}
    notes: list[str] = []
    duplicates = 0
    for where, row in _jsonl(folder / "corpus.jsonl"):
        doc_id = _field(row, "_id", where)
        if doc_id in corpus:
            duplicates += 1
        corpus[doc_id] = CorpusDoc(
            doc_id, str(row.get("title") or "").strip(), str(row.get("text") or "").strip()
        )
    if duplicates:
        notes.append(f"{duplicates} duplicate corpus ids (the last one kept)")
    if not corpus:
        raise ConfigError(f"{folder / 'corpus.jsonl'} holds no documents")
    queries = {
        _field(row, "_id", where): str(row.get("text") or "")
        for where, row in _jsonl(folder / "queries.jsonl")
    }
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    unknown_docs = {d for judged in qrels.values() for d in judged if d not in corpus}
    if unknown_docs:
        notes.append(
            f"{len(unknown_docs)} judged document ids are not in corpus.jsonl "
            "(kept as relevant: no system can find them)"
        )
    unknown_queries = set(qrels) - set(queries)
    if unknown_queries:
        notes.append(f"{len(unknown_queries)} judged query ids are not in queries.jsonl (ignored)")
    return BeirDataset(folder, split, corpus, queries, qrels, notes)


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{where}: not a JSON object")
            yield where, row


def _field(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None or str(value) == "":
        raise ConfigError(f"{where}: no {key!r}")
    return str(value)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """`query-id corpus-id score` per line, tab or space separated; a header line is skipped."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            # Tabs when there are any (ids may hold spaces), else any whitespace.
            parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
            if not any(parts):
                continue
            if len(parts) == 4:  # TREC style: query-id Q0 corpus-id score
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise ConfigError(f"{path}:{number}: expected `query-id corpus-id score`")
            try:
                score = int(float(parts[2]))
            except ValueError:
                if number == 1:
                    continue  # the header line
                raise ConfigError(f"{path}:{number}: score {parts[2]!r} is not a number") from None
            qrels.setdefault(parts[0], {})[parts[1]] = score
    if not qrels:
        raise ConfigError(f"{path} holds no judgements")
    return qrels


def load_judged(folder: Path, split: str = "test") -> tuple[BeirDataset, list[tuple[str, str]]]:
    """The dataset and its scorable queries as (id, text); a ConfigError when there are none."""
    from app.evaluation.metrics import judged_queries

    dataset = load_beir(folder, split)
    judged = judged_queries(dataset.qrels, list(dataset.queries))
    if not judged:
        raise ConfigError(
            f"No query in {folder / 'queries.jsonl'} has a relevant judgement in "
            f"qrels/{split}.tsv: nothing to score."
        )
    return dataset, [(q, dataset.queries[q]) for q in judged]


def describe(
    dataset: BeirDataset, judged: list[str], docs_k: int, notes: list[str] | None = None
) -> dict[str, Any]:
    """The dataset's entry in a result file: its size, the judged queries, and the best
    Recall@`docs_k` any ranking could reach (queries with more relevant documents than that
    cannot be fully recalled)."""
    relevant = [sum(g > 0 for g in dataset.qrels[q].values()) for q in judged]
    return {
        "name": dataset.name,
        "folder": str(dataset.folder.resolve()),
        "split": dataset.split,
        "documents": len(dataset.corpus),
        "queries": len(dataset.queries),
        "evaluated_queries": len(judged),
        "skipped_queries": len(dataset.queries) - len(judged),
        "relevant_per_query": statistics.median(relevant),
        f"max_recall@{docs_k}": round(sum(min(docs_k, n) / n for n in relevant) / len(relevant), 4),
        "notes": list(dataset.notes if notes is None else notes),
    }
