"""The support check (chains/core/support.py) and the extractive answer that replaces an answer
stating what its sources do not hold: in the chain, the terminal chat, the native and the
OpenAI routes, and the answers evaluation."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel

from app.api.app import create_app
from app.api.service import AnswerService
from app.config import Settings
from app.evaluation.answers import Question, check
from app.models.registry import ChatCapabilities
from app.session.conversation import Conversation, start_conversation
from chains import rag
from chains.core.events import AnswerReplaced, AnswerText, answer_events, collect
from chains.core.extractive import SentenceRanker, asked_kind, pick, render
from chains.core.support import NOT_SUPPORTED, check_support, chinese_number
from tests.fakes import BagOfWords, FailingChatModel, FixedRetriever, scripted

pytestmark = pytest.mark.unit

NOTICE = (
    "Maintenance dredging of the Inner Basin will take place from 3 March to 28 March 2025. "
    "The work will be carried out by the bucket dredger Marrowgate. All vessels must keep a "
    "listening watch on VHF channel 71.\n\nEwan Tallisker\nHarbour Master, Brindlemoor"
)
GUIDE = (
    "Population: 4,318 residents at the 2021 parish count.\n\n"
    "Every Thursday, starting at 20:30 from October to March.\n\n"
    "The Skerrow Coast Heritage Fund gave us a grant of £12,000 towards the dome."
)
ZH = "全镇常住人口12,640人（2020年人口普查）。听雨桥全长86米，桥上建有十三间廊屋。"
SOURCES = [NOTICE, GUIDE, ZH]
DOCS = [
    Document(NOTICE, metadata={"source": "town/harbour-notice.txt"}),
    Document(GUIDE, metadata={"source": "about.md"}),
]
DATES_QUESTION = "Between which dates is the Inner Basin being dredged?"
INVENTED = "The Inner Basin is being dredged between 2019 and 2023 [1]."


# --- The check -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "unsupported"),
    [
        (INVENTED, ["2019", "2023"]),
        ("The harbour master is a woman named Sarah.", ["Sarah"]),
        ("Sarah Jones is the harbour master.", ["Sarah", "Jones"]),
        ("Sarah is the harbour master.", []),  # a lone first word may be a common noun: not checked
        ("Boats listen on channel 16.", ["16"]),
        ("Dredging runs from 3 April to 28 April 2025.", ["3 April", "28 April 2025"]),
        ("The dredger is called the \u201cSea Mole\u201d.", ["Sea Mole", "Sea", "Mole"]),
        ("Public nights start at 9 pm.", ["9 pm"]),
        ("The grant was £1,200.", ["1,200"]),
        ("人口是一万三千人。", ["一万三千"]),
        ("Take bus 9B.", ["9B"]),
    ],
)
def test_invented_facts_are_not_supported(answer: str, unsupported: list[str]) -> None:
    support = check_support(answer, SOURCES)
    assert [f.text for f in support.unsupported] == unsupported
    assert support.supported == (not unsupported)


@pytest.mark.parametrize(
    "answer",
    [
        "Dredging runs from 2025-03-03 to 2025-03-28 [1].",  # ISO dates
        "From 3 to 28 March 2025.",  # a range written the other way
        "From March 3, 2025 until March 28.",
        "About 4318 people live there.",  # no thousands separator
        "4 318 residents.",  # a space as the separator
        "The grant was £12000.",
        "Public nights start at 8:30 pm on Thursdays.",  # 20:30
        "Public nights start at 8.30 p.m.",
        "镇上住着12640人，桥长86米。",
        "桥上有13间廊屋。",  # 十三 in the source
        "The harbour master is Ewan Tallisker [1].",
        "Brindlemoor's harbour master signs the notice.",  # a possessive
        "Listen on VHF channel 71 [1][2].",  # citations are not numbers
        "I don't know based on your documents.",
    ],
)
def test_reformatted_and_correct_facts_are_supported(answer: str) -> None:
    support = check_support(answer, SOURCES)
    assert support.supported, support.describe()


def test_the_users_own_words_count_as_support() -> None:
    answer = "Nothing in the sources says whether the Kelvasund ferry runs."
    assert not check_support(answer, SOURCES).supported
    assert check_support(answer, SOURCES, "Does the Kelvasund ferry run?").supported


def test_chinese_numerals() -> None:
    assert [chinese_number(t) for t in ("十二", "一百零八", "三万", "二〇二五", "十五")] == [
        12,
        108,
        30000,
        2025,
        15,
    ]


# --- The extractive answer -------------------------------------------------------------------


def test_the_extractive_answer_quotes_the_sentence_that_answers_with_its_citation() -> None:
    ranker = SentenceRanker()  # by words alone: no embedding model
    answer = render(pick(ranker.rank(DATES_QUESTION, DOCS)))
    assert "from 3 March to 28 March 2025. [1]" in answer
    assert check_support(answer, SOURCES).supported
    who = render(pick(ranker.rank("Who is the harbour master?", DOCS)))
    assert "Ewan Tallisker" in who  # a signature's lines stay together
    assert asked_kind("How many people live there?") == "number"
    assert asked_kind("岚溪镇现在住着多少人？") == "number"


# A scanned form as OCR gives it: a title, then "Label: value" lines.
FORM = Document(
    page_content="LIGHTHOUSE OPEN DAY\nSaturday 24 May 2025, 10 am to 4 pm\n"
    "350 free places, book at the lighthouse open day desk\nCoordinator: Felix Ambrose\n"
    "Autumn depth survey: results\nSurvey date: 28 October 2024\n"
    "Surveyor: Ishaan Cole, Tidewater Hydrographic\n"
    "Berth 3: 4.6 metres at low water\nRent: £1,275 per month",
    metadata={"source": "docs/notice.png", "page": 1},
)
FORM_ZH = Document(
    page_content="兰溪古镇旅游协会理事会会议纪要\n会议时间：2025年5月8日下午2时\n主持人：林晓峰\n"
    "岚溪雾芽茶专业合作社：我们的故事\n2010年合作社成立，最初有37户茶农入社。",
    metadata={"source": "docs/会议纪要.png", "page": 1},
)


@pytest.mark.parametrize(
    ("question", "document", "expected"),
    [
        ("Who coordinates the lighthouse open day?", FORM, "Felix Ambrose"),
        ("Who carried out the autumn depth survey?", FORM, "Ishaan Cole"),  # not Survey date
        ("What depth was measured at berth 3 in the autumn survey?", FORM, "4.6 metres"),
        ("What is the monthly rent?", FORM, "£1,275"),
        ("古镇旅游协会理事会会议由谁主持？", FORM_ZH, "林晓峰"),
        ("合作社成立的时候有几户人家参加？", FORM_ZH, "37户"),  # not the title with a colon
    ],
)
def test_a_label_line_that_names_what_is_asked_answers_it(
    question: str, document: Document, expected: str
) -> None:
    best = SentenceRanker().rank(question, [document])[0]
    assert expected in best.text


def test_a_label_that_only_shares_a_word_or_holds_the_wrong_kind_gets_no_bonus() -> None:
    from chains.core.extractive import label_bonus
    from chains.core.support import Evidence

    def bonus(text: str, question: str) -> float:
        return label_bonus(text, question, asked_kind(question), Evidence([question]))

    assert bonus("Coordinator: Felix Ambrose", "Who coordinates the open day?") > 0
    assert bonus("Brindlemoor: a short guide to the town", "Who founded Brindlemoor?") == 0
    assert (
        bonus("Inner Basin: closure of the slip", "Between which dates is Inner Basin shut?") == 0
    )
    assert bonus("Invoice number: HD-20417", "What is the invoice number?") > 0
    assert bonus("Invoice number: HD-20417", "What is the invoice number HD-20417?") == 0
    assert asked_kind("对发票有疑问应该联系谁？") == "name"


def test_the_ranker_uses_the_embedding_model_and_caches_sentence_vectors() -> None:
    calls: list[str] = []

    class Counting(BagOfWords):
        def embed_query(self, text: str) -> list[float]:
            calls.append(text)
            return super().embed_query(text)

    ranker = SentenceRanker(Counting(64))
    first = ranker.rank(DATES_QUESTION, DOCS)
    embedded = len(calls)
    ranker.rank(DATES_QUESTION, DOCS)
    assert "3 March to 28 March 2025" in first[0].text
    assert len(calls) == embedded  # the same sentences and question again: from the cache


# --- In the chain ----------------------------------------------------------------------------


def chain(model: BaseChatModel, mode: str = "generate") -> Any:
    settings = Settings(answer_mode=mode, chat_context_tokens=4096)
    return rag.build_chain(settings, FixedRetriever(documents=DOCS), model)


def test_an_answer_with_an_invented_fact_is_replaced_by_the_sources_sentences() -> None:
    events = list(answer_events(chain(scripted(INVENTED)).stream({"question": DATES_QUESTION})))
    streamed = "".join(e.text for e in events if isinstance(e, AnswerText))
    replaced = [e for e in events if isinstance(e, AnswerReplaced)]
    assert streamed == INVENTED  # streamed as the model wrote it, then withdrawn
    assert len(replaced) == 1
    assert replaced[0].reason == NOT_SUPPORTED
    assert "3 March to 28 March 2025" in replaced[0].text
    assert "[1]" in replaced[0].text
    answer = collect(events)
    assert answer.text == replaced[0].text
    assert answer.replaced_reason == NOT_SUPPORTED


def test_an_answer_the_sources_hold_stands() -> None:
    supported = "From 2025-03-03 to 2025-03-28, by the dredger Marrowgate [1]."
    events = list(answer_events(chain(scripted(supported)).stream({"question": DATES_QUESTION})))
    assert not [e for e in events if isinstance(e, AnswerReplaced)]
    assert collect(events).text == supported


async def test_the_async_stream_replaces_too() -> None:
    stream = chain(scripted(INVENTED)).astream({"question": DATES_QUESTION})
    chunks = [chunk async for chunk in stream]
    replaced = [c["replaced"] for c in chunks if "replaced" in c]
    assert len(replaced) == 1
    assert "3 March to 28 March 2025" in replaced[0].text


def test_invoke_keeps_the_replacement_beside_the_model_answer() -> None:
    result = chain(scripted(INVENTED)).invoke({"question": DATES_QUESTION})
    assert result["answer"] == INVENTED
    assert "3 March to 28 March 2025" in result["replaced"].text


def test_extract_mode_answers_from_the_sources_without_calling_the_model() -> None:
    model = FailingChatModel(messages=iter([]))
    answer = collect(answer_events(chain(model, "extract").stream({"question": DATES_QUESTION})))
    assert "from 3 March to 28 March 2025. [1]" in answer.text
    assert answer.replaced_reason is None


# --- On every interface ----------------------------------------------------------------------


class FakeResources:
    """What a conversation shares, without a store: the chain's retriever is fixed."""

    def __init__(self, model: BaseChatModel) -> None:
        self.settings = Settings(chat_context_tokens=4096, answer_mode="generate")
        self.model = model
        self.capabilities = ChatCapabilities("fake", "fake", 4096, 2)
        self.model_lock = threading.Lock()

    def follow_library(self, *, after_failure: bool = False) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def invented_model(monkeypatch: pytest.MonkeyPatch) -> BaseChatModel:
    monkeypatch.setattr(Conversation, "retriever", lambda self: FixedRetriever(documents=DOCS))
    return scripted(*[INVENTED] * 4)


