"""What the entry points share: the consoles, the error handler, progress bars and status
lines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from app.errors import LocalragError
from chains.core.output_safety import terminal_safe

# Answers and reports go to stdout; status lines and errors to stderr, so `-q` and `--json`
# output can be piped.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
LOG_EVERY_SECONDS = 30.0


def run(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
    """Wrap an entry point: a LocalragError becomes its message and exit status, no traceback."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except LocalragError as exc:
            err.print(f"[bold red]error:[/] {escape(terminal_safe(str(exc)))}", soft_wrap=True)
            return int(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            return 130

    return wrapped


def status(line: str) -> None:
    # Status lines name files and folders, which may hold escape sequences.
    err.print(f"[dim]{escape(terminal_safe(line))}[/]", soft_wrap=True)


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="progress.data.speed")


class _SyncDisplay(Progress):
    """The bars, then the line saying what is under way (stage, ETA, a file parsed for long)."""

    line = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.line:
            yield Text(self.line, style="dim", overflow="ellipsis", no_wrap=True)


class RichProgress:
    """Files parsed and chunks embedded, with rate and ETA, and a line saying what is under way;
    silent when not on a terminal, except for a file that fails or parses for long."""

    def __init__(self) -> None:
        self.display = _SyncDisplay(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
            transient=False,
        )
        self.parse: TaskID = self.display.add_task("parse", total=0, visible=False)
        self.embed: TaskID = self.display.add_task("embed", total=0, visible=False)
        self.quiet_until = time.monotonic() + 5.0  # a parse this short is not worth a line

    def stage(self, name: str) -> None: ...

    def files_to_parse(self, count: int) -> None:
        self.display.update(self.parse, total=count, visible=count > 0)

    def file_parsed(self, file: str, pages: int, ocr_pages: int, reason: str) -> None:
        self.display.advance(self.parse)
        if reason and not self.display.disable:
            # At once, above the bars: the report at the end lists them all again.
            err.print(
                f"[yellow]failed[/] {escape(terminal_safe(file))}: {escape(reason)}",
                soft_wrap=True,
            )

    def chunks_to_embed(self, count: int) -> None:
        task = self.display.tasks[self.embed]
        self.display.update(self.embed, total=(task.total or 0) + count, visible=True)

    def chunks_embedded(self, count: int) -> None:
        self.display.advance(self.embed, count)

    def working(self, line: str) -> None:
        line = terminal_safe(line)
        if not self.display.disable:
            self.display.line = line
        elif " · parsing " in line and time.monotonic() >= self.quiet_until:
            # No terminal (a log, nohup): say so when a file parses for long, every half minute.
            self.quiet_until = time.monotonic() + LOG_EVERY_SECONDS
            status(line)
