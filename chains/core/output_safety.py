"""Model output and document text are untrusted: strip terminal escape sequences and control
characters before anything reaches a terminal (a planted document could emit OSC 8 hyperlinks,
OSC 52 clipboard writes or CSI commands, and the model can echo them), and strip Markdown images
and links to hosts the sources do not mention (a tracking image or a phishing link)."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from langchain_core.documents import Document

URL = re.compile(r"https?://[^\s)>\]\"']+", re.IGNORECASE)
IMAGE = re.compile(r"!\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[^)]*)?\)")
LINK = re.compile(r"\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[^)]*)?\)")
REFERENCE = re.compile(r"^[ \t]*\[[^\]\n]+\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", re.MULTILINE)
AUTOLINK = re.compile(r"<((?:https?|ftp|data):[^>\s]+)>", re.IGNORECASE)
# What a Markdown link or image can look like while it is still arriving token by token.
PARTIAL = re.compile(r"!?\[[^\]\n]*(\](\([^)\n]*)?)?$|!$")
HOLD_LIMIT = 400  # characters held back waiting for a link or an escape sequence to close

# ECMA-48: CSI sequences; OSC, DCS, SOS, PM and APC strings (OSC 8 links, OSC 52 clipboard);
# any other ESC sequence; each in its 7-bit (ESC ...) and 8-bit (C1) form.
_C1_STRING = "\x90\x98\x9d\x9e\x9f"  # DCS, SOS, OSC, PM, APC as single C1 characters
ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    rf"|(?:\x1b[\]PX^_]|[{_C1_STRING}])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
)
# What may still become one of those while it arrives token by token.
PARTIAL_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*"
    rf"|(?:\x1b[\]PX^_]|[{_C1_STRING}])[^\x07\x1b\x9c]*\x1b?"
    r"|\x1b[ -/]*"
)
ESCAPE_START = re.compile(f"[\x1b\x9b{_C1_STRING}]")
# Every control character but tab and newline: C0 (ESC, BEL, BS, CR...), DEL and C1.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def allowed_hosts(documents: list[Document]) -> set[str]:
    hosts = set()
    for doc in documents:
        for url in URL.findall(doc.page_content):
            host = urlparse(url).hostname
            if host:
                hosts.add(host.lower())
    return hosts


def _allowed(url: str, hosts: set[str]) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("", "#") and not parsed.netloc:
        return not url.lower().startswith(("data:", "javascript:"))  # a relative link
    return parsed.scheme in ("http", "https") and (parsed.hostname or "").lower() in hosts


def terminal_safe(text: str) -> str:
    """Text with every escape sequence removed whole and every other control character but tab
    and newline dropped: what a document or a model wrote can print, never command a terminal."""
    return CONTROL.sub("", ESCAPE_SEQUENCE.sub("", text.replace("\r\n", "\n")))


def sanitize(text: str, hosts: set[str]) -> str:
    text = terminal_safe(text)
    text = IMAGE.sub(lambda m: m.group(0) if _allowed(m.group(2), hosts) else "", text)
    text = LINK.sub(lambda m: m.group(0) if _allowed(m.group(2), hosts) else m.group(1), text)
    text = REFERENCE.sub(lambda m: m.group(0) if _allowed(m.group(1), hosts) else "", text)
    return AUTOLINK.sub(lambda m: m.group(0) if _allowed(m.group(1), hosts) else "", text)


class SafeStream:
    """Sanitize streamed tokens without waiting for the whole answer: text is released as soon
    as it cannot be the start of a link, an image or an escape sequence any more."""

    def __init__(self, hosts: set[str]) -> None:
        self.hosts = hosts
        self.pending = ""

    def feed(self, token: str) -> str:
        self.pending += token
        # Escape sequences first, so a complete one ("\x1b[2J") cannot pass for link text; one
        # still arriving stays held. Then text that may still become a link or image is held.
        escape_from = _unsettled_escape_from(self.pending)
        settled = terminal_safe(self.pending[:escape_from])
        cut = _unsettled_link_from(settled)
        ready, self.pending = settled[:cut], settled[cut:] + self.pending[escape_from:]
        return sanitize(ready, self.hosts)

    def close(self) -> str:
        ready, self.pending = self.pending, ""
        return sanitize(ready, self.hosts)


def _unsettled_escape_from(text: str) -> int:
    """Where an escape sequence starts that is still arriving, else the end of `text`."""
    position = 0
    while match := ESCAPE_START.search(text, position):
        start = match.start()
        if PARTIAL_ESCAPE.fullmatch(text, start):
            return start if len(text) - start <= HOLD_LIMIT else len(text)
        complete = ESCAPE_SEQUENCE.match(text, start)
        position = complete.end() if complete else start + 1
    return len(text)


def _unsettled_link_from(text: str) -> int:
    """Where a Markdown link or image starts that is still arriving, else the end of `text`."""
    start = max(text.rfind("["), text.rfind("!"))
    if start < 0 or len(text) - start > HOLD_LIMIT:
        return len(text)
    if start > 0 and text[start - 1] == "!":
        start -= 1
    return start if PARTIAL.match(text, start) else len(text)
