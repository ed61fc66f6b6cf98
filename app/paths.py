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
