"""The watcher's own decisions, one batch at a time (the real watcher, in a process of its
own, is in tests/test_library.py): what a batch syncs, what it looks at again, and when the
watcher must start again."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_settings
from app.indexing.reports import IngestReport
from app.indexing.watch import SourceLooks, _Watch
from app.store.library import LibrarySource

pytestmark = pytest.mark.unit


class Syncs:
    """Stands in for the sync: records each scope and returns the report given for it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, list[str]]] = []
        self.retry: set[str] = set()

    def __call__(self, scopes: dict[str, list[str]]) -> IngestReport:
        self.scopes.append({label: sorted(paths) for label, paths in scopes.items()})
        return IngestReport(collection="c", store="s", embedding_model="m", retry=set(self.retry))


def watch_of(folder: Path, syncs: Syncs, lines: list[str]) -> _Watch:
    source = LibrarySource("notes", str(folder), "folder", "now")
    return _Watch(
        load_settings(), SourceLooks([source]), syncs, print, lines.append, lambda: [source]
    )


def test_a_file_whose_parser_was_stopped_is_parsed_again_once_by_the_next_batch(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    syncs, lines = Syncs(), []
    watch = watch_of(folder, syncs, lines)
    watch.pending = {"notes": [""]}  # the second look
    syncs.retry = {"notes/a.txt"}
    assert watch._batch(set()) is False
    assert syncs.scopes == [{"notes": [""]}]
    assert any(line.startswith("Watching 1 sources") for line in lines)
    watch._batch(set())  # the stopped file again, though nothing changed
    assert syncs.scopes[-1] == {"notes": ["a.txt"]}
    watch._batch(set())  # stopped a second time: it waits for a change or the next sync
    assert len(syncs.scopes) == 2


def test_an_event_on_a_folder_source_itself_starts_the_watcher_again(tmp_path: Path) -> None:
    """`rm -rf notes && mkdir notes`: the new folder may get the old inode number back, so its
    look is unchanged, but the watch on the old folder has ended."""
    folder = tmp_path / "notes"
    folder.mkdir()
    syncs, lines = Syncs(), []
    watch = watch_of(folder, syncs, lines)
    assert watch._batch({(3, str(folder / "a.txt"))}) is False
    assert syncs.scopes[-1] == {"notes": ["a.txt"]}
    assert watch._batch({(3, str(folder))}) is True
    assert syncs.scopes[-1] == {"notes": [""]}
