"""Model output is untrusted too: strip Markdown images and links to hosts the sources do not
mention (a planted document could make the model emit a tracking image or a phishing link)."""

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
HOLD_LIMIT = 400  # characters held back waiting for a link to close, at most


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


def sanitize(text: str, hosts: set[str]) -> str:
    text = IMAGE.sub(lambda m: m.group(0) if _allowed(m.group(2), hosts) else "", text)
    text = LINK.sub(lambda m: m.group(0) if _allowed(m.group(2), hosts) else m.group(1), text)
    text = REFERENCE.sub(lambda m: m.group(0) if _allowed(m.group(1), hosts) else "", text)
    return AUTOLINK.sub(lambda m: m.group(0) if _allowed(m.group(1), hosts) else "", text)


class SafeStream:
    """Sanitize streamed tokens without waiting for the whole answer: text is released as soon
    as it cannot be the start of a link or image any more."""

    def __init__(self, hosts: set[str]) -> None:
        self.hosts = hosts
        self.pending = ""

    def feed(self, token: str) -> str:
        self.pending += token
        cut = self._unsettled_from()
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        return sanitize(ready, self.hosts)

    def close(self) -> str:
        ready, self.pending = self.pending, ""
        return sanitize(ready, self.hosts)

    def _unsettled_from(self) -> int:
        start = max(self.pending.rfind("["), self.pending.rfind("!"))
        if start < 0 or len(self.pending) - start > HOLD_LIMIT:
            return len(self.pending)
        if start > 0 and self.pending[start - 1] == "!":
            start -= 1
        return start if PARTIAL.match(self.pending, start) else len(self.pending)
