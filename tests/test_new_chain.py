"""`python -m app.new_chain NAME` writes a chain and a test that passes as written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.new_chain import scaffold
from app.paths import PROJECT_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for name in ("app", "chains", "loaders", "tests"):
        shutil.copytree(
            PROJECT_ROOT / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("__pycache__", "test_*.py"),
        )
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_generated_chain_is_registered_and_its_test_passes(project_copy: Path) -> None:
    chain_path, test_path = scaffold("policy_qa", root=project_copy)
    assert chain_path == project_copy / "chains" / "policy_qa.py"
    # The wording and the fakes come from where the app and the suite keep them.
    chain_text, test_text = chain_path.read_text(), test_path.read_text()
    assert "from chains.core.wording import DONT_KNOW\n" in chain_text
    assert '"{DONT_KNOW}"' in chain_text
    assert "from chains.core.wording import DONT_KNOW, NOT_FOUND\n" in test_text
    assert "from tests.fakes import FixedRetriever, RecordingChatModel\n" in test_text
    assert "class " not in test_text  # no fake of its own
    linted = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(chain_path), str(test_path)],
        cwd=project_copy,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_path)],
        cwd=project_copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "app.chat", "--list-chains"],
        cwd=project_copy,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "policy_qa" in listed.stdout


def test_refuses_bad_names_and_existing_files(project_copy: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be a chain name"):
        scaffold("Policy-QA", root=project_copy)
    with pytest.raises(ConfigError, match="already exists"):
        scaffold("rag", root=project_copy)
