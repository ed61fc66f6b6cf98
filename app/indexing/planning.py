"""What a run does to which sources: the paths a user typed, turned into sources to add, sync
or remove. Overlaps are settled here so that no file is ever stored twice, and a path always
means that path: never a different source through a label."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import ConfigError
from app.store.library import Library, LibrarySource, normalize


@dataclass
class Target:
    source: LibrarySource
    within: list[str] | None = None  # paths inside the source to sync; None: all of it
    added: bool = False


@dataclass
class SyncPlan:
    targets: list[Target] = field(default_factory=list)
    absorbed: dict[str, list[str]] = field(default_factory=dict)  # outer label -> inner labels
    notes: list[str] = field(default_factory=list)


def plan_sync(library: Library, paths: list[Path], default: Path) -> SyncPlan:
    """Which sources to sync, adding the paths that are new as sources (in the record in
    memory; the caller saves it). The paths are normalized and exist, or are sources.

    Overlaps, so that no file is ever stored twice: a path inside a source is synced as part of
    that source; a new folder that holds sources takes them over (its sync stores their files
    under its own label, then they are removed). With no path, every source is synced, or
    `default` (DOCS_DIR) is added to a library without sources."""
    plan = SyncPlan()
    if not paths:
        if not library.sources:
            return plan_sync(library, [default], default)
        for source in library.sources:
            outer = library.enclosing(source.location)
            if outer is not None and outer[0] is not source:
                plan.absorbed.setdefault(outer[0].label, []).append(source.label)
            else:
                plan.targets.append(Target(source))
        return plan
    by_label: dict[str, Target] = {}
    for path in sorted(dict.fromkeys(paths), key=lambda p: len(p.parts)):
        hit = library.enclosing(path)
        if hit is None:
            inner = library.nested_in(path)
            source = library.add(path)
            by_label[source.label] = Target(source, added=True)
            plan.targets.append(by_label[source.label])
            if inner:
                plan.absorbed[source.label] = [s.label for s in inner]
                plan.notes.append(
                    f"{path} holds the sources {', '.join(s.label for s in inner)}: their files "
                    f"are stored again under {source.label}/ and those sources removed once "
                    f"{source.label} is complete (never two copies of a file)."
                )
            continue
        source, inside = hit
        target = by_label.get(source.label)
        if target is None:
            target = by_label[source.label] = Target(source, within=[])
            plan.targets.append(target)
        if not inside:
            target.within = None
        elif target.within is not None:
            target.within.append(inside)
            plan.notes.append(f"{path} is inside the source {source.label} ({source.path}).")
    for target in plan.targets:  # a source synced whole takes over the sources inside it
        if target.within is None and not target.added:
            taken = [s.label for s in library.nested_in(target.source.location)]
            if taken:
                plan.absorbed.setdefault(target.source.label, []).extend(taken)
    return plan


def plan_remove(library: Library, args: list[str]) -> list[LibrarySource]:
    """The sources named. An argument that exists on disk, or holds a slash, is a path and means
    only that path; a bare name that is not on disk may be a source's label (from --list). A path
    inside a source cannot be removed alone."""
    chosen: list[LibrarySource] = []
    for arg in args:
        path = normalize(arg)
        source = next((s for s in library.sources if s.relative(path) == ""), None)
        is_path = "/" in arg or os.path.lexists(path)
        if source is None and not is_path:
            source = library.source(arg)
        if source is None:
            hit = library.enclosing(path)
            if hit is not None:
                raise ConfigError(
                    f"{path} is inside the source {hit[0].label} ({hit[0].path}); only whole "
                    "sources can be removed. Delete or move those files and run the ingest, or "
                    f"remove {hit[0].path}."
                )
            listed = ", ".join(f"{s.path} ({s.label})" for s in library.sources) or "none"
            labelled = library.source(arg)
            hint = (
                f" ({arg} here is the path {path}; to remove the source labelled {arg}, give its "
                f"path: {labelled.path})"
                if labelled is not None
                else ""
            )
            raise ConfigError(f"{arg} is not a source of the library{hint}. Its sources: {listed}.")
        if source not in chosen:
            chosen.append(source)
    return chosen


def describe_missing(source: LibrarySource) -> str:
    return (
        f"Source {source.label} ({source.path}) is missing: its {source.chunks} chunks are kept. "
        f"Plug in or restore it and run the ingest again; or remove it with "
        f"`python -m app.ingest --remove {source.path}`."
    )


def check_paths(paths: list[Path], library: Library | None) -> None:
    """Refuse before writing anything: a path that is neither on disk nor a source (a typo), or
    one whose name is not valid UTF-8 (it could not be stored or shown faithfully)."""
    for path in paths:
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(path).decode("utf-8", "replace")
            raise ConfigError(
                f"The path {shown} is not valid UTF-8 (\ufffd marks the bytes that are not); "
                "rename it, then add it."
            ) from None
    known = {Path(s.path) for s in library.sources} if library else set()
    missing = [p for p in paths if not os.path.lexists(p) and p not in known]
    if missing:
        raise ConfigError("No such file or folder: " + ", ".join(str(p) for p in missing))
