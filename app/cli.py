"""What the entry points share: the consoles, the error handler, and wiring settings to models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from app.config import Settings
from app.errors import LocalragError
from app.providers import choose_provider

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from app.chat_model import ChatModelInfo
    from app.embeddings import ModelEmbeddings

# Answers and reports go to stdout; status lines and errors to stderr, so `-q` and `--json`
# output can be piped.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def run(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
    """Wrap an entry point: a LocalragError becomes its message and exit status, no traceback."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except LocalragError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            return int(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            return 130

    return wrapped


def embeddings_for(settings: Settings) -> ModelEmbeddings:
    from app.embeddings import build_embeddings

    choice = choose_provider(settings, "embedding")
    embeddings = build_embeddings(settings, choice)
    status(f"Embeddings: {embeddings.info.key} ({choice.reason})")
    return embeddings


def chat_model_for(settings: Settings) -> tuple[BaseChatModel, ChatModelInfo]:
    from app.chat_model import build_chat_model, chat_model_info

    choice = choose_provider(settings, "chat")
    info = chat_model_info(settings, choice)
    status(f"Chat model: {info.provider}/{info.name} ({choice.reason})")
    return build_chat_model(settings, choice), info


def status(line: str) -> None:
    err.print(f"[dim]{escape(line)}[/]", soft_wrap=True)
