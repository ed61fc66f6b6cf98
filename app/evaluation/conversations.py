"""Retrieval in conversations: does a follow-up find its source through the app's own path
(the conversation's history, the rewrite, the search), and how does that compare with the
follow-up searched alone (the floor a rewrite must beat) and with a hand-written standalone
question (the ceiling)? And is what was searched for a question that keeps what it refers to?

Conversations are JSON lines, one conversation each:

    {"id": "cat-then-director",
     "turns": [
       {"question": "What is the name of the Corvane Hill observatory cat?",
        "source": "observatory/perseids-volunteers.eml"},
       {"question": "And who is the director there?",
        "source": "observatory/annual-report-2024.pdf",
        "standalone": "Who is the director of the Corvane Hill observatory?",
        "entities": ["Corvane Hill"]}]}

`source`: the file, relative to DOCS_DIR, that answers the turn (with --dataset a corpus id,
or a list of ids: any of them listed counts);
`standalone` and `entities` (what the follow-up refers to, which a good rewrite names) are for
follow-ups. Every turn is asked in order through the chat chain, as `python -m app.chat` would
(its answer kept as history when sources were found); the first turn of a conversation is only
the history for the next.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from app.config import Settings
from app.console import out, status
from app.errors import ConfigError
from app.evaluation.answers import with_seed
from app.evaluation.metrics import percentile
from chains.core.context import number_sources
from chains.core.events import collect, is_not_found
from loaders.discovery import file_name

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from app.session.conversation import Conversation

QUESTION_END = re.compile(r"[?？]\s*$")


@dataclass(frozen=True)
class Turn:
    question: str
    sources: tuple[str, ...] = ()  # any of them listed counts; none: not scored
    standalone: str | None = None
    entities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dialogue:
    id: str
    turns: tuple[Turn, ...]
    notes: dict[str, Any] = field(default_factory=dict)


def load_conversations(path: Path) -> list[Dialogue]:
    if not path.is_file():
        raise ConfigError(f"No such conversations file: {path}")
    dialogues = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        turns = row.get("turns") if isinstance(row, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            raise ConfigError(f"{path}:{number}: needs 'turns', a list of at least two turns")
        parsed = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or not str(turn.get("question") or "").strip():
                raise ConfigError(f"{path}:{number}: turn {index + 1} needs a 'question'")
            source = turn.get("source")
            sources = [source] if isinstance(source, str | int) else list(source or ())
            parsed.append(
                Turn(
                    str(turn["question"]),
                    tuple(str(s) for s in sources),
                    str(turn["standalone"]) if turn.get("standalone") else None,
                    tuple(str(e) for e in turn.get("entities") or ()),
                )
            )
        notes = {k: v for k, v in row.items() if k not in ("id", "turns")}
        dialogues.append(Dialogue(str(row.get("id") or number), tuple(parsed), notes))
    if not dialogues:
        raise ConfigError(f"{path} holds no conversations")
    return dialogues


def is_question(text: str) -> bool:
    """One line ending with a question mark: not an answer, not a paragraph."""
    return "\n" not in text.strip() and bool(QUESTION_END.search(text))


def keeps(text: str, entities: Sequence[str]) -> bool:
    folded = text.casefold()
    return all(entity.casefold() in folded for entity in entities)


def listed_sources(documents: Sequence[Document]) -> list[str]:
    """The files listed under an answer; none when nothing reached the threshold."""
    if is_not_found(documents):
        return []
    return [s.source for s in number_sources(list(documents))]


def evaluate_conversations(
    settings: Settings,
    dialogues: list[Dialogue],
    *,
    seeds: Sequence[int] = (),
    dataset: Path | None = None,
) -> dict[str, Any]:
    """Every conversation through the chat chain; with `seeds`, once per seed (the rewrite
    samples). With `dataset` (a BEIR folder), over its corpus ingested as `--dataset` does,
    expected sources being corpus ids."""
    from app.session.conversation import start_conversation
    from app.session.resources import open_embeddings, open_resources

    to_stored: Callable[[str], str] = lambda source: source  # noqa: E731
    from_stored: Callable[[str], str] = lambda source: source  # noqa: E731
    corpus_note: dict[str, Any] = {}
    if dataset is not None:
        from app.evaluation.beir import load_beir
        from app.evaluation.corpus import ingest_corpus

        beir = load_beir(dataset)
        settings, corpus, _ = ingest_corpus(settings, beir, open_embeddings(settings))
        ids = corpus.source_to_id
        stored_as = {doc_id: stored for stored, doc_id in ids.items()}
        to_stored = lambda doc_id: stored_as.get(doc_id, doc_id)  # noqa: E731
        from_stored = lambda source: ids.get(source, source)  # noqa: E731
        corpus_note = {"dataset": str(dataset), "documents": len(beir.corpus)}
    resources = open_resources(settings)
    if dataset is None:
        docs = next(
            (s for s in resources.library.sources if s.relative(settings.docs_dir) == ""), None
        )
        if docs is not None:
            label = docs.label
            to_stored = lambda source: file_name(label, source)  # noqa: E731
    session = start_conversation(resources, settings.chain)
    header = {
        "kind": "conversations",
        "chain": session.spec.name,
        "chat_model": resources.capabilities.key,
        "embedding_model": resources.embeddings.info.key,
        "collection": resources.collection.name,
        "answer_mode": session_answer_mode(settings, resources.capabilities.answering),
        "retrieval": {
            "mode": session.retriever().mode,
            "k": session.retriever().k,
            "score_threshold": session.retriever().score_threshold,
        },
    } | corpus_note

    def expected(turn: Turn) -> set[str]:
        return {to_stored(source) for source in turn.sources}

    def run() -> list[dict[str, Any]]:
        return ask_conversations(session, dialogues, expected, from_stored)

    if not seeds:
        return header | tally(run())
    model = resources.model
    seeded = [with_seed(model, seed) for seed in seeds]
    runs = []
    for number, (seed, seeded_model) in enumerate(zip(seeds, seeded, strict=True), 1):
        status(f"Seed {seed} ({number}/{len(seeds)})")
        resources.model = seeded_model
        session.rebuild()
        runs.append({"seed": seed} | tally(run()))
    resources.model = model
    return header | over_seeds(runs)


def session_answer_mode(settings: Settings, capability: str) -> str:
    return capability if settings.answer_mode == "auto" else settings.answer_mode


def ask_conversations(
    session: Conversation,
    dialogues: list[Dialogue],
    expected: Callable[[Turn], set[str]],
    from_stored: Callable[[str], str],
) -> list[dict[str, Any]]:
    """Each follow-up's record: what was searched and found with the history, alone, and as
    the standalone question."""
    retriever = session.retriever()
    records = []
    for dialogue in dialogues:
        session.history = []
        for index, turn in enumerate(dialogue.turns):
            start = time.perf_counter()
            answer = collect(session.answer(turn.question))
            took = time.perf_counter() - start
            documents = list(answer.documents)
            if documents and not is_not_found(documents):
                session.remember(turn.question, answer.text)
            if index == 0:
                continue
            want = expected(turn)
            with_history = listed_sources(documents)
            alone = listed_sources(retriever.invoke(turn.question))
            ceiling = listed_sources(retriever.invoke(turn.standalone)) if turn.standalone else None
            previous = dialogue.turns[index - 1].question
            records.append(
                {
                    "conversation": dialogue.id,
                    "turn": index + 1,
                    "question": turn.question,
                    "standalone": turn.standalone,
                    "expected_source": list(turn.sources),
                    "searched": answer.searched,
                    "searched_is_question": is_question(answer.searched),
                    "searched_keeps_entities": (
                        keeps(answer.searched, turn.entities) if turn.entities else None
                    ),
                    "searched_own_words": answer.searched
                    in (turn.question, f"{previous} {turn.question}"),
                    "with_history": bool(want & set(with_history)) if want else None,
                    "alone": bool(want & set(alone)) if want else None,
                    "ceiling": (
                        bool(want & set(ceiling)) if want and ceiling is not None else None
                    ),
                    "listed_with_history": [from_stored(s) for s in with_history],
                    "answer": answer.text,
                    "seconds": round(took, 2),
                }
            )
            status(f"[{dialogue.id} {index + 1}] {took:.1f} s  searched: {answer.searched[:80]}")
    return records


def tally(records: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in records if r["with_history"] is not None]
    with_ceiling = [r for r in scored if r["ceiling"] is not None]
    with_entities = [r for r in records if r["searched_keeps_entities"] is not None]
    seconds = [r["seconds"] for r in records]
    return {
        "follow_ups": len(records),
        "scored": len(scored),
        "with_history": sum(r["with_history"] for r in scored),
        "alone": sum(r["alone"] for r in scored),
        "with_ceiling": len(with_ceiling),
        "ceiling": sum(r["ceiling"] for r in with_ceiling),
        "searched_is_question": sum(r["searched_is_question"] for r in records),
        "with_entities": len(with_entities),
        "searched_keeps_entities": sum(r["searched_keeps_entities"] for r in with_entities),
        "searched_own_words": sum(r["searched_own_words"] for r in records),
        "seconds_per_follow_up": {
            "p50": round(percentile(seconds, 50), 2) if seconds else 0.0,
            "p95": round(percentile(seconds, 95), 2) if seconds else 0.0,
        },
        "follow_up_records": records,
    }


COUNTS = (
    "with_history",
    "alone",
    "ceiling",
    "searched_is_question",
    "searched_keeps_entities",
    "searched_own_words",
)


def over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several passes, one per seed: each pass's counts and their mean, min and max."""
    spread = {
        name: {
            "mean": round(sum(r[name] for r in runs) / len(runs), 2),
            "min": min(r[name] for r in runs),
            "max": max(r[name] for r in runs),
        }
        for name in COUNTS
    }
    first = runs[0]
    totals = {k: first[k] for k in ("follow_ups", "scored", "with_ceiling", "with_entities")}
    return totals | {
        "seeds": [r["seed"] for r in runs],
        "over_seeds": spread,
        "runs": runs,
    }


