"""`python -m app.chat` as a person uses it: in a pseudo-terminal (pexpect), typing questions,
commands, Ctrl-C and Ctrl-D. The chat and embedding models are the Ollama-compatible test server
over real HTTP, scripted: answers name the question they answer, and can be slow, fail, or
carry terminal escapes; its embeddings share words, so retrieval behaves."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pexpect
import pytest

from app.config import Settings
from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR
from chains.core.answering import REWRITE_INSTRUCTIONS
from tests.ollama_server import OllamaTestServer, bag_of_words_embedding, estimate_tokens

pytestmark = pytest.mark.integration

SETTING_KEYS = [name.upper() for name in Settings.model_fields]  # none inherited by the chat

PROMPT = "you>"
TIMEOUT = 90  # seconds for one step on a loaded 2-core machine
CSI_STYLE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # what rich itself writes: colours, cursor
PLANTED = (
    "Ferry safety notice. Click \x1b]8;;https://evil.example/x\x1b\\here\x1b]8;;\x1b\\ for the "
    "ferry timetable.\x1b]52;c;cm0gLXJmIH4K\x07 The ferry\x1b[2J\x1b[6n crew\x1b\ncheck tickets."
)
HOSTILE_REPLY = (
    "Copy\x1b]52;c;ZXZpbA==\x07 this \x1b]8;;https://evil.example/\x07link\x1b]8;;\x07 now\x1b[2J."
)
INJECTED = ["\x1b]8;;https://evil", "\x1b]52;", "\x1b[2J", "\x1b[6n"]


def reply(body: dict[str, Any]) -> str:
    """Rewrites say which question they rewrote; answers say which question they answer."""
    messages = body["messages"]
    question = str(messages[-1]["content"])
    if messages[0]["content"] == REWRITE_INSTRUCTIONS:
        return f"Standalone: {question}"
    asked = re.split(r"[Qq]uestion: ", question.strip().splitlines()[-1])[-1]
    if "escape" in asked:
        return HOSTILE_REPLY
    if "long account" in asked:
        return f"Long answer to {asked}: " + " ".join(f"word{i}" for i in range(120))
    if "story" in asked:
        return f"A story for {asked}: " + " ".join(f"word{i}" for i in range(300))
    return f"Answer to: {asked}"


@pytest.fixture(scope="module")
def server() -> Iterator[OllamaTestServer]:
    with OllamaTestServer(reply=reply, embedder=bag_of_words_embedding) as running:
        yield running


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory, server: OllamaTestServer) -> dict:
    """Settings for the chat process, and a store ingested once for the module."""
    root = tmp_path_factory.mktemp("terminal")
    docs = root / "docs"
    shutil.copytree(SAMPLE_DOCS_DIR, docs)
    (docs / "ferry" / "safety-notice.txt").write_text(PLANTED)
    env = {k: v for k, v in os.environ.items() if k not in SETTING_KEYS}
    env |= {
        "LOCALRAG_ENV_FILE": os.devnull,
        "HOME": str(root),  # the line history file goes here
        "CHROMA_DIR": str(root / "chroma"),
        "DOCS_DIR": str(docs),
        "CHAT_PROVIDER": "ollama",
        "EMBEDDING_PROVIDER": "ollama",
        "OLLAMA_BASE_URL": server.base_url,
        "OLLAMA_PROBE_TIMEOUT": "10",
        "TERM": "xterm-256color",
        "HF_HUB_OFFLINE": "1",
    }
    ingest = subprocess.run(
        [sys.executable, "-m", "app.ingest", str(docs)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ingest.returncode == 0, ingest.stderr
    return env


class Terminal:
    """One `python -m app.chat` in a pseudo-terminal of 200 x 50."""

    def __init__(self, env: dict, *args: str, **settings: str) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "app.chat", *args],
            cwd=str(PROJECT_ROOT),
            env=env | settings,
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(50, 200),
            timeout=TIMEOUT,
            # As a chat started by a script in the background: SIGINT ignored. Ctrl-C must
            # still stop an answer (the chat handles SIGINT itself).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        self.transcript = ""
        self.child.expect(PROMPT)
        self.transcript += str(self.child.before) + str(self.child.after)

    def ask(self, line: str) -> str:
        """Type a line, return what the terminal showed until the next prompt (raw)."""
        self.child.sendline(line)
        self.child.expect(PROMPT)
        shown = str(self.child.before)
        self.transcript += shown + PROMPT
        return shown

    def leave(self) -> int:
        # Ctrl-D. The prompt is printed just before readline takes the terminal; a Ctrl-D that
        # lands in between is swallowed by the mode switch (a person would press it again).
        for _ in range(5):
            self.child.sendeof()
            if self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=TIMEOUT / 5) == 0:
                break
        else:
            raise AssertionError(f"Ctrl-D did not end the session:\n{self.transcript[-2000:]}")
        self.child.close()
        return int(self.child.exitstatus or 0)

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def visible(raw: str) -> str:
    return CSI_STYLE.sub("", raw).replace("\r", "")


def sources(raw: str) -> list[str]:
    return re.findall(r"^\[\d+\] (\S+)", visible(raw).split("Sources:")[-1], flags=re.M)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.kill()


def test_a_conversation_with_follow_ups_and_every_command(
    environment: dict, server: OllamaTestServer, terminals: list[Terminal]
) -> None:
    server.clear_requests()
    chat = Terminal(environment)
    terminals.append(chat)

    first = visible(chat.ask("When does the first ferry leave the quay?"))
    assert "Answer to: When does the first ferry leave the quay?" in first
    assert sources(first)

    follow_up = visible(chat.ask("And the last one?"))
    rewrite = server.requests_to("/api/chat")[-2].json
    assert rewrite is not None
    assert rewrite["messages"][0]["content"] == REWRITE_INSTRUCTIONS
    assert "When does the first ferry leave" in rewrite["messages"][1]["content"]  # history
    assert "Answer to: And the last one?" in follow_up

    shown = visible(chat.ask("/sources"))
    assert re.search(r"rag chain, similarity search, k 4, threshold 0\.00, in all files:", shown)
    assert re.search(r"^\[1\] .+ score 0\.\d{3}$", shown, flags=re.M)
    passage = visible(chat.ask("/show 1"))
    assert re.search(r"^\[1\] docs/\S+", passage, flags=re.M)
    assert len(passage.strip().splitlines()) > 1  # the passage itself under its label
    assert "Use /show N with N from 1 to" in visible(chat.ask("/show 99"))

    assert "Searching folder=ferry." in visible(chat.ask("/where folder=ferry"))
    in_ferry = chat.ask("Who keeps the lighthouse?")
    assert sources(in_ferry)
    # Stored names start with the source's label (`docs/`); filters may leave it out.
    assert all(s.startswith("docs/ferry/") for s in sources(in_ferry)), sources(in_ferry)
    assert "Searching all files." in visible(chat.ask("/where"))
    assert "Cannot read the filter 'colour=blue'" in visible(chat.ask("/where colour=blue"))

    listed = visible(chat.ask("/chain"))
    assert re.search(r"^\* rag ", listed, flags=re.M)
    assert re.search(r"^  support ", listed, flags=re.M)
    assert "Now answering with the support chain." in visible(chat.ask("/chain support"))
    assert "support chain, hybrid search, k 3" in visible(chat.ask("/sources"))
    assert "Available: rag" in visible(chat.ask("/chain nope"))

    assert "Conversation forgotten." in visible(chat.ask("/reset"))
    before = len(server.requests_to("/api/chat"))
    assert "Answer to" in visible(chat.ask("How long is the Long Mole?"))
    assert len(server.requests_to("/api/chat")) == before + 1  # no history: no rewrite

    assert "/where FILTER" in visible(chat.ask("/help"))
    assert "Unknown command /frobnicate" in visible(chat.ask("/frobnicate"))
    assert "Traceback" not in chat.transcript
    assert chat.leave() == 0


def test_ctrl_c_stops_the_answer_and_the_session_goes_on(
    environment: dict, server: OllamaTestServer, terminals: list[Terminal]
) -> None:
    chat = Terminal(environment)
    terminals.append(chat)
    server.piece_delay = 0.5  # 300 words: two and a half minutes unless stopped
    try:
        chat.child.sendline("Tell me a long story about the ferry")
        chat.child.expect("word3")  # the answer is streaming
        chat.child.sendintr()  # Ctrl-C
        if chat.child.expect([PROMPT, pexpect.TIMEOUT], timeout=15) == 1:
            raise AssertionError(
                "No prompt 15 s after Ctrl-C; the terminal showed:\n"
                + visible(str(chat.child.before))[-3000:]
            )
        stopped = visible(str(chat.child.before))
        assert "[stopped]" in stopped
        assert "word290" not in stopped
    finally:
        server.piece_delay = 0.0
    after = visible(chat.ask("When does the first ferry leave the quay?"))
    assert "Answer to: When does the first ferry leave the quay?" in after
    # A Ctrl-C at the prompt does not end the session either.
    chat.child.sendintr()
    chat.child.expect(PROMPT)
    assert "Answer to: How long is the Long Mole?" in visible(
        chat.ask("How long is the Long Mole?")
    )
    assert chat.leave() == 0


def test_the_session_survives_model_and_store_failures(
    environment: dict, server: OllamaTestServer, terminals: list[Terminal]
) -> None:
    chat = Terminal(environment, OLLAMA_TIMEOUT="2")
    terminals.append(chat)
    question = "When does the first ferry leave the quay?"
    works = f"Answer to: {question}"

    server.delay = 5  # slow model server
    try:
        slow = visible(chat.ask(question))
    finally:
        server.delay = 0
    assert "did not answer within 2 s (OLLAMA_TIMEOUT)" in slow
    assert works in visible(chat.ask(question))

    models = server.models
    server.models = tuple(m for m in models if "llama" not in m)  # the chat model was removed
    try:
        missing = visible(chat.ask(question))
    finally:
        server.models = models
    assert "does not have the model 'llama3.2'" in missing
    assert works in visible(chat.ask(question))

    port = server.port
    server.stop()  # the model server goes down
    try:
        down = visible(chat.ask(question))
    finally:
        server.requested_port = port
        server.start()
    assert "Ollama is not answering" in down
    assert works in visible(chat.ask(question))

    rebuild = subprocess.run(
        [sys.executable, "-m", "app.ingest", "--rebuild"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rebuild.returncode == 0, rebuild.stderr
    rebuilt = visible(chat.ask(question))
    # The session follows the library to the rebuilt collection, and answers from it.
    assert "The library was rebuilt: answering from" in rebuilt
    assert works in rebuilt
    assert works in visible(chat.ask(question))

    assert "Traceback" not in rebuilt
    for shown in (slow, missing, down):
        assert "Traceback" not in shown
        assert len([line for line in shown.splitlines() if line.strip()]) <= 3, shown
    assert chat.leave() == 0


def test_flags_set_the_search(environment: dict, terminals: list[Terminal]) -> None:
    chat = Terminal(
        environment, "--where", "folder=ferry", "--mode", "hybrid", "-k", "1", "--threshold", "0.05"
    )
    terminals.append(chat)
    answered = chat.ask("When does the first ferry leave the quay?")
    assert len(sources(answered)) == 1
    assert sources(answered)[0].startswith("docs/ferry/")
    shown = visible(chat.ask("/sources"))
    assert "rag chain, hybrid search, k 1 of 5, threshold 0.05, in folder=ferry:" in shown
    score = float(re.findall(r"score (\d\.\d{3})", shown)[0])
    assert score >= 0.05
    assert chat.leave() == 0

    strict = Terminal(environment, "--threshold", "0.99")
    terminals.append(strict)
    not_found = visible(strict.ask("When does the first ferry leave the quay?"))
    assert "I could not find this in your documents" in not_found
    assert "Nearest sources:" in not_found
    assert strict.leave() == 0

    bad = subprocess.run(
        [sys.executable, "-m", "app.chat", "--where", "colour=blue", "-q", "x"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "Cannot read the filter 'colour=blue'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_escapes_from_documents_and_answers_never_reach_the_terminal(
    environment: dict, terminals: list[Terminal]
) -> None:
    chat = Terminal(environment, "--where", "file=ferry/safety-notice.txt")
    terminals.append(chat)
    raw = chat.ask("Please escape: what does the ferry safety notice say?")
    raw += chat.ask("/sources")
    raw += chat.ask("/show 1")
    for sequence in INJECTED:
        assert sequence not in raw, repr(sequence)
    shown = visible(raw)
    assert "Copy this link now." in shown  # the answer's text stays, its escapes go
    assert "Click here for the ferry timetable. The ferry crew check tickets." in shown
    assert "\x1b" not in shown  # nothing but rich's own styling was written
    assert chat.leave() == 0


def test_twenty_long_exchanges_fit_a_small_window(
    environment: dict, server: OllamaTestServer, terminals: list[Terminal]
) -> None:
    num_ctx, answer_tokens = 1024, 200
    chat = Terminal(environment, OLLAMA_NUM_CTX=str(num_ctx), MAX_ANSWER_TOKENS=str(answer_tokens))
    terminals.append(chat)
    server.clear_requests()
    for turn in range(1, 21):
        shown = visible(chat.ask(f"Turn {turn}: a long account of the ferry, please"))
        assert f"Long answer to Turn {turn}:" in shown, shown
        assert "error" not in shown.lower()
    requests = [r.json for r in server.requests_to("/api/chat") if r.json]
    assert len(requests) == 20 + 19  # every follow-up was rewritten, then answered
    for body in requests:
        prompt = sum(estimate_tokens(str(m["content"])) for m in body["messages"])
        assert body["options"]["num_ctx"] == num_ctx
        assert prompt + answer_tokens <= num_ctx, prompt
    last_answer = requests[-1]["messages"]
    assert any("Turn 19:" in str(m["content"]) for m in last_answer)  # the last exchange
    assert not any("Turn 1:" in str(m["content"]) for m in last_answer)  # the oldest went
    assert chat.leave() == 0
