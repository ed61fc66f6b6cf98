"""The library-scale benchmark runs end to end on a small generated library (a smoke test of
`benchmarks/library_scale.py`, every step a real `python -m app.ingest` process), and what it
reports holds: an unchanged re-sync reads no file, the edited files are the ones re-read, and
`--files` lists every generated file. No timed assertions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import app.indexing.sync
from benchmarks.library_scale import main

pytestmark = pytest.mark.integration

FILES = 150
EDITED = 10


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("scale")
    environment, parser = dict(os.environ), app.indexing.sync.parse_in_workers
    found = main(
        [
            "--files", str(FILES),
            "--edit", str(EDITED),
            "--seeded-catalog",
            "--workdir", str(work / "work"),
            "--output", str(work / "out.json"),
        ]
    )  # fmt: skip
    # The seeded build leaves this process's settings and parser as they were (later tests
    # sync in process too).
    assert dict(os.environ) == environment
    assert app.indexing.sync.parse_in_workers is parser
    return found


def steps(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["step"].split(" ")[0]: row for row in results["steps"]}


def test_results_carry_the_machine_and_the_load(results: dict[str, Any]) -> None:
    assert results["machine"]["cpu"]
    assert len(results["load_average_start"]) == len(results["load_average_end"]) == 3
    assert [row["step"].split(" ")[0] for row in results["steps"]] == [
        "seeded", "unchanged", "edited", "list", "files", "watch", "remove",
    ]  # fmt: skip


def test_an_unchanged_resync_reads_no_file(results: dict[str, Any]) -> None:
    unchanged = steps(results)["unchanged"]
    built = steps(results)["seeded"]["files"]
    assert unchanged["files"]["new"] == unchanged["files"]["changed"] == 0
    assert unchanged["files"]["unchanged"] == built["new"]
    assert unchanged["stages_s"].get("parse", 0) == 0
    assert unchanged["chunks"] == {"added": 0, "kept": 0, "removed": 0}
    for row in results["steps"]:
        if "wall_s" in row and "exit" in row:
            assert row["peak_rss_mb"] > 0
            assert row["cpu_s"] > 0


def test_the_edited_files_are_the_ones_read_again(results: dict[str, Any]) -> None:
    edited = steps(results)["edited"]
    assert edited["edited"] == EDITED
    assert edited["files"]["changed"] == EDITED
    assert edited["files"]["new"] == 0
    assert edited["chunks"]["added"] > 0


def test_files_lists_every_generated_file(results: dict[str, Any]) -> None:
    shown = steps(results)["files"]
    generated = results["library"]
    assert shown["files_listed"] == generated["files"]
    assert shown["counts"]["skipped"] == generated["skipped"]
    assert shown["counts"]["indexed"] == generated["files"] - generated["skipped"]


def test_watch_answers_a_saved_file_and_remove_deletes_half(results: dict[str, Any]) -> None:
    watch = steps(results)["watch"]
    assert watch["startup_s"] > 0
    assert watch["saved_to_answerable_s"] > 0
    assert steps(results)["list"]["sources"] == 2
    assert steps(results)["remove"]["chunks_removed"] > 0


def test_the_table_names_every_step(results: dict[str, Any], tmp_path: Path) -> None:
    from benchmarks.library_scale import table

    rendered = table(results)
    for row in results["steps"]:
        assert f"| {row['step']} |" in rendered
