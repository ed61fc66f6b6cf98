"""The one place that knows where the project's files live."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
SAMPLE_DOCS_DIR = DATA_DIR / "docs"
SAMPLE_QUESTIONS = DATA_DIR / "eval" / "questions.jsonl"
# The Chinese sample set (data/make_sample_docs_zh.py): documents, questions, the same in BEIR form.
SAMPLE_DOCS_ZH_DIR = DATA_DIR / "docs-zh"
SAMPLE_QUESTIONS_ZH = DATA_DIR / "eval" / "questions-zh.jsonl"
SAMPLE_BEIR_ZH = DATA_DIR / "eval" / "lanxi-zh"
DEFAULT_CHROMA_DIR = DATA_DIR / "chroma"
# LOCALRAG_ENV_FILE points elsewhere (tests use /dev/null so a developer's .env cannot leak in).
ENV_FILE = Path(os.environ.get("LOCALRAG_ENV_FILE", PROJECT_ROOT / ".env"))


def resolve(path: Path) -> Path:
    """Relative paths in settings mean relative to the project root, wherever you run from."""
    path = path.expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path)


def private_dir(path: Path) -> Path:
    """A folder only its owner can read (0700), created if needed: the store holds the text of
    every document ingested."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def tighten(path: Path) -> list[Path]:
    """Make `path` 0700 and everything in it owner-only (folders 0700, files 0600); returns
    what was wider. A store made by an older version, or under a wide umask, was readable by
    every local user."""
    widened = []
    for here, _folders, files in os.walk(path):
        for name, mode in [(here, 0o700)] + [(os.path.join(here, f), 0o600) for f in files]:
            try:
                current = os.stat(name).st_mode & 0o777
                if current & 0o077:
                    os.chmod(name, current & 0o700 | (mode & 0o700))
                    widened.append(Path(name))
            except OSError:
                continue
    return widened
