"""The chat chain on a question file: is the expected file among the sources and cited, does
the answer hold the expected text, does it state a fact (a name, number, date, time, code or
quote) that the sources it was given do not hold (`chains.core.support`, the check the chain
itself runs), and does it say it does not know when the question is outside the documents?

Questions are JSON lines: `question`, `source` (the file, relative to DOCS_DIR, that holds the
answer; null when no document does), optional `answer` (text the answer should contain),
`page` (the page of `source` that holds it: then the listed and cited sources are checked for
that file and page) and `facts` (strings the answer must all hold, compared after `fact_key`).
The session is opened as `python -m app.chat` opens it: same settings, collection,
chain and retriever; each question is asked on its own (no history), with `invoke`.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from app.config import Settings
from app.console import out, status
from app.errors import ConfigError
from app.evaluation.metrics import percentile
from chains.core.context import number_sources
from chains.core.events import collect, is_not_found
from chains.core.support import check_support
from chains.core.wording import says_unknown
from loaders.discovery import file_name

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from app.session.conversation import Conversation

MISSES_SHOWN = 10
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True)
class Question:
    question: str
    source: str | None
    answer: str | None = None
    page: int | None = None
    facts: tuple[str, ...] = ()


def load_questions(path: Path) -> list[Question]:
    if not path.is_file():
        raise ConfigError(f"No such questions file: {path}")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict) or not str(row.get("question") or "").strip():
            raise ConfigError(f"{path}:{number}: needs a non-empty 'question'")
        facts = row.get("facts") or []
        if not isinstance(facts, list) or not all(isinstance(f, str) and f.strip() for f in facts):
            raise ConfigError(f"{path}:{number}: 'facts' must be a list of non-empty strings")
        questions.append(
            Question(
                str(row["question"]),
                str(row["source"]) if row.get("source") else None,
                str(row["answer"]) if row.get("answer") is not None else None,
                int(row["page"]) if row.get("page") is not None else None,
                tuple(facts),
            )
        )
    if not questions:
        raise ConfigError(f"{path} holds no questions")
    return questions


def cited_numbers(answer: str) -> set[int]:
    return {int(n) for group in CITATION.findall(answer) for n in group.split(",")}


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def fact_key(text: str) -> str:
    """A fact as it is looked for in an answer: NFKC (full-width digits and commas as ASCII),
    case folded, without whitespace (OCR and line breaks put spaces anywhere, Chinese has
    none) or thousands separators ("4,716元" is "4716元")."""
    text = _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).casefold())
    return "".join(text.split())


def check(
    question: Question,
    answer: str,
    context: list[Any],
    seconds: float,
    replaced: str | None = None,
) -> dict[str, Any]:
    """One answer's record. `context`: the sources the answer was given; `replaced`: why the
    chain's check withdrew the model's own answer (None when it stood)."""
    sources = number_sources(context)
    listed = [s.source for s in sources]
    cited = sorted({s.source for s in sources if s.number in cited_numbers(answer)})
    support = check_support(answer, [d.page_content for d in context], question.question)
    record: dict[str, Any] = {
        "question": question.question,
        "expected_source": question.source,
        "expected_answer": question.answer,
        "outside": question.source is None,
        "listed_sources": [s.label for s in sources],
        "cited_sources": cited,
        "says_unknown": says_unknown(answer),
        "not_found_without_model": is_not_found(context),
        "unsupported": not support.supported,
        "unsupported_facts": [f.text for f in support.unsupported],
        "replaced": replaced is not None,
        "answer": answer,
        "seconds": round(seconds, 2),
    }
    if question.source is not None:
        record["source_listed"] = question.source in listed
        record["source_cited"] = question.source in cited
        record["expected_text_in_answer"] = (
            _normalise(question.answer) in _normalise(answer) if question.answer else None
        )
        if question.page is not None:
            # The file and the page: the rank of that source among those listed (best first).
            ranks = [
                s.number for s in sources if (s.source, s.page) == (question.source, question.page)
            ]
            record["expected_page"] = question.page
            record["page_rank"] = ranks[0] if ranks else None
            record["page_listed"] = bool(ranks)
            record["page_cited"] = bool(set(ranks) & cited_numbers(answer))
        if question.facts:
            key = fact_key(answer)
            found = [fact_key(fact) in key for fact in question.facts]
            record["facts"] = list(question.facts)
            record["facts_found"] = found
            record["facts_in_answer"] = all(found)
            # Whether the answer could have stated them: a miss with the facts in its sources
            # is the answering's, one without them retrieval's (or the text's: OCR).
            given = fact_key(" ".join(d.page_content for d in context))
            record["facts_in_sources"] = all(fact_key(f) in given for f in question.facts)
    return record


def with_fields(model: BaseChatModel, fields: Mapping[str, Any]) -> BaseChatModel:
    """A copy of `model` with these fields set (a seed, a repeat penalty…); the copy shares the
    original's client or loaded weights. A field the model does not have is a ConfigError."""
    missing = [name for name in fields if name not in type(model).model_fields]
    if missing:
        raise ConfigError(
            f"{type(model).__name__} has no field {', '.join(missing)}: it cannot be set for "
            "this evaluation."
        )
    return model.model_copy(update=dict(fields))


