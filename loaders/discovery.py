"""Find the files of one source (a folder or a file the user added), safely: no links followed,
nothing outside the source."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from loaders.parsers import SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute
    source: str  # `label/path inside the folder`, forward slashes: the key the store knows it by


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass
class Discovery:
    files: list[SourceFile]
    skipped: list[Skipped]


def file_name(label: str, relative: str) -> str:
    """The name a file is stored, cited and filtered by: the source's label, then its path inside
    the source. It depends on nothing but the source, so adding or removing other sources never
    renames (and re-embeds) a file."""
    if not relative:
        return label
    return f"{label}/{relative}" if label else relative


def discover(
    root: Path,
    label: str = "",
    *,
    within: Iterable[str] | None = None,
    include_hidden: bool = False,
    exclude: Iterable[Path] = (),
) -> Discovery:
    """Every supported file of the source at `root`, sorted, named `label/path inside root`.

    `within` limits the search to those paths inside the root (relative, forward slashes): what
    a watcher saw change. A file found that way is found exactly as a walk of the whole root
    would find it: hidden names and anything under a link are left out the same way.

    Symbolic links inside a root are never followed: a link out of the root would let a folder
    smuggle in any file on the machine. A root is read even when it is a link: it was named.
    Folders in `exclude` (the store's own) are passed over in silence. A path the system cannot
    stat (too long, a link loop) is reported with the reason, never raised.
    """
    walk = _Walk(Path(root).absolute(), label, include_hidden, exclude)
    if not walk.root.is_dir():
        walk.consider(walk.root)
    elif within is None:
        walk.folder(walk.root)
    else:
        for relative in sorted({r.strip("/") for r in within}):
            walk.part(relative)
    skipped = list(dict.fromkeys(walk.skipped))  # a scope inside another reports once
    return Discovery(sorted(walk.found.values(), key=lambda f: f.source), skipped)


class _Walk:
    def __init__(
        self, root: Path, label: str, include_hidden: bool, exclude: Iterable[Path] = ()
    ) -> None:
        self.root = root
        self.label = label
        self.include_hidden = include_hidden
        self.excluded = {_real(p) for p in exclude}
        self.found: dict[str, SourceFile] = {}
        self.skipped: list[Skipped] = []

    def is_excluded(self, folder: Path) -> bool:
        return bool(self.excluded) and _real(folder) in self.excluded

    def name(self, path: Path) -> str:
        if path == self.root:
            return self.label or path.name
        return file_name(self.label, path.relative_to(self.root).as_posix())

    def part(self, relative: str) -> None:
        """One path inside the root, as the whole walk would see it (or not at all)."""
        if not relative:
            self.folder(self.root)
            return
        parts = relative.split("/")
        if not self.include_hidden and any(p.startswith(".") for p in parts):
            return
        here = self.root
        try:
            for depth, part in enumerate(parts):
                here = here / part
                if here.is_symlink():
                    self.skipped.append(_skipped(self.name(here), _link_reason(here, self.root)))
                    return
                if self.is_excluded(here):
                    return
                if depth < len(parts) - 1 and not here.is_dir():
                    return  # gone, or not a folder: nothing of it is in the source any more
            if here.is_dir():
                self.folder(here)
            elif os.path.lexists(here):
                self.consider(here)
        except OSError as exc:
            self.skipped.append(_skipped(self.name(here), _os_reason(exc)))

    def folder(self, start: Path) -> None:
        def unreadable(error: OSError) -> None:
            # os.walk skips a folder it cannot list without a word; report it instead.
            reason = f"folder cannot be read ({error.strerror})"
            self.skipped.append(_skipped(self.name(Path(error.filename or start)), reason))

        if self.is_excluded(start):
            return
        for dirpath, dirnames, filenames in os.walk(start, onerror=unreadable, followlinks=False):
            here = Path(dirpath)
            if not self.include_hidden:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in list(dirnames):
                try:
                    link = (here / name).is_symlink()
                    reason = _link_reason(here / name, self.root) if link else ""
                    excluded = not link and self.is_excluded(here / name)
                except OSError as exc:
                    link, reason, excluded = True, _os_reason(exc), False
                if link or excluded:
                    dirnames.remove(name)
                if link:
                    self.skipped.append(_skipped(self.name(here / name), reason))
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".") and not self.include_hidden:
                    continue
                path = here / name
                try:
                    if path.is_symlink():
                        reason = _link_reason(path, self.root)
                        self.skipped.append(_skipped(self.name(path), reason))
                        continue
                    self.consider(path)
                except OSError as exc:
                    self.skipped.append(_skipped(self.name(path), _os_reason(exc)))

    def consider(self, path: Path) -> None:
        source = self.name(path)
        if _printable(source) != source:
            # The store, the JSON report and the terminal all need text: such a name cannot be
            # stored faithfully, so it is reported (bad bytes shown as \ufffd) instead.
            self.skipped.append(_skipped(source, "file name is not valid UTF-8; rename the file"))
        elif not path.is_file():
            self.skipped.append(_skipped(source, "not a regular file"))
        elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
            kind = path.suffix.lower() or "without an extension"
            self.skipped.append(_skipped(source, f"unsupported file type ({kind})"))
        elif not os.access(path, os.R_OK):
            self.skipped.append(_skipped(source, "permission denied (not readable)"))
        else:
            self.found[source] = SourceFile(path, source)


def _skipped(source: str, reason: str) -> Skipped:
    return Skipped(_printable(source), _printable(reason))


def _printable(text: str) -> str:
    """Bytes of a file name that are not UTF-8 reach Python as lone surrogates, which printing
    or storing would fail on: show them as U+FFFD."""
    return os.fsencode(text).decode("utf-8", "replace")


def _real(path: Path) -> Path:
    """Links resolved as far as they go; never raises (a loop stays where it loops)."""
    return Path(os.path.realpath(path))


def _link_reason(path: Path, root: Path) -> str:
    target = _real(path)
    root = _real(root)
    if target == root or root in target.parents:
        return "symbolic link (links are not followed)"
    return f"symbolic link to a path outside the root ({_printable(str(target))}); not followed"


def _os_reason(exc: OSError) -> str:
    """What the system said about a path it could not look at, in words."""
    if exc.errno == errno.ENAMETOOLONG:
        return "path too long for the system (ENAMETOOLONG); move it higher up"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot be read ({exc.strerror or exc})"
