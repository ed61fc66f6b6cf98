"""`python -m app.chat`: ask questions about your documents in the terminal, with sources."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.text import Text

from app.config import load_settings
from app.console import err, out, run
from app.errors import ConfigError, ExitCode, LocalragError
from app.retrieval.filters import SourceFilter
from app.telemetry.tracing import setup_tracing
from chains.core.context import number_sources
from chains.core.events import AnswerReplaced, AnswerText, Retrieved, is_not_found
from chains.core.output_safety import SafeStream, allowed_hosts, terminal_safe

# The session and the chains are imported where they are used: every parser worker re-runs
# this module when a first chat ingests the samples (see app/ingest.py).
if TYPE_CHECKING:
    from app.session.conversation import Conversation

HISTORY_FILE = Path.home() / ".localrag_history"
HELP = """\
Type a question, or a command:
  /sources          the chunks behind the last answer, with their scores
  /show N           source N's passage with the text around it in its file
  /where FILTER...  only search some files: file=PATH (wildcards ok), folder=PATH, type=EXT;
                    /where alone clears the filter
  /chain NAME       switch chain (/chain alone lists them)
  /reset            forget the conversation
  /help             this text
  /exit             leave (or Ctrl-D); Ctrl-C stops an answer"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.chat",
        description="Chat with your documents. Without -q, starts an interactive session.",
        epilog="Exit status: 0 answered; 2 bad arguments or settings; 4 model server failed; "
        "5 store refused.",
    )
    parser.add_argument("-q", "--question", help="answer this one question and exit")
    parser.add_argument("--chain", help="which chain answers (default: CHAIN, rag)")
    parser.add_argument("--list-chains", action="store_true", help="list the chains and exit")
    parser.add_argument(
        "--mode", choices=["similarity", "mmr", "hybrid"], help="retrieval mode (RETRIEVAL_MODE)"
    )
    parser.add_argument("-k", type=int, help="chunks given to the model (RETRIEVAL_K)")
    parser.add_argument("--fetch-k", type=int, help="candidates before MMR or fusion (FETCH_K)")
    parser.add_argument(
        "--threshold", type=float, help="relevance below which nothing is found (SCORE_THRESHOLD)"
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FILTER",
        help="only search some files: file=PATH, folder=PATH or type=EXT (repeatable)",
    )
    return parser.parse_args(argv)


def ask(session: Conversation, question: str) -> None:
    """Stream the answer (sanitized, as Markdown on a terminal), then the numbered sources.
    Ctrl-C stops the answer; a failure raises one LocalragError and changes nothing."""
    context: list[Document] = []
    safe: SafeStream | None = None
    text = ""
    stopped = False
    live = Live(console=out, auto_refresh=False) if out.is_terminal else None
    try:
        if live:
            live.start()
        for event in session.answer(question):
            if isinstance(event, Retrieved):
                context = list(event.documents)
                safe = SafeStream(allowed_hosts(context))
            elif isinstance(event, AnswerText) and safe is not None:
                text += _show(safe.feed(event.text), text, live)
            elif isinstance(event, AnswerReplaced):
                safe = SafeStream(allowed_hosts(context))
                text = _replace(safe.feed(event.text) + safe.close(), event.reason, live)
                safe = None
        if safe is not None:
            text += _show(safe.close(), text, live)
    except KeyboardInterrupt:
        stopped = True
        if safe is not None:
            text += _show(safe.close(), text, live)
        _show(" [stopped]", text, live)
    finally:
        if live:
            live.stop()
    if not live:
        out.print()
    if context and not is_not_found(context):
        # A stopped answer stays in the conversation as far as it got, marked as stopped.
        session.remember(question, text + (" …" if stopped else ""))
    print_sources(context)


def _replace(text: str, reason: str, live: Live | None) -> str:
    """The answer so far withdrawn: on a terminal it is redrawn; in a pipe the replacement
    follows it, after a line that says why."""
    note = f"[{reason}]"
    if live:
        live.update(Markdown(f"*{note}*\n\n{text}"), refresh=True)
    else:
        out.print(f"\n{note}\n{text}", end="", markup=False, highlight=False, soft_wrap=True)
    return text


def _show(piece: str, before: str, live: Live | None) -> str:
    if piece:
        if live:
            live.update(Markdown(before + piece), refresh=True)
        else:
            out.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
    return piece


def print_sources(context: list[Document]) -> None:
    if not context:
        return
    title = "Nearest sources:" if is_not_found(context) else "Sources:"
    out.print(f"\n{title}", style="bold", markup=False)
    for src in number_sources(context):
        # File names are data too: a name can hold escape sequences.
        out.print(f"[{src.number}] {terminal_safe(src.label)}", markup=False, soft_wrap=True)


def print_chunks(session: Conversation) -> None:
    context = session.last_context
    if not context:
        out.print("No answer yet.")
        return
    out.print(describe_search(session), markup=False, soft_wrap=True)
    for src in number_sources(context):
        label = escape(terminal_safe(src.label))
        for chunk in src.chunks:
            score = chunk.metadata.get("score")
            out.print(
                f"[bold][{src.number}] {label}[/] score {score:.3f}"
                if isinstance(score, float)
                else f"[bold][{src.number}] {label}[/]"
            )
            # Chunk text is shown as stored, less anything that could command the terminal.
            preview = " ".join(terminal_safe(chunk.page_content).split())
            out.print(preview[:400] + ("…" if len(preview) > 400 else ""), markup=False)