def test_the_terminal_chat_shows_the_reason_and_the_sources_sentences(
    invented_model: BaseChatModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.chat import ask

    session = start_conversation(FakeResources(invented_model), "rag")  # type: ignore[arg-type]
    ask(session, DATES_QUESTION)
    shown = capsys.readouterr().out
    assert f"[{NOT_SUPPORTED}]" in shown
    assert shown.index(f"[{NOT_SUPPORTED}]") < shown.index("3 March to 28 March 2025")
    # What the conversation remembers is the replacement, not the invented answer.
    assert "2019" not in str(session.history[-1].content)


def server(model: BaseChatModel) -> TestClient:
    resources = FakeResources(model)
    service = AnswerService(resources, resources.settings, "rag")  # type: ignore[arg-type]
    app = create_app(service, resources.settings, loopback=True)
    return TestClient(app, base_url="http://127.0.0.1")


def sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        name = next((line[6:].strip() for line in lines if line.startswith("event:")), "message")
        data = "\n".join(line[5:].strip() for line in lines if line.startswith("data:"))
        if data:
            events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


def test_the_native_stream_sends_replaced_and_done_holds_the_replacement(
    invented_model: BaseChatModel,
) -> None:
    with server(invented_model) as client:
        response = client.post("/api/chat", json={"question": DATES_QUESTION})
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names.index("token") < names.index("replaced") < names.index("done")
    replaced = dict(events)["replaced"]
    assert replaced["reason"] == NOT_SUPPORTED
    assert "3 March to 28 March 2025" in replaced["text"]
    assert dict(events)["done"]["answer"] == replaced["text"]


def test_the_openai_routes_show_the_note_and_the_sources_sentences(
    invented_model: BaseChatModel,
) -> None:
    body = {"model": "rag", "messages": [{"role": "user", "content": DATES_QUESTION}]}
    with server(invented_model) as client:
        whole = client.post("/v1/chat/completions", json=body).json()
        streamed = client.post("/v1/chat/completions", json=body | {"stream": True}).text
    content = whole["choices"][0]["message"]["content"]
    assert content.startswith("*The model's wording was not supported by the sources")
    assert "3 March to 28 March 2025" in content
    assert "2019" not in content  # never shown in a whole response
    pieces = [
        e["choices"][0]["delta"].get("content", "")
        for _, e in sse_events(streamed)
        if isinstance(e, dict) and e.get("choices")
    ]
    text = "".join(pieces)
    # A stream cannot take back what it sent: the replacement follows under the note.
    assert text.index("2019") < text.index("not supported by the sources")
    assert text.index("not supported by the sources") < text.index("3 March to 28 March 2025")


def test_the_answers_evaluation_counts_unsupported_facts_and_replacements() -> None:
    question = Question(DATES_QUESTION, "town/harbour-notice.txt", "3 March to 28 March 2025")
    invented = check(question, INVENTED, DOCS, 1.0)
    assert invented["unsupported"]
    assert invented["unsupported_facts"] == ["2019", "2023"]
    assert not invented["replaced"]
    answer = collect(answer_events(chain(scripted(INVENTED)).stream({"question": DATES_QUESTION})))
    record = check(question, answer.text, list(answer.documents), 1.0, answer.replaced_reason)
    assert record["replaced"]
    assert not record["unsupported"]
    assert record["expected_text_in_answer"]
