"""Find the files under the roots to ingest, safely: no links followed, nothing outside a root."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loaders.parsers import SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    source: str  # relative to its root, forward slashes: the key the store knows it by


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass
class Discovery:
    files: list[SourceFile]
    skipped: list[Skipped]


def discover(roots: Iterable[Path], *, include_hidden: bool = False) -> Discovery:
    """Every supported file under the roots, sorted, each named relative to its root.

    With several roots, names are relative to their common parent so they stay unique.
    Symbolic links inside a root are never followed: a link out of the root would let a folder
    smuggle in any file on the machine. A root is read even when it is a link: it was named.
    """
    roots = [Path(r).absolute() for r in roots]
    base = _common_base(roots)
    found: dict[str, SourceFile] = {}
    skipped: list[Skipped] = []
    for root in roots:
        if not root.is_dir():
            _consider(root, base, found, skipped)
            continue

        def unreadable(error: OSError, root: Path = root) -> None:
            # os.walk skips a folder it cannot list without a word; report it instead.
            reason = f"folder cannot be read ({error.strerror})"
            skipped.append(_skipped(_name(Path(error.filename or root), base), reason))

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
            here = Path(dirpath)
            if not include_hidden:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in list(dirnames):
                if (here / name).is_symlink():
                    dirnames.remove(name)
                    skipped.append(
                        _skipped(_name(here / name, base), _link_reason(here / name, root))
                    )
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".") and not include_hidden:
                    continue
                path = here / name
                if path.is_symlink():
                    skipped.append(_skipped(_name(path, base), _link_reason(path, root)))
                    continue
                _consider(path, base, found, skipped)
    return Discovery(sorted(found.values(), key=lambda f: f.source), skipped)


def _consider(path: Path, base: Path, found: dict[str, SourceFile], skipped: list[Skipped]) -> None:
    source = _name(path, base)
    if _printable(source) != source:
        # The store, the JSON report and the terminal all need text: such a name cannot be
        # stored faithfully, so it is reported (bad bytes shown as \ufffd) instead.
        skipped.append(_skipped(source, "file name is not valid UTF-8; rename the file"))
    elif not path.is_file():
        skipped.append(_skipped(source, "not a regular file"))
    elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
        kind = path.suffix.lower() or "without an extension"
        skipped.append(_skipped(source, f"unsupported file type ({kind})"))
    elif not os.access(path, os.R_OK):
        skipped.append(_skipped(source, "permission denied (not readable)"))
    else:
        found[source] = SourceFile(path, source)


def _skipped(source: str, reason: str) -> Skipped:
    return Skipped(_printable(source), _printable(reason))


def _printable(text: str) -> str:
    """Bytes of a file name that are not UTF-8 reach Python as lone surrogates, which printing
    or storing would fail on: show them as U+FFFD."""
    return os.fsencode(text).decode("utf-8", "replace")


def _common_base(roots: list[Path]) -> Path:
    if len(roots) == 1:
        root = roots[0]
        return root.parent if root.is_file() else root
    return Path(os.path.commonpath([r.parent if r.is_file() else r for r in roots]))


def _name(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path != base else path.name


def _link_reason(path: Path, root: Path) -> str:
    target = path.resolve()
    inside = target == root.resolve() or root.resolve() in target.parents
    if inside:
        return "symbolic link (links are not followed)"
    return f"symbolic link to a path outside the root ({target}); not followed"
