"""The README and docs/ stay true: `.env.example` is what the settings say, every relative link
and anchor resolves, the README stays short, and its map names the tree as it is."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from app.config import env_example
from app.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

README = PROJECT_ROOT / "README.md"
PAGES = [README, *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
REGENERATE = (
    "python -c 'from app.config import env_example; "
    'open(".env.example", "w").write(env_example())\''
)
MAX_README_LINES = 250
MAPPED_ROOTS = ("app", "chains", "loaders")

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links can be."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    kept = "".join(
        c
        for c in text
        if c in " -_" or unicodedata.category(c)[0] in "LN"  # letters and digits of any script
    )
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text(encoding="utf-8")))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)  # http:, mailto:, ...
    ]


def test_env_example_is_generated_from_the_settings() -> None:
    written = (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8")
    assert written == env_example(), (
        f".env.example differs from the settings in app/config.py; regenerate it:\n  {REGENERATE}"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{page.name}: broken links:\n  " + "\n  ".join(broken)


def test_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines; at most {MAX_README_LINES}: move the longer topic to docs/"
    )


def readme_map() -> tuple[list[str], list[str]]:
    """The paths the README's map names: those in its tree (by indentation, two spaces a
    level) and those written out in the diagram and the text around it."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The map", 1)[1].split("\n## ", 1)[0]
    tree: list[str] = []
    spelled: list[str] = []
    for block in re.findall(r"^```text\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
        if not block.startswith(MAPPED_ROOTS):
            spelled += re.findall(r"\b(?:app|chains|loaders)/[\w./]*", block)
            continue
        parents: list[str] = []
        for line in block.splitlines():
            entry = re.match(r"( *)(\S+)", line)
            if entry is None or not entry.group(2).endswith(("/", ".py")):
                continue
            depth = len(entry.group(1)) // 2
            parents = parents[:depth]
            tree.append("".join(parents) + entry.group(2))
            if entry.group(2).endswith("/"):
                parents.append(entry.group(2))
    spelled += re.findall(r"`((?:app|chains|loaders)/[\w./]*)`", prose(section))
    return tree, spelled


def test_every_path_in_the_readme_map_exists() -> None:
    tree, spelled = readme_map()
    assert tree, "README.md: no tree of app/, chains/, loaders/ under '## The map'"
    missing = [path for path in [*tree, *spelled] if not (PROJECT_ROOT / path).exists()]
    assert not missing, "README.md's map names paths that do not exist: " + ", ".join(missing)


def test_the_readme_map_shows_every_package_and_entry_point() -> None:
    """Every package of app/, chains/ and loaders/, and every module at the top of app/ (the
    entry points and what every layer shares), has its line in the map."""
    tree, _ = readme_map()
    named = set(tree)
    expected = [
        f"{folder.relative_to(PROJECT_ROOT)}/"
        for root in MAPPED_ROOTS
        for folder in sorted((PROJECT_ROOT / root).rglob("*"))
        if (folder / "__init__.py").exists() and "__pycache__" not in folder.parts
    ] + [
        f"app/{module.name}"
        for module in sorted((PROJECT_ROOT / "app").glob("*.py"))
        if module.name != "__init__.py"
    ]
    unlisted = [path for path in expected if path not in named]
    assert not unlisted, "Not in README.md's map (add a line to the tree): " + ", ".join(unlisted)


def test_every_test_module_says_whether_it_is_unit_or_integration() -> None:
    """`pytest -m unit` is the quick loop the README offers: a module without a marker would
    silently drop out of it and out of `-m integration`."""
    unmarked = [
        path.name
        for path in sorted((PROJECT_ROOT / "tests").glob("test_*.py"))
        if not re.search(
            r"^pytestmark = .*pytest\.mark\.(unit|integration)", path.read_text(), re.M
        )
    ]
    assert unmarked == []
