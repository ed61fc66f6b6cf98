"""Every script in benchmarks/ still imports and parses its arguments: `python benchmarks/X.py
--help` as a person runs it, in a subprocess (a script that imports something the app no longer
has, even inside a function it calls first, fails here, not on the day its figures are needed).
mypy checks their types (pyproject's [tool.mypy] files)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration

SCRIPTS = sorted((PROJECT_ROOT / "benchmarks").glob("*.py"))


def run_help(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "LOCALRAG_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every script's --help, two at a time (each pays the interpreter's and its imports' start)."""
    with ThreadPoolExecutor(2) as pool:
        return dict(zip((s.name for s in SCRIPTS), pool.map(run_help, SCRIPTS), strict=True))


def test_there_are_benchmarks_to_check() -> None:
    assert len(SCRIPTS) >= 10
    assert all(not s.name.startswith("test_") for s in SCRIPTS)


@pytest.mark.parametrize("script", [s.name for s in SCRIPTS])
def test_each_benchmark_prints_its_usage_and_exits_0(
    helps: dict[str, subprocess.CompletedProcess[str]], script: str
) -> None:
    done = helps[script]
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script} "), done.stdout
    assert "Traceback" not in done.stderr, done.stderr
