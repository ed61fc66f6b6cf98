"""Who may call the server: a Bearer token when API_TOKEN is set, and, when bound to loopback,
only requests addressed to a loopback name (a web page cannot reach it by DNS rebinding).
`app/api/guard.py` applies both to every request as soon as its headers are in, before its
body is read."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from base64 import b64encode
from urllib.parse import urlsplit

from pydantic import SecretStr

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; a name that needs DNS is never loopback here."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


TOKEN_MISSING = (
    "Missing or wrong API token: send the header `Authorization: Bearer <API_TOKEN>` "
    "(in the web page: the token field; in the openai client: api_key)."
)


def token_accepted(expected: SecretStr | None, authorization: str) -> bool:
    """`Authorization: Bearer <API_TOKEN>`, compared in constant time; anything when no token
    is set."""
    if expected is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        given.strip().encode(), expected.get_secret_value().encode()
    )


def foreign_host(host_header: str) -> str | None:
    """On a loopback bind, the Host header must name loopback too: a page from another site
    whose name it re-points to 127.0.0.1 (DNS rebinding) is refused. The message, or None."""
    host = urlsplit("//" + host_header).hostname or ""
    if is_loopback(host):
        return None
    return (
        f"This server answers only on loopback, not as {host!r}. To serve other "
        "addresses, start it with --host and an API_TOKEN."
    )


def page_headers(html: str) -> dict[str, str]:
    """A Content-Security-Policy that runs only the page's own inline script (by its hash), so
    even markup that slipped into the page could not run code or load anything from outside.
    Images: the page's own, and `blob:` for a cited page it fetched (with the token) itself."""
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    hashes = " ".join(
        f"'sha256-{b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts
    )
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
