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
        if self.is_excluded(start):
            return
        inside = "" if start == self.root else start.relative_to(self.root).as_posix()
        self._scan(str(start), inside)

    def _scan(self, folder: str, inside: str) -> None:
        """One folder with os.scandir (files, links and subfolders in name order, then each
        subfolder): an entry's type comes with the listing, so a regular file costs no stat and
        its name is built as a string (at 100,000 files, a stat and a relative_to per file
        were most of a sync with nothing to do)."""
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            too_long = exc.errno in (errno.ENAMETOOLONG, errno.ELOOP)
            reason = _os_reason(exc) if too_long else f"folder cannot be read ({exc.strerror})"
            self.skipped.append(_skipped(self._named(inside), reason))
            return
        folders: list[tuple[str, str]] = []
        for entry in entries:
            if entry.name.startswith(".") and not self.include_hidden:
                continue
            relative = f"{inside}/{entry.name}" if inside else entry.name
            try:
                if entry.is_symlink():
                    reason = _link_reason(Path(entry.path), self.root)
                    self.skipped.append(_skipped(self._named(relative), reason))
                elif entry.is_dir(follow_symlinks=False):
                    if not self.is_excluded(Path(entry.path)):
                        folders.append((entry.path, relative))
                elif entry.is_file(follow_symlinks=False):
                    self._regular(Path(entry.path), self._named(relative))
                else:
                    self.consider(Path(entry.path))  # a device, socket or pipe: says which
            except OSError as exc:
                self.skipped.append(_skipped(self._named(relative), _os_reason(exc)))
        for path, relative in folders:
            self._scan(path, relative)

    def _named(self, relative: str) -> str:
        return file_name(self.label, relative) if relative else self.label or self.root.name

    def consider(self, path: Path) -> None:
        source = self.name(path)
        if _printable(source) != source:
            # The store, the JSON report and the terminal all need text: such a name cannot be
            # stored faithfully, so it is reported (bad bytes shown as \ufffd) instead.
            self.skipped.append(_skipped(source, "file name is not valid UTF-8; rename the file"))
        elif not path.is_file():
            self.skipped.append(_skipped(source, "not a regular file"))
        else:
            self._regular(path, source)

    def _regular(self, path: Path, source: str) -> None:
        """A regular file named `source`: found, or skipped with the reason."""
        if _printable(source) != source:
            self.skipped.append(_skipped(source, "file name is not valid UTF-8; rename the file"))
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
    if text.isascii():
        return text  # most names: no encoding round trip per file
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
