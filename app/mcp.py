"""`python -m app.mcp`: the library as an MCP server over stdio, what desktop clients (Claude
Desktop, VS Code, Cursor...) launch. stdout is the protocol: everything else (status lines,
logs, a model's own output) goes to stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from app.config import load_settings
from app.console import run, status
from app.errors import ExitCode
from app.telemetry.tracing import setup_tracing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.mcp",
        description="Serve your library to MCP clients over stdio: tools search, ask, "
        "list_sources and get_passage, and the library's files as resources (docs/mcp.md). "
        "A client starts it; to try it by hand: "
        "npx @modelcontextprotocol/inspector python -m app.mcp",
        epilog="Exit status: 0 the client closed the connection; 2 bad settings; 4 model "
        "server failed; 5 store refused.",
    )
    parser.add_argument("--chain", help="the chain `ask` uses by default (CHAIN, default rag)")
    return parser.parse_args(argv)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While the models and the library open, anything written to stdout (a first run's
    ingest, a library's own prints) goes to stderr: the client reads stdout as protocol."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_tracing("mcp")  # only when OTEL_* variables ask for traces
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("localrag.mcp").setLevel(logging.INFO)
    with stdout_to_stderr():
        settings = load_settings(**({"chain": args.chain} if args.chain else {}))
        # Imported here: `--help` answers at once.
        from app.api.mcp import build_mcp_server
        from app.api.service import AnswerService
        from app.session.resources import open_resources

        resources = open_resources(settings)
        service = AnswerService(resources, settings, settings.chain)
        server = build_mcp_server(service, own_loop=True)
    status("MCP server ready on stdio (tools: search, ask, list_sources, get_passage).")
    server.run("stdio")  # the SDK points fd 1 at stderr while it owns the protocol stream
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
