"""`python -m app.serve`: the chains over HTTP (OpenAI-compatible and native SSE) and a web page."""

from __future__ import annotations

import argparse
import signal
import socket
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from app.config import Settings, load_settings
from app.console import run, status
from app.errors import ConfigError, ExitCode
from app.telemetry.tracing import setup_tracing

if TYPE_CHECKING:
    from app.api.connection import ConnectionLimits
    from app.indexing.reports import IngestReport
    from app.session.resources import Resources


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.serve",
        description="Serve your documents' chat over HTTP: a web page at /, an OpenAI-compatible "
        "API under /v1, and a native streaming API under /api.",
        epilog="Exit status: 0 stopped; 2 bad arguments or settings (e.g. a port in use, or a "
        "non-loopback address without API_TOKEN); 4 model server failed; 5 store refused.",
    )
    parser.add_argument("--host", help="address to bind (SERVE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port; 0 picks a free one (SERVE_PORT, 8000)")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="also keep the library in sync with its folders, as `python -m app.ingest --watch` "
        "does: a sync at start, then every change; answers follow at once",
    )
    limits = parser.add_argument_group(
        "connection limits",
        "A client that is slow to send its request, or takes nothing of the answer, is "
        "dropped after these many seconds (docs/serving.md).",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="a connection with no request under way (default 5)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="a request's headers, from its first byte (default 10)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a request's body, after its headers (default 30)",
    )
    limits.add_argument(
        "--stall-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a response the client reads nothing of (default 30)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=256,
        metavar="N",
        help="connections open at once; more are answered 503 (default 256)",
    )
    return parser.parse_args(argv)


def connection_limits(args: argparse.Namespace) -> ConnectionLimits:
    from app.api.connection import ConnectionLimits

    for name in ("idle_timeout", "header_timeout", "body_timeout", "stall_timeout"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be more than 0 seconds.")
    if args.max_connections < 1:
        raise ConfigError("--max-connections must be at least 1.")
    return ConnectionLimits(
        idle=args.idle_timeout,
        headers=args.header_timeout,
        body=args.body_timeout,
        stall=args.stall_timeout,
        max_connections=args.max_connections,
    )


def bind(settings: Settings) -> socket.socket:
    """The listening socket, opened before any model loads, so a taken port fails at once."""
    host, port = settings.serve_host, settings.serve_port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        reason = "the port is in use; pick another with --port" if "in use" in str(exc) else exc
        raise ConfigError(f"Cannot listen on {host}:{port}: {reason}.") from None
    return sock


def check_exposure(settings: Settings, address: str) -> bool:
    """True when bound to loopback; any other address needs API_TOKEN."""
    from app.api.security import is_loopback

    if is_loopback(address):
        return True
    if settings.api_token is None:
        raise ConfigError(
            f"Binding to {settings.serve_host} lets other machines read your documents: set "
            "API_TOKEN (python -c 'import secrets; print(secrets.token_urlsafe(32))') so every "
            "request must carry it, or bind to 127.0.0.1."
        )
    return False


@run
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_tracing("serve")  # only when OTEL_* variables ask for traces
    overrides: dict[str, Any] = {
        key: value
        for key, value in {"serve_host": args.host, "serve_port": args.port}.items()
        if value is not None
    }
    settings = load_settings(**overrides)
    limits = connection_limits(args)
    sock = bind(settings)
    try:
        host, port = sock.getsockname()[:2]
        loopback = check_exposure(settings, host)
        # Imported here: `--help`, a taken port or a refused address answer at once.
        import uvicorn

        from app.api.app import create_app
        from app.api.service import AnswerService
        from app.session.resources import open_resources

        resources = open_resources(settings)
        service = AnswerService(resources, settings, settings.chain)
        app = create_app(service, settings, loopback=loopback)
        config = uvicorn.Config(
            app, log_level="info", timeout_graceful_shutdown=5, **limits.uvicorn_options()
        )
        server = uvicorn.Server(config)
        stop_watching = threading.Event()
        watcher = start_watching(settings, resources, stop_watching) if args.watch else None
        shown = f"[{host}]" if ":" in host else host
        status(f"Serving on http://{shown}:{port}/ (the API under /v1 and /api; Ctrl-C stops)")
        # uvicorn handles Ctrl-C and SIGTERM, then raises the signal again once it has stopped:
        # both must then end here, as a KeyboardInterrupt, so the watch stops cleanly too.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # the Ctrl-C or SIGTERM uvicorn handled: stopping is normal
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            if watcher is not None:
                stop_watching.set()
                if watcher.is_alive():
                    status("Stopping the watch after the sync under way (Ctrl-C again: at once).")
                watcher.join()
        status("Stopped.")
    finally:
        sock.close()
    return int(ExitCode.OK)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def start_watching(
    settings: Settings, resources: Resources, stop: threading.Event
) -> threading.Thread:
    """`--watch`: a sync of every source (what changed while no one watched), then one sync per
    batch of changes, in a thread beside the server, with the server's embedding model. The
    server's next answer follows each write as it follows any other process's."""
    from app.indexing.sync import sync_collection
    from app.indexing.watch import watch_library
    from app.models import registry

    advice = registry.advice(settings)

    def work() -> None:
        try:
            report = sync_collection(settings, [], resources.embeddings, advice=advice)
            sync_line(report)
            if not stop.is_set():
                watch_library(settings, resources.embeddings, None, sync_line, status, stop, advice)
        except Exception as exc:  # the server answers on; the log says why the watch ended
            status(f"The watch stopped ({type(exc).__name__}: {exc}); the server goes on.")

    thread = threading.Thread(target=work, name="watch", daemon=True)
    thread.start()
    return thread


def sync_line(report: IngestReport) -> None:
    files = report.as_dict()["files"]
    changed = ", ".join(f"{n} {kind}" for kind, n in files.items() if n and kind != "unchanged")
    labels = ", ".join(dict.fromkeys(s.label for s in report.sources)) or "library"
    status(
        f"{time.strftime('%H:%M:%S')} synced {labels}: {changed or 'no file changed'}; "
        f"{report.chunks_added} chunks embedded, {report.chunks_removed} removed"
    )
    for name, reason in sorted(report.failed.items()):
        status(f"skipped {name}: {reason}")
    for message in report.missing:
        status(f"kept {message}")


if __name__ == "__main__":
    raise SystemExit(main())
