"""The web page in a real headless Chromium (Debian's `chromium`, driven by playwright, which is
pointed at it and never downloads a browser), against `python -m app.serve` and the Ollama test
server. A planted document and the model's reply both carry script: none of it may run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding
from tests.serve_process import ServeProcess, serve_env

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "page-test-token-0123456789abcdef"
PLANTED = """\
# Harbour notes

The harbour master is Ada Quill; her guide is at https://docs.example.org/guide.
The harbour office opens at 08:00.
An old log line, kept as found: "window.__pwned='reply-img'" from 127.0.0.2.

<img src=x onerror="window.__pwned='doc-img'">
<script>window.__pwned='doc-script'</script>
[click me](javascript:window.__pwned='doc-link')
"""
REPLY = """\
**Ada Quill** is the harbour master [1].

- her guide: [the guide](https://docs.example.org/guide)
- the office opens at `08:00`

<img src=x onerror="window.__pwned='reply-img'"><script>window.__pwned='reply-script'</script>
[run me](javascript:window.__pwned='reply-link') ![pixel](http://127.0.0.2/p.png)"""
PDF = "annual-report-2024.pdf"  # the sample observatory report: three pages
# A file whose name and text are markup: the passage panel must show both as text.
PLANTED_NAME = "<img src=x onerror=window.__pwned='panel-name'>.txt"
PLANTED_PASSAGE = """\
The lantern keeper trims the lantern wick every night.
<img src=x onerror="window.__pwned='panel-img'"><script>window.__pwned='panel-script'</script>
"""
TIDES = "High tide at the quay is at 14:10 on Sundays."


class Script:
    def __init__(self) -> None:
        self.words = 0

    def reply(self, body: dict[str, Any]) -> str:
        if body["messages"][0]["content"].startswith("Rewrite"):
            return str(body["messages"][-1]["content"])
        return REPLY + "".join(f" word{i}" for i in range(self.words))


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def ollama(script: Script) -> Iterator[OllamaTestServer]:
    with OllamaTestServer(
        reply=script.reply, embedder=bag_of_words_embedding, piece_delay=0.03
    ) as server:
        yield server


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = tmp_path_factory.mktemp("corpus") / "docs"  # the source's label: `docs/...`
    docs.mkdir()
    (docs / "harbour.txt").write_text(PLANTED, encoding="utf-8")
    (docs / "bakery.txt").write_text("The bakery sells rye bread.", encoding="utf-8")
    (docs / PLANTED_NAME).write_text(PLANTED_PASSAGE, encoding="utf-8")
    (docs / "tides.txt").write_text(TIDES, encoding="utf-8")
    shutil.copy(SAMPLE_DOCS_DIR / "observatory" / PDF, docs / PDF)
    return docs


@pytest.fixture(scope="module")
def server(docs: Path, ollama: OllamaTestServer) -> Iterator[ServeProcess]:
    env = serve_env(
        docs.parent / "chroma",
        OLLAMA_BASE_URL=ollama.base_url,
        EMBEDDING_PROVIDER="ollama",
        CHAT_PROVIDER="ollama",
        DOCS_DIR=str(docs),
        INGEST_WORKERS="1",
        API_TOKEN=TOKEN,
    )
    with ServeProcess(env) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, server: ServeProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    yield page
    context.close()
    assert errors == []


def enter_token(page: Any) -> None:
    page.wait_for_selector("#token.wanted")  # the chains call was refused: token asked for
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#chain option[value=rag]", state="attached")


def ask(page: Any, question: str) -> None:
    page.fill("#question", question)
    page.press("#question", "Enter")


def answered(page: Any, question: str) -> None:
    """Ask and wait for the whole answer (the scripted reply cites [1])."""
    ask(page, question)
    page.wait_for_selector(".answer:not(.streaming) .cite", state="attached", timeout=30_000)


def focused(page: Any) -> str:
    return str(page.evaluate("document.activeElement.id || document.activeElement.className"))


def test_ask_see_tokens_stream_and_sources_and_no_planted_script_runs(page: Any) -> None:
    enter_token(page)
    assert page.eval_on_selector_all("#chain option", "os => os.map(o => o.value)") == [
        "rag",
        "research",
        "support",
    ]
    ask(page, "Who is the harbour master?")
    page.wait_for_selector(".answer.streaming strong")  # the first words, still streaming
    partial = page.inner_text(".answer")
    page.wait_for_selector(".answer:not(.streaming)", state="attached", timeout=30_000)
    answer = page.inner_text(".answer")
    assert len(partial) < len(answer)  # it arrived piece by piece
    assert page.inner_text(".user") == "Who is the harbour master?"

    # Markdown became elements...
    assert page.inner_text(".answer strong") == "Ada Quill"
    assert page.eval_on_selector_all(".answer li", "ls => ls.length") == 2
    assert page.inner_text(".answer code") == "08:00"
    link = page.query_selector(".answer a")
    assert link.get_attribute("href") == "https://docs.example.org/guide"
    assert "noopener" in link.get_attribute("rel")
    # ...while raw HTML stayed text, and nothing could run or load.
    assert "<img src=x onerror=\"window.__pwned='reply-img'\">" in answer
    assert "<script>" in answer
    assert "run me" in answer  # the javascript: link is its text only
    time.sleep(0.5)  # an onerror would have fired by now
    assert page.evaluate("window.__pwned") is None
    assert (
        page.eval_on_selector_all("#conversation img, #conversation script", "n => n.length") == 0
    )
    hrefs = page.eval_on_selector_all("#conversation a", "as => as.map(a => a.href)")
    assert all(href.startswith("https://") for href in hrefs)

    sources = page.eval_on_selector_all(".sources li", "ls => ls.map(l => l.textContent)")
    assert sources[0].startswith("[1]docs/harbour.txt")
    assert page.inner_text(".sources h2").lower() == "sources"


def test_the_markdown_renderer_itself_makes_no_markup_from_text(page: Any) -> None:
    """The renderer, called directly: even without the page's CSP, text cannot become markup."""
    html = page.evaluate(
        """() => {
            const target = document.createElement("div");
            renderMarkdown(target, [
                "<img src=x onerror=\\"window.__pwned='direct'\\">",
                "[x](javascript:window.__pwned='direct-link') [y]( JAVASCRIPT:alert(1))",
                "![i](https://tracker.example/p.png) [d](data:text/html,<script>alert(1)</script>)",
                "```", "<script>window.__pwned='code'</script>", "```",
                "**<b>bold</b>** `<i>code</i>` [ok](https://example.org/a)",
            ].join("\\n"));
            document.body.append(target);
            return [target.innerHTML, [...target.querySelectorAll("a")].map(a => a.href)];
        }"""
    )
    html, hrefs = html
    time.sleep(0.3)
    assert page.evaluate("window.__pwned") is None
    assert "<img" not in html
    assert "<script" not in html
    assert "<b>" not in html
    assert "<i>" not in html
    assert hrefs == ["https://example.org/a"]  # only the https link became a link
    assert "[image: i]" in html


def test_stop_aborts_the_answer_and_the_server_stops_generating(
    page: Any, ollama: OllamaTestServer, script: Script
) -> None:
    enter_token(page)
    script.words = 400  # 12 s at the test server's pace
    dropped = ollama.streams_dropped
    try:
        ask(page, "Who is the harbour master?")
        page.wait_for_selector(".answer.streaming strong")
        assert page.is_enabled("#stop")
        page.click("#stop")
        page.wait_for_selector(".answer:not(.streaming)", state="attached")
        assert page.inner_text(".answer").endswith("[stopped]")
        assert page.is_enabled("#send")
        deadline = time.monotonic() + 10
        while ollama.streams_dropped == dropped and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        script.words = 0
    assert ollama.streams_dropped == dropped + 1


def test_a_long_conversation_sends_the_latest_exchanges_that_fit_the_limits(page: Any) -> None:
    kept = page.evaluate(
        """() => {
            for (let i = 0; i < 30; i++) {
                conversation.push({ role: "user", content: "q" + i },
                                  { role: "assistant", content: "a" + i + "x".repeat(100) });
            }
            limits = { history_messages: 40, history_chars: 1000 };
            return recentHistory();
        }"""
    )
    assert len(kept) == 18  # 9 exchanges of ~108 characters fit in 1,000
    assert kept[0] == {"role": "user", "content": "q21"}
    assert kept[-1]["content"].startswith("a29")


def test_a_citation_opens_its_passage_marked_in_the_text_around_it(page: Any) -> None:
    """Click [1]: the panel shows the cited chunk of the PDF's page 2 as a <mark> between the
    text before and after it, with file and page, fetched with the token; Escape closes it and
    focus goes back to the citation. A source in the list opens it from the keyboard too."""
    enter_token(page)
    answered(page, "Which asteroid team submitted minor-planet position measurements?")
    page.click(".answer .cite")
    page.wait_for_selector("#passage mark")
    assert page.inner_text("#passage-file") == f"docs/{PDF}"
    assert page.inner_text("#passage-where").startswith("page 2 · relevance ")
    marked = page.inner_text("#passage mark")
    assert "asteroid team" in marked
    whole = page.inner_text("#passage-text")
    at = whole.index(marked)
    before, after = whole[:at], whole[at + len(marked) :]
    assert before.strip() or after.strip()  # the text around it, outside the mark
    assert "Annual Report 2024" in before + after
    assert focused(page) == "passage-file"
    assert page.is_hidden("#passage-problem")

    page.keyboard.press("Escape")
    page.wait_for_selector("#passage", state="hidden")
    assert focused(page) == "cite"

    page.focus(".sources .source-link")
    page.keyboard.press("Enter")
    page.wait_for_selector("#passage mark")
    assert "asteroid team" in page.inner_text("#passage mark")
    page.click("#passage-close")
    page.wait_for_selector("#passage", state="hidden")
    assert focused(page) == "source-link"


def test_no_script_from_a_planted_file_name_or_passage_runs_in_the_panel(page: Any) -> None:
    enter_token(page)
    answered(page, "Who trims the lantern wick?")
    page.click(".answer .cite")
    page.wait_for_selector("#passage mark")
    assert page.inner_text("#passage-file") == f"docs/{PLANTED_NAME}"
    assert "<img src=x onerror=\"window.__pwned='panel-img'\">" in page.inner_text("#passage mark")
    assert "<script>" in page.inner_text("#passage mark")
    time.sleep(0.5)  # an onerror would have fired by now
    assert page.evaluate("window.__pwned") is None
    assert page.eval_on_selector_all("#passage img, #passage script", "n => n.length") == 0


def test_a_passage_whose_file_changed_since_the_answer_says_so(
    page: Any, server: ServeProcess, docs: Path
) -> None:
    enter_token(page)
    answered(page, "When is high tide at the quay?")
    (docs / "tides.txt").write_text("High tide at the quay is at 15:25 now.", encoding="utf-8")
    ingest = subprocess.run(
        [sys.executable, "-m", "app.ingest"],
        cwd=PROJECT_ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ingest.returncode == 0, ingest.stderr
    page.click(".answer .cite")
    page.wait_for_selector("#passage-problem.changed")
    note = page.inner_text("#passage-problem")
    assert "docs/tides.txt changed or was removed since it was indexed" in note
    assert page.inner_text("#passage-file") == "docs/tides.txt"
    assert page.query_selector("#passage mark") is None  # never other text in its place


def test_a_citation_the_answer_was_not_given_says_so(page: Any) -> None:
    """A small model can cite a number it never got: the panel says so, and fetches nothing."""
    page.evaluate(
        """() => {
            const answer = document.createElement("div"), box = document.createElement("div");
            document.getElementById("conversation").append(answer, box);
            renderMarkdown(answer, "It is so [7].");
            renderSources(box, answer, { not_found: false, sources: [
                { number: 1, file: "docs/a.txt", page: null, score: 0.5,
                  chunk_ids: ["0".repeat(40)] },
            ] });
        }"""
    )
    page.click(".cite")
    page.wait_for_selector("#passage")
    assert page.inner_text("#passage-problem") == (
        "The answer cites [7], but it was given 1 source: this citation points at nothing."
    )
    assert page.inner_text("#passage-text") == ""
    page.keyboard.press("Escape")
    page.wait_for_selector("#passage", state="hidden")


def test_a_pdf_citation_shows_its_page_drawn_with_the_passage_marked(page: Any) -> None:
    """The panel fetches the cited page with the token and shows it from a blob: URL (the CSP
    allows no other image source); the passage's relevance is asked for with the question."""
    enter_token(page)
    answered(page, "Which asteroid team submitted minor-planet position measurements?")
    with (
        page.expect_request(lambda r: "/page.png?width=" in r.url) as drawn,
        page.expect_request(lambda r: "/api/passages/" in r.url and "query=" in r.url) as scored,
    ):
        page.click(".answer .cite")
    assert "query=Which%20asteroid%20team" in scored.value.url
    assert drawn.value.headers["authorization"] == f"Bearer {TOKEN}"
    page.wait_for_selector("#passage-page:not([hidden]) img[src^='blob:']")
    width, height = page.eval_on_selector(
        "#passage-image", "i => [i.naturalWidth, i.naturalHeight]"
    )
    assert width > 0
    assert height > width  # an A4 page, upright
    assert page.get_attribute("#passage-image", "alt") == f"Page 2 of docs/{PDF}"
    assert page.inner_text("#passage-page-note").startswith("Page 2, the passage marked")
    assert "asteroid team" in page.inner_text("#passage mark")  # the text is there too
    listed = page.inner_text(".sources .score")
    assert page.inner_text("#passage-where") == f"page 2 · relevance {listed}"
    time.sleep(0.3)
    assert page.evaluate("window.__pwned") is None

    page.keyboard.press("Escape")
    page.wait_for_selector("#passage", state="hidden")
    assert page.query_selector("#passage-image") is None  # the blob is let go

    answered(page, "Who trims the lantern wick?")  # a text file: no page to draw
    page.click(".assistant:last-child .answer .cite")
    page.wait_for_selector("#passage mark")
    assert page.is_hidden("#passage-page")
    assert page.eval_on_selector_all("#passage img[src]", "n => n.length") == 0
