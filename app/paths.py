"""The one place that knows where the project's files live."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
SAMPLE_DOCS_DIR = DATA_DIR / "docs"
SAMPLE_QUESTIONS = DATA_DIR / "eval" / "questions.jsonl"
DEFAULT_CHROMA_DIR = DATA_DIR / "chroma"
# LOCALRAG_ENV_FILE points elsewhere (tests use /dev/null so a developer's .env cannot leak in).
ENV_FILE = Path(os.environ.get("LOCALRAG_ENV_FILE", PROJECT_ROOT / ".env"))


def resolve(path: Path) -> Path:
    """Relative paths in settings mean relative to the project root, wherever you run from."""
    path = path.expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path)