def show_passage(session: Conversation, number: str) -> None:
    """`/show N`: source N's best chunk, highlighted between the text before and after it in
    its file, as the library holds it now."""
    from app.retrieval.passages import find_passage

    sources = number_sources(session.last_context)
    if not sources:
        out.print("No answer yet.")
        return
    if not number.isdigit() or not 1 <= int(number) <= len(sources):
        out.print(f"Use /show N with N from 1 to {len(sources)}.", markup=False)
        return
    src = sources[int(number) - 1]
    resources = session.resources
    resources.follow_library()
    passage = find_passage(resources.collection, str(src.chunks[0].id), context=1)
    label = terminal_safe(src.label)
    if passage is None:
        out.print(
            f"[{number}] {label}: this passage is gone (its file changed since the answer). "
            "Ask again for the current text.",
            markup=False,
            soft_wrap=True,
        )
        return
    shown = Text(f"[{number}] {label}\n", style="bold")
    # Document text is shown as stored, less anything that could command the terminal.
    if passage.before:
        shown.append("…" + terminal_safe(passage.before[-600:]), style="dim")
    shown.append(terminal_safe(passage.text), style="reverse")
    if passage.after:
        shown.append(terminal_safe(passage.after[:600]) + "…", style="dim")
    out.print(shown, soft_wrap=True)


def handle_command(session: Conversation, line: str) -> bool:
    """Run a /command; returns False when the session should end."""
    command, _, rest = line.partition(" ")
    rest = rest.strip()
    if command in ("/exit", "/quit"):
        return False
    if command == "/help":
        out.print(HELP, markup=False)
    elif command == "/reset":
        session.history.clear()
        out.print("Conversation forgotten.")
    elif command == "/sources":
        print_chunks(session)
    elif command == "/show":
        show_passage(session, rest)
    elif command == "/chain":
        if not rest:
            list_chains(current=session.spec.name)
        else:
            session.use_chain(rest)
            out.print(f"Now answering with the {rest} chain.", markup=False)
    elif command == "/where":
        session.use_filters([SourceFilter.parse(part) for part in rest.split()])
        out.print(
            "Searching " + (" and ".join(map(str, session.filters)) or "all files") + ".",
            markup=False,
        )
    else:
        out.print(f"Unknown command {command}. /help lists them.", markup=False)
    return True


def describe_search(session: Conversation) -> str:
    """How the chunks were found, so the flags and /where can be checked: `hybrid search, k 3,
    threshold 0.30, in folder=ferry`."""
    r = session.retriever()
    where = " and ".join(map(str, session.filters)) or "all files"
    fetched = f" of {r.fetch_k}" if r.mode != "similarity" else ""
    return (
        f"{session.spec.name} chain, {r.mode} search, k {r.k}{fetched}, "
        f"threshold {r.score_threshold:.2f}, in {where}:"
    )


def list_chains(current: str | None = None) -> None:
    from chains.core.registry import all_chains

    for spec in all_chains().values():
        mark = "*" if spec.name == current else " "
        out.print(f"{mark} {spec.name:<10} {spec.description}", markup=False, soft_wrap=True)


def repl(session: Conversation) -> None:
    _enable_line_history()
    # Ctrl-C stops an answer (a KeyboardInterrupt). A chat started by a script in the background
    # inherits SIGINT ignored, and Python leaves it ignored; a person at the terminal still
    # expects Ctrl-C to work (as `--watch` and the server handle it themselves).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    err.print("[dim]Ask about your documents. /help for commands, /exit or Ctrl-D to leave.[/]")
    while True:
        try:
            line = out.input("[bold green]you>[/] ").strip()
        except EOFError:
            out.print()
            return
        except KeyboardInterrupt:
            out.print()
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not handle_command(session, line):
                    return
                continue
            ask(session, line)
        except LocalragError as exc:  # one line; the session goes on with the next question
            err.print(f"[red]{escape(terminal_safe(str(exc)))}[/]", soft_wrap=True)
        except ValueError as exc:  # a mistyped command argument, e.g. /where colour=blue
            err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        except Exception as exc:
            # Not one of the failures a person can meet (those are LocalragErrors): a bug.
            # Still one line, so the conversation is not lost.
            err.print(
                f"[red]Unexpected error ({type(exc).__name__}): "
                f"{escape(terminal_safe(str(exc)))}[/]",
                soft_wrap=True,
            )


def _enable_line_history() -> None:
    """Arrow keys recall earlier lines, across sessions, where readline exists."""
    try:
        import atexit
        import readline
    except ImportError:
        return
    with contextlib.suppress(OSError):  # no history yet
        readline.read_history_file(HISTORY_FILE)
    readline.set_history_length(1000)
    atexit.register(save_line_history, readline.write_history_file)


def save_line_history(write: Callable[[Path], object], path: Path | None = None) -> None:
    """The history holds the questions asked: private to the user (0600), like a shell's."""
    path = path or HISTORY_FILE
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # created private
        path.chmod(0o600)  # an older, readable one made private
        write(path)


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_tracing("chat")  # only when OTEL_* variables ask for traces
    if args.list_chains:
        list_chains()
        return int(ExitCode.OK)
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "retrieval_k": args.k,
            "retrieval_mode": args.mode,
            "fetch_k": args.fetch_k,
            "score_threshold": args.threshold,
            "chain": args.chain,
        }.items()
        if value is not None
    }
    settings = load_settings(**overrides)
    try:
        filters = [SourceFilter.parse(text) for text in args.where]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from app.session.conversation import start_conversation
    from app.session.resources import open_resources

    resources = open_resources(settings)
    session = start_conversation(resources, settings.chain, filters)
    try:
        if args.question:
            ask(session, args.question)
        else:
            repl(session)
    finally:
        session.close()
        resources.close()
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
