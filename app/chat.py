"""`python -m app.chat`: ask questions about your documents in the terminal, with sources."""

from __future__ import annotations

import argparse
from typing import Any

from langchain_core.documents import Document
from langchain_core.runnables import Runnable

from app.cli import chat_model_for, embeddings_for, err, out, run, status
from app.config import Settings, load_settings
from app.errors import ExitCode
from app.providers import explain_ollama_failure
from app.sync import sync_collection
from app.vectorstore import as_langchain_store, connect, open_collection
from chains.context import number_sources
from chains.registry import get_chain


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.chat",
        description="Chat with your documents. Without -q, starts an interactive session.",
        epilog="Exit status: 0 answered; 2 bad arguments or settings; 4 model server failed; "
        "5 store refused.",
    )
    parser.add_argument("-q", "--question", help="answer this one question and exit")
    parser.add_argument("--chain", default="rag", help="which chain answers (default: rag)")
    parser.add_argument("-k", type=int, help="chunks to retrieve (default: RETRIEVAL_K)")
    return parser.parse_args(argv)


def build_session(settings: Settings, chain_name: str) -> Runnable:
    """Wire embeddings, store, retriever, chat model and chain; ingest the samples if empty."""
    spec = get_chain(chain_name)
    embeddings = embeddings_for(settings)
    client = connect(settings)
    collection = open_collection(client, settings, embeddings.info)
    if collection is None or collection.count() == 0:
        status(f"The collection is empty: ingesting {settings.docs_dir} first.")
        report = sync_collection(settings, [settings.docs_dir], embeddings)
        status(
            f"Ingested {len(report.new) + len(report.changed)} files "
            f"({report.chunks_added} chunks); {len(report.failed)} skipped."
        )
    model, model_info = chat_model_for(settings)
    store = as_langchain_store(client, settings, embeddings)
    retriever = store.as_retriever(
        search_kwargs={"k": settings.retrieval_k or model_info.default_k}
    )
    return spec.build(settings, retriever, model)


def answer(chain: Runnable, settings: Settings, question: str) -> list[Document]:
    """Stream the answer to stdout, then the numbered sources; returns the documents used."""
    context: list[Document] = []
    try:
        for chunk in chain.stream({"question": question}):
            context = chunk.get("context", context)
            token = chunk.get("answer")
            if token:
                out.print(token, end="", markup=False, highlight=False, soft_wrap=True)
    except Exception as exc:
        explained = explain_ollama_failure(exc, settings, "chat")
        if explained is None:
            raise
        out.print()
        raise explained from exc
    out.print()
    print_sources(context)
    return context


def print_sources(context: list[Document]) -> None:
    if not context:
        return
    out.print("\nSources:", style="bold")
    for src in number_sources(context):
        out.print(f"[{src.number}] {src.label}", markup=False, soft_wrap=True)


def repl(chain: Runnable, settings: Settings) -> None:
    err.print("[dim]Ask about your documents. /exit or Ctrl-D to leave.[/]")
    while True:
        try:
            question = out.input("[bold green]you>[/] ").strip()
        except EOFError:
            out.print()
            return
        if not question:
            continue
        if question in {"/exit", "/quit"}:
            return
        out.print("[bold blue]localrag>[/] ", end="")
        answer(chain, settings, question)


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.k is not None:
        overrides["retrieval_k"] = args.k
    settings = load_settings(**overrides)
    chain = build_session(settings, args.chain)
    if args.question:
        answer(chain, settings, args.question)
    else:
        repl(chain, settings)
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
