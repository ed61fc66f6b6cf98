"""`python -m app.chat`: ask questions about your documents in the terminal, with sources."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape

from app.cli import chat_model_for, embeddings_for, err, out, run, status
from app.config import Settings, load_settings
from app.errors import ConfigError, ExitCode
from app.keyword_index import KeywordIndex, open_keyword_index
from app.providers import explain_ollama_failure
from app.retrieval import DocumentRetriever, SourceFilter, allowed_sources
from app.sync import sync_collection
from app.vectorstore import connect, open_collection
from chains.answering import is_not_found
from chains.context import number_sources
from chains.output_safety import SafeStream, allowed_hosts
from chains.registry import ChainSpec, all_chains, get_chain

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from langchain_core.language_models import BaseChatModel

    from app.chat_model import ChatModelInfo
    from app.embeddings import ModelEmbeddings

HISTORY_FILE = Path.home() / ".localrag_history"
HELP = """\
Type a question, or a command:
  /sources          the chunks behind the last answer, with their scores
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


@dataclass
class Session:
    """Everything a conversation needs; the chain is rebuilt when the chain or filter changes."""

    settings: Settings
    embeddings: ModelEmbeddings
    collection: Collection
    keyword_index: KeywordIndex
    model: BaseChatModel
    model_info: ChatModelInfo
    spec: ChainSpec
    filters: list[SourceFilter] = field(default_factory=list)
    history: list[BaseMessage] = field(default_factory=list)
    last_context: list[Document] = field(default_factory=list)
    chain: Runnable | None = None

    def retriever(self) -> DocumentRetriever:
        s, wanted = self.settings, self.spec.retrieval
        k = s.retrieval_k or wanted.get("k") or self.model_info.default_k
        sources = allowed_sources(self.filters, self.keyword_index.sources())
        return DocumentRetriever(
            collection=self.collection,
            embeddings=self.embeddings,
            keyword_index=self.keyword_index,
            mode=s.retrieval_mode or wanted.get("mode", "similarity"),
            k=k,
            fetch_k=s.fetch_k or wanted.get("fetch_k") or 5 * k,
            score_threshold=(
                s.score_threshold
                if s.score_threshold is not None
                else self.embeddings.info.default_threshold
            ),
            allowed_sources=sources,
        )

    def rebuild(self) -> None:
        self.chain = self.spec.build(self.settings, self.retriever(), self.model)


def open_session(settings: Settings, chain_name: str, filters: list[SourceFilter]) -> Session:
    """Wire embeddings, store, keyword index, chat model and chain; ingest samples if empty."""
    spec = _chain(chain_name)
    embeddings = embeddings_for(settings)
    # The chat model is checked before a first ingest, so a missing one fails in seconds.
    model, model_info = chat_model_for(settings)
    client = connect(settings)
    collection = open_collection(client, settings, embeddings.info)
    if collection is None or collection.count() == 0:
        status(f"The collection is empty: ingesting {settings.docs_dir} first.")
        report = sync_collection(settings, [settings.docs_dir], embeddings)
        status(
            f"Ingested {len(report.new) + len(report.changed)} files "
            f"({report.chunks_added} chunks); {len(report.failed)} skipped."
        )
        collection = open_collection(client, settings, embeddings.info)
        if collection is None:
            raise ConfigError(f"Nothing could be ingested from {settings.docs_dir}.")
    keyword_index = open_keyword_index(settings.chroma_dir, collection.name)
    keyword_index.follow(collection)
    session = Session(
        settings, embeddings, collection, keyword_index, model, model_info, spec, filters
    )
    session.rebuild()
    return session


def _chain(name: str) -> ChainSpec:
    try:
        return get_chain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def ask(session: Session, question: str) -> None:
    """Stream the answer (sanitized, as Markdown on a terminal), then the numbered sources."""
    assert session.chain is not None
    context: list[Document] = []
    safe: SafeStream | None = None
    text = ""
    live = Live(console=out, auto_refresh=False) if out.is_terminal else None
    try:
        if live:
            live.start()
        for chunk in session.chain.stream({"question": question, "history": session.history}):
            if "context" in chunk:
                context = chunk["context"]
                safe = SafeStream(allowed_hosts(context))
            if chunk.get("answer") and safe is not None:
                text += _show(safe.feed(chunk["answer"]), text, live)
        if safe is not None:
            text += _show(safe.close(), text, live)
    except KeyboardInterrupt:
        text += _show(" [stopped]", text, live)
    except Exception as exc:
        explained = explain_ollama_failure(exc, session.settings, "chat")
        if explained is None:
            raise
        raise explained from exc
    finally:
        if live:
            live.stop()
    if not live:
        out.print()
    session.last_context = context
    if not is_not_found(context):
        session.history += [HumanMessage(question), AIMessage(text)]
    print_sources(context)


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
        out.print(f"[{src.number}] {src.label}", markup=False, soft_wrap=True)


def print_chunks(context: list[Document]) -> None:
    if not context:
        out.print("No answer yet.")
        return
    for src in number_sources(context):
        for chunk in src.chunks:
            score = chunk.metadata.get("score")
            out.print(
                f"[bold][{src.number}] {escape(src.label)}[/] score {score:.3f}"
                if isinstance(score, float)
                else f"[bold][{src.number}] {escape(src.label)}[/]"
            )
            preview = " ".join(chunk.page_content.split())
            out.print(preview[:400] + ("…" if len(preview) > 400 else ""), markup=False)


def handle_command(session: Session, line: str) -> bool:
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
        print_chunks(session.last_context)
    elif command == "/chain":
        if not rest:
            list_chains(current=session.spec.name)
        else:
            session.spec = _chain(rest)
            session.rebuild()
            out.print(f"Now answering with the {rest} chain.", markup=False)
    elif command == "/where":
        session.filters = [SourceFilter.parse(part) for part in rest.split()]
        session.rebuild()
        out.print(
            "Searching " + (" and ".join(map(str, session.filters)) or "all files") + ".",
            markup=False,
        )
    else:
        out.print(f"Unknown command {command}. /help lists them.", markup=False)
    return True


def list_chains(current: str | None = None) -> None:
    for spec in all_chains().values():
        mark = "*" if spec.name == current else " "
        out.print(f"{mark} {spec.name:<10} {spec.description}", markup=False, soft_wrap=True)


def repl(session: Session) -> None:
    _enable_line_history()
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
        except (ValueError, ConfigError) as exc:
            err.print(f"[red]{escape(str(exc))}[/]")


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
    atexit.register(readline.write_history_file, HISTORY_FILE)


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
    session = open_session(settings, settings.chain, filters)
    if args.question:
        ask(session, args.question)
    else:
        repl(session)
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