def with_seed(model: BaseChatModel, seed: int) -> BaseChatModel:
    """A copy of `model` that samples with `seed`: any LangChain chat model with a `seed` field
    (ChatOllama, ChatOpenAI, the embedded ChatLlamaCpp)."""
    if "seed" not in type(model).model_fields:
        raise ConfigError(
            f"--seeds needs a chat model that takes a sampling seed; {type(model).__name__} has "
            "no `seed` field. Run without --seeds."
        )
    return with_fields(model, {"seed": seed})


def sampling(model: BaseChatModel) -> dict[str, Any]:
    """The model's sampling settings that exist on it, for the report."""
    names = ("temperature", "top_p", "top_k", "repeat_penalty", "seed")
    return {name: getattr(model, name) for name in names if name in type(model).model_fields}


def evaluate_answers(
    settings: Settings,
    questions: list[Question],
    seeds: Sequence[int] = (),
    model_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One pass over the questions; with `seeds`, one pass per seed, each with the chat model
    sampling from that seed, reported as the spread over seeds (see `over_seeds`).
    `model_fields` sets fields of the chat model for the whole evaluation (benchmarks compare
    sampling settings that way, e.g. {"repeat_penalty": 1.0})."""
    from app.session.conversation import start_conversation
    from app.session.resources import open_resources

    resources = open_resources(settings)
    session = start_conversation(resources, settings.chain)
    # Expected sources are relative to DOCS_DIR; stored names start with its label in the library.
    sources = resources.library.sources
    docs = next((s for s in sources if s.relative(settings.docs_dir) == ""), None)
    if docs is not None:
        questions = [
            replace(q, source=file_name(docs.label, q.source)) if q.source else q for q in questions
        ]
    stored = set(resources.keyword_index.sources())
    absent = sorted({q.source for q in questions if q.source and q.source not in stored})
    if absent:
        status(
            f"{len(absent)} expected sources are not in collection {resources.collection.name} "
            f"(ingest {settings.docs_dir} first?): {', '.join(absent[:5])}"
        )
    model = with_fields(resources.model, model_fields or {})
    header = {
        "kind": "answers",
        "chain": session.spec.name,
        "chat_model": resources.capabilities.key,
        "sampling": sampling(model),
        "answer_mode": (
            resources.capabilities.answering
            if settings.answer_mode == "auto"
            else settings.answer_mode
        ),
        "embedding_model": resources.embeddings.info.key,
        "collection": resources.collection.name,
        "retrieval": {
            "mode": session.retriever().mode,
            "k": session.retriever().k,
            "score_threshold": session.retriever().score_threshold,
        },
    }
    if not seeds:
        resources.model = model
        session.rebuild()
        records = ask_all(session, questions)
        return header | tally(records) | {"questions": records}
    seeded = [with_seed(model, seed) for seed in seeds]  # refused before any question
    if getattr(model, "temperature", None) == 0:
        status("Temperature 0 is greedy decoding: every seed should give the same answers.")
    runs = []
    for number, (seed, seeded_model) in enumerate(zip(seeds, seeded, strict=True), 1):
        status(f"Seed {seed} ({number}/{len(seeds)})")
        resources.model = seeded_model
        session.rebuild()
        runs.append((seed, ask_all(session, questions)))
    return header | over_seeds(runs)


def ask_all(session: Conversation, questions: list[Question]) -> list[dict[str, Any]]:
    """Each question on its own (no history), through the conversation's chain, checked."""
    records = []
    for index, question in enumerate(questions, 1):
        start = time.perf_counter()
        session.history = []
        answer = collect(session.answer(question.question))
        took = time.perf_counter() - start
        records.append(
            check(question, answer.text, list(answer.documents), took, answer.replaced_reason)
        )
        status(f"[{index}/{len(questions)}] {took:.1f} s  {question.question}")
    return records


def tally(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts of one pass: questions inside the documents, outside them, and timing."""
    inside = [r for r in records if not r["outside"]]
    outside = [r for r in records if r["outside"]]
    with_text = [r for r in inside if r["expected_text_in_answer"] is not None]
    with_page = [r for r in inside if "page_listed" in r]
    with_facts = [r for r in inside if "facts_in_answer" in r]
    seconds = [r["seconds"] for r in records]
    return {
        "inside": {
            "questions": len(inside),
            "source_listed": sum(r["source_listed"] for r in inside),
            "source_cited": sum(r["source_cited"] for r in inside),
            "answered": sum(not r["says_unknown"] for r in inside),
            "with_expected_text": len(with_text),
            "expected_text_in_answer": sum(r["expected_text_in_answer"] for r in with_text),
            "unsupported": sum(r.get("unsupported", False) for r in inside),
            "replaced": sum(r.get("replaced", False) for r in inside),
            "with_page": len(with_page),
            "page_first": sum(r["page_rank"] == 1 for r in with_page),
            "page_listed": sum(r["page_listed"] for r in with_page),
            "page_cited": sum(r["page_cited"] for r in with_page),
            "with_facts": len(with_facts),
            "facts_in_sources": sum(r["facts_in_sources"] for r in with_facts),
            "facts_in_answer": sum(r["facts_in_answer"] for r in with_facts),
        },
        "outside": {
            "questions": len(outside),
            "says_unknown": sum(r["says_unknown"] for r in outside),
            "not_found_without_model": sum(r["not_found_without_model"] for r in outside),
            "unsupported": sum(r.get("unsupported", False) for r in outside),
        },
        "seconds_per_question": {
            "p50": round(percentile(seconds, 50), 2),
            "p95": round(percentile(seconds, 95), 2),
        },
    }


# The checks counted per question over seeds: these for questions inside the documents,
# says_unknown for those outside them.
INSIDE_CHECKS = (
    "source_listed",
    "source_cited",
    "answered",
    "expected_text_in_answer",
    "unsupported",
    "replaced",
    "page_listed",
    "page_cited",
    "facts_in_sources",
    "facts_in_answer",
)


def _passed(record: dict[str, Any], name: str) -> bool | None:
    return not record["says_unknown"] if name == "answered" else record.get(name)


def over_seeds(runs: list[tuple[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Several passes over the same questions, one per seed: each pass's counts (`runs`), their
    mean, min and max (`over_seeds`), and per question how many seeds passed each check, with
    every answer (`questions`). `stability` counts the questions that pass a check with every
    seed, with none, or with some: a check that flips with the seed is noise, not quality."""
    tallies = [{"seed": seed} | tally(records) for seed, records in runs]
    spread: dict[str, dict[str, Any]] = {}
    for part in ("inside", "outside"):
        spread[part] = {}
        for name, first in tallies[0][part].items():
            values = [t[part][name] for t in tallies]
            if name in ("questions", "with_expected_text", "with_page", "with_facts"):
                spread[part][name] = first  # the same in every pass
                continue
            spread[part][name] = {
                "mean": round(sum(values) / len(values), 2),
                "min": min(values),
                "max": max(values),
            }
    n = len(runs)
    questions = []
    for per_seed in zip(*(records for _, records in runs), strict=True):
        first = per_seed[0]
        entry: dict[str, Any] = {
            "question": first["question"],
            "expected_source": first["expected_source"],
            "expected_answer": first["expected_answer"],
            "expected_page": first.get("expected_page"),
            "facts": first.get("facts"),
            "outside": first["outside"],
            "listed_sources": first["listed_sources"],
            "seeds": n,
        }
        checks = ("says_unknown", "unsupported") if first["outside"] else INSIDE_CHECKS
        for name in checks:
            passed = [_passed(r, name) for r in per_seed]
            entry[name] = None if passed[0] is None else sum(bool(p) for p in passed)
        entry["answers"] = [
            {
                "seed": seed,
                "answer": r["answer"],
                "seconds": r["seconds"],
                "unsupported_facts": r.get("unsupported_facts", []),
            }
            | {name: _passed(r, name) for name in checks if name != "source_listed"}
            for (seed, _), r in zip(runs, per_seed, strict=True)
        ]
        questions.append(entry)
    stability = {}
    for name in ("expected_text_in_answer", "source_cited", "answered"):
        counts = [q[name] for q in questions if not q["outside"] and q[name] is not None]
        stability[name] = {
            "always": sum(c == n for c in counts),
            "never": sum(c == 0 for c in counts),
            "sometimes": sum(0 < c < n for c in counts),
        }
    seconds = [a["seconds"] for q in questions for a in q["answers"]]
    return {
        "seeds": [seed for seed, _ in runs],
        "runs": tallies,
        "over_seeds": spread,
        "stability": stability,
        "seconds_per_question": {
            "p50": round(percentile(seconds, 50), 2),
            "p95": round(percentile(seconds, 95), 2),
        },
        "questions": questions,
    }


def _rate(count: int, total: int) -> str:
    return f"{count}/{total} ({count / total:.0%})" if total else "-"


def _title(result: dict[str, Any]) -> str:
    retrieval = result["retrieval"]
    temperature = result.get("sampling", {}).get("temperature")
    return (
        f"Answers: chain {result['chain']}, {escape(result['chat_model'])}"
        + (f" (temperature {temperature})" if temperature is not None else "")
        + f", {escape(result['embedding_model'])} ({retrieval['mode']}, k {retrieval['k']}, "
        f"threshold {retrieval['score_threshold']})"
    )


def print_answers(result: dict[str, Any]) -> None:
    if "over_seeds" in result:
        print_over_seeds(result)
        return
    inside, outside = result["inside"], result["outside"]
    table = Table(title=_title(result))
    table.add_column("questions")
    table.add_column("check")
    table.add_column("result", justify="right")
    n = inside["questions"]
    table.add_row(
        f"in the documents ({n})",
        "expected file among the sources",
        _rate(inside["source_listed"], n),
    )
    table.add_row("", escape("expected file cited with [n]"), _rate(inside["source_cited"], n))
    table.add_row("", 'answered (not "don\'t know")', _rate(inside["answered"], n))
    table.add_row(
        "",
        "expected answer text in the answer",
        _rate(inside["expected_text_in_answer"], inside["with_expected_text"]),
    )
    if inside.get("with_page"):
        p = inside["with_page"]
        table.add_row("", "expected file and page listed first", _rate(inside["page_first"], p))
        table.add_row("", "expected file and page listed", _rate(inside["page_listed"], p))
        table.add_row(
            "", escape("expected file and page cited with [n]"), _rate(inside["page_cited"], p)
        )
    if inside.get("with_facts"):
        table.add_row(
            "",
            "every expected fact in the sources given",
            _rate(inside["facts_in_sources"], inside["with_facts"]),
        )
        table.add_row(
            "",
            "every expected fact in the answer",
            _rate(inside["facts_in_answer"], inside["with_facts"]),
        )
    table.add_row("", "states a fact the sources lack", _rate(inside["unsupported"], n))
    table.add_row("", "…model's answer replaced by the check", _rate(inside["replaced"], n))
    m = outside["questions"]
    table.add_row(f"outside them ({m})", "says it does not know", _rate(outside["says_unknown"], m))
    table.add_row(
        "",
        "…of which below the threshold, no model call",
        _rate(outside["not_found_without_model"], m),
    )
    per = result["seconds_per_question"]
    table.add_row("all", "seconds per question p50 / p95", f"{per['p50']:.1f} / {per['p95']:.1f}")
    out.print(table)
    misses = [
        r
        for r in result["questions"]
        if (r["outside"] and not r["says_unknown"]) or (not r["outside"] and not r["source_cited"])
    ]
    for r in misses[:MISSES_SHOWN]:
        why = "answered anyway" if r["outside"] else f"{r['expected_source']} not cited"
        out.print(f"[yellow]miss[/] ({escape(why)}): {escape(r['question'])}", soft_wrap=True)
    if len(misses) > MISSES_SHOWN:
        out.print(f"…and {len(misses) - MISSES_SHOWN} more misses (every answer is in --json).")


def _spread(value: dict[str, Any], total: int) -> tuple[str, str]:
    mean = value["mean"]
    share = f" ({mean / total:.0%})" if total else ""
    return f"{mean:g}/{total}{share}", f"{value['min']}-{value['max']}"


def print_over_seeds(result: dict[str, Any]) -> None:
    inside, outside = result["over_seeds"]["inside"], result["over_seeds"]["outside"]
    seeds = result["seeds"]
    table = Table(title=_title(result) + f", {len(seeds)} seeds")
    table.add_column("questions")
    table.add_column("check")
    table.add_column("mean over seeds", justify="right")
    table.add_column("min-max", justify="right")
    n, m = inside["questions"], outside["questions"]
    rows = [
        (f"in the documents ({n})", "expected file among the sources", "source_listed", inside, n),
        ("", escape("expected file cited with [n]"), "source_cited", inside, n),
        ("", 'answered (not "don\'t know")', "answered", inside, n),
        (
            "",
            "expected answer text in the answer",
            "expected_text_in_answer",
            inside,
            inside["with_expected_text"],
        ),
        ("", "states a fact the sources lack", "unsupported", inside, n),
        ("", "…model's answer replaced by the check", "replaced", inside, n),
        (f"outside them ({m})", "says it does not know", "says_unknown", outside, m),
        ("", "…of which below the threshold, no model call", "not_found_without_model", outside, m),
    ]
    extra = []  # after the expected text: the page and facts checks, for sets that have them
    if inside.get("with_page"):
        p = inside["with_page"]
        extra += [
            ("", "expected file and page listed first", "page_first", inside, p),
            ("", "expected file and page listed", "page_listed", inside, p),
            ("", escape("expected file and page cited with [n]"), "page_cited", inside, p),
        ]
    if inside.get("with_facts"):
        facts = inside["with_facts"]
        extra += [
            ("", "every expected fact in the sources given", "facts_in_sources", inside, facts),
            ("", "every expected fact in the answer", "facts_in_answer", inside, facts),
        ]
    rows[4:4] = extra
    for group, label, name, part, total in rows:
        table.add_row(group, label, *_spread(part[name], total))
    per = result["seconds_per_question"]
    table.add_row(
        "all", "seconds per question p50 / p95", f"{per['p50']:.1f} / {per['p95']:.1f}", ""
    )
    out.print(table)
    per_seed = ", ".join(
        f"{run['seed']}: {run['inside']['expected_text_in_answer']} / "
        f"{run['inside']['unsupported']}"
        for run in result["runs"]
    )
    out.print(
        f"Per seed, expected text / answers stating a fact the sources lack: {per_seed}.",
        soft_wrap=True,
    )
    stable = result["stability"]["expected_text_in_answer"]
    out.print(
        f"Expected answer text, per question over {len(seeds)} seeds (seeds "
        f"{', '.join(map(str, seeds))}): with every seed {stable['always']}, with none "
        f"{stable['never']}, with some {stable['sometimes']}.",
        soft_wrap=True,
    )
    flipping = [
        q
        for q in result["questions"]
        if not q["outside"] and q["expected_text_in_answer"] not in (None, 0, len(seeds))
    ]
    for q in flipping[:MISSES_SHOWN]:
        out.print(
            f"[yellow]varies[/] ({q['expected_text_in_answer']}/{len(seeds)} seeds): "
            f"{escape(q['question'])}",
            soft_wrap=True,
        )
    if len(flipping) > MISSES_SHOWN:
        out.print(f"…and {len(flipping) - MISSES_SHOWN} more (every answer is in --json).")
