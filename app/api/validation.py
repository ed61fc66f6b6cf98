"""Checks on what clients send, before any of it reaches a model or the store: the body is
UTF-8 JSON of a sane depth, and every string in it is text that can be sent on (JSON's
`\\ud800` escapes can carry a lone UTF-16 surrogate, which no UTF-8 encoder accepts)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_JSON_DEPTH = 32  # the deepest request this API defines is 5 levels
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


SURROGATE = (
    "contains a lone UTF-16 surrogate, which is not text; send valid Unicode (both halves of a "
    "surrogate pair, or the character itself)"
)


def unencodable(text: str) -> str | None:
    """Why `text` cannot be sent on as UTF-8, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X}) at character "
            f"{exc.start}, which is not text; send valid Unicode (both halves of a surrogate "
            "pair, or the character itself)"
        )
    return None


def _text(value: str) -> str:
    problem = unencodable(value)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_text)]
"""A `str` field of a request: a lone surrogate is a 422 naming the field."""


def body_problem(body: bytes) -> str | None:
    """Why a JSON body cannot be read, before parsing it: not UTF-8 (RFC 8259 requires it), or
    nested deeper than any request of this API (a parser would recurse once per level)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"The request body is not UTF-8: byte 0x{body[exc.start]:02x} at position "
            f"{exc.start} is not valid there. Send JSON encoded as UTF-8."
        )
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return (
                    f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep; no request "
                    "of this API needs more than 5."
                )
        else:
            depth -= 1
    return None