def print_conversations(result: dict[str, Any]) -> None:
    seeds = result.get("seeds")
    title = (
        f"Conversations: chain {result['chain']}, {escape(result['chat_model'])} "
        f"({result['answer_mode']}), {escape(result['embedding_model'])} "
        f"(k {result['retrieval']['k']})" + (f", {len(seeds)} seeds" if seeds else "")
    )
    table = Table(title=title)
    table.add_column("follow-ups")
    table.add_column("check")
    table.add_column("result", justify="right")
    if seeds:
        table.add_column("min-max", justify="right")

    def value(name: str, total: int) -> list[str]:
        if not seeds:
            count = result[name]
            return [f"{count}/{total} ({count / total:.0%})" if total else "-"]
        spread = result["over_seeds"][name]
        share = f" ({spread['mean'] / total:.0%})" if total else ""
        return [f"{spread['mean']:g}/{total}{share}", f"{spread['min']}-{spread['max']}"]

    n, c, e = result["scored"], result["with_ceiling"], result["with_entities"]
    table.add_row(
        f"expected source ({n})", "listed with history (the app's path)", *value("with_history", n)
    )
    table.add_row("", "listed when asked alone (floor)", *value("alone", n))
    table.add_row("", "listed for the standalone question (ceiling)", *value("ceiling", c))
    f = result["follow_ups"]
    table.add_row(f"searched for ({f})", "is a question", *value("searched_is_question", f))
    table.add_row("", f"names what it refers to ({e})", *value("searched_keeps_entities", e))
    table.add_row("", "the user's own words (rewrite not used)", *value("searched_own_words", f))
    out.print(table)
