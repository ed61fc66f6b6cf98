"""`python -m app.serve`: the chains over HTTP (OpenAI-compatible and native SSE) and a web page."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from app.config import Settings, load_settings
from app.console import run, status
from app.errors import ConfigError, ExitCode


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
    return parser.parse_args(argv)


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
    overrides: dict[str, Any] = {
        key: value
        for key, value in {"serve_host": args.host, "serve_port": args.port}.items()
        if value is not None
    }
    settings = load_settings(**overrides)
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
        shown = f"[{host}]" if ":" in host else host
        status(f"Serving on http://{shown}:{port}/ (the API under /v1 and /api; Ctrl-C stops)")
        server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: stopping is normal
            status("Stopped.")
    finally:
        sock.close()
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
