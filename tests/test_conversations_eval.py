"""The conversational retrieval evaluation (app/evaluation/conversations.py) on a small file:
each follow-up searched with its history (the app's path), alone (the floor) and as its
standalone question (the ceiling), and whether what was searched is a question."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.retrievers import BaseRetriever

from app.config import Settings
from app.errors import ConfigError
from app.eval import parse_args
from app.evaluation.conversations import (
    ask_conversations,
    load_conversations,
    print_conversations,
    tally,
)
from app.models.registry import ChatCapabilities
from app.session.conversation import Conversation, start_conversation
from chains.core.rewrite import Standalone
from tests.fakes import scripted

pytestmark = pytest.mark.unit

CAT = Document("Sextant is the cat of the Corvane observatory.", metadata={"source": "cat.txt"})
DIRECTOR = Document("Ilse Farrowby directs the Corvane observatory.", metadata={"source": "r.pdf"})
HARBOUR = Document("Ewan Tallisker is the harbour master.", metadata={"source": "notice.txt"})
FIRST = "What is the cat of the Corvane observatory called?"
FOLLOW_UP = "And who is the director there?"
STANDALONE = "Who is the director of the Corvane observatory?"
REWRITE = "Who is the director of the Corvane observatory cat's home?"


class LookupRetriever(BaseRetriever):
    """Finds by exact query, else the harbour notice: what a search for a vague follow-up
    finds in a larger library."""

    found: dict[str, list[Document]]

    def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return self.found.get(query, [HARBOUR])


RETRIEVER = LookupRetriever(
    found={
        FIRST: [CAT],
        STANDALONE: [DIRECTOR],
        REWRITE: [DIRECTOR],
        f"{FIRST} {FOLLOW_UP}": [CAT, DIRECTOR],
    }
)


class FakeResources:
    """What a conversation shares, without a store."""

    def __init__(self, model: BaseChatModel) -> None:
        self.settings = Settings(chat_context_tokens=4096, answer_mode="extract")
        self.model = model
        self.capabilities = ChatCapabilities("fake", "fake", 4096, 1)
        self.model_lock = threading.Lock()

    def follow_library(self, *, after_failure: bool = False) -> bool:
        return False


def write(path: Path, *dialogues: dict[str, Any]) -> Path:
    path.write_text("\n".join(json.dumps(d) for d in dialogues) + "\n", encoding="utf-8")
    return path


DIALOGUE = {
    "id": "cat-then-director",
    "turns": [
        {"question": FIRST, "source": "cat.txt"},
        {
            "question": FOLLOW_UP,
            "source": "r.pdf",
            "standalone": STANDALONE,
            "entities": ["Corvane"],
        },
    ],
}


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *rewrites: str) -> dict[str, Any]:
    monkeypatch.setattr(Conversation, "retriever", lambda self: RETRIEVER)
    dialogues = load_conversations(write(tmp_path / "c.jsonl", DIALOGUE, DIALOGUE))
    session = start_conversation(FakeResources(scripted(*rewrites)), "rag")  # type: ignore[arg-type]
    return tally(ask_conversations(session, dialogues, lambda t: set(t.sources), str))


def test_floor_ceiling_and_the_apps_path_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first conversation's rewrite is sound; in the second the model answers instead.
    result = run(tmp_path, monkeypatch, REWRITE, "The director is Ilse Farrowby.")
    assert (result["follow_ups"], result["scored"], result["with_ceiling"]) == (2, 2, 2)
    assert result["alone"] == 0  # "And who is the director there?" alone finds the harbour
    assert result["ceiling"] == 2
    assert result["with_history"] == 2  # the rewrite, then the user's own words, find it
    assert result["searched_is_question"] == 2
    assert result["searched_own_words"] == 1
    assert result["searched_keeps_entities"] == 2
    first, second = result["follow_up_records"]
    assert first["searched"] == REWRITE
    assert second["searched"] == f"{FIRST} {FOLLOW_UP}"
    assert first["listed_with_history"] == ["r.pdf"]


def test_an_answer_searched_for_would_count_as_no_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rewrite taken as it is (what the app did before the check).
    monkeypatch.setattr(
        "chains.core.answering.standalone",
        lambda draft, q, h: Standalone(draft, draft, used_rewrite=True),
    )
    result = run(tmp_path, monkeypatch, "The director is Ilse Farrowby.", REWRITE)
    assert result["searched_is_question"] == 1
    assert result["with_history"] == 1


def test_the_report_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(tmp_path, monkeypatch, REWRITE, REWRITE)
    header = {
        "chain": "rag",
        "chat_model": "fake/fake",
        "answer_mode": "extract",
        "embedding_model": "fake/fake-64",
        "retrieval": {"k": 1},
    }
    print_conversations(header | result)
    shown = capsys.readouterr().out
    assert "listed when asked alone (floor)" in shown
    assert "0/2" in shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json\n", "not a JSON object"),
        (json.dumps({"turns": [{"question": "Only one?"}]}), "at least two turns"),
        (json.dumps({"turns": [{"question": "A?"}, {"source": "x"}]}), "turn 2 needs"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_conversations(path)


def test_sources_may_be_a_list_of_corpus_ids(tmp_path: Path) -> None:
    row = {"turns": [{"question": "A?"}, {"question": "B?", "source": ["1", "2"]}]}
    (dialogue,) = load_conversations(write(tmp_path / "c.jsonl", row))
    assert dialogue.turns[1].sources == ("1", "2")
    assert dialogue.turns[0].sources == ()


def test_the_command_line(tmp_path: Path) -> None:
    args = parse_args(["--conversations", "c.jsonl", "--dataset", "d", "--seeds", "3"])
    assert (args.conversations, args.dataset, args.seeds) == (Path("c.jsonl"), Path("d"), 3)
    for refused in (["--questions", "q", "--dataset", "d"], ["--seeds", "2", "--dataset", "d"]):
        with pytest.raises(SystemExit):
            parse_args(refused)
    with pytest.raises(SystemExit):
        parse_args([])
