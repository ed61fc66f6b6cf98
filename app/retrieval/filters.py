"""Which files a question may search: `file=PATTERN`, `folder=PATH` or `type=EXT`, as typed
after --where (or /where, or the API's `where`)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SourceFilter:
    """`file=PATTERN`, `folder=PATH` or `type=EXT`, as typed after --where."""

    field: Literal["file", "folder", "type"]
    value: str

    @classmethod
    def parse(cls, text: str) -> SourceFilter:
        key, sep, value = text.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "source":
            key = "file"
        if not sep or key not in ("file", "folder", "type") or not value:
            raise ValueError(
                f"Cannot read the filter {text!r}: use file=PATH (wildcards allowed), "
                "folder=PATH or type=EXT, e.g. folder=ferry or type=pdf."
            )
        return cls(key, value)  # type: ignore[arg-type]

    def matches(self, source: str) -> bool:
        """Paths count from the library (`docs/ferry`) or from inside a source (`ferry`)."""
        inside = source.partition("/")[2]
        return any(self._matches(name) for name in (source, inside) if name)

    def _matches(self, source: str) -> bool:
        if self.field == "file":
            return source == self.value or fnmatch.fnmatch(source, self.value)
        if self.field == "folder":
            return source.startswith(self.value.strip("/") + "/")
        return source.lower().endswith("." + self.value.lower().lstrip("."))

    def __str__(self) -> str:
        return f"{self.field}={self.value}"


def allowed_sources(filters: list[SourceFilter], known_sources: list[str]) -> frozenset[str] | None:
    """The stored files every filter accepts; None when there is no filter."""
    if not filters:
        return None
    return frozenset(s for s in known_sources if all(f.matches(s) for f in filters))
