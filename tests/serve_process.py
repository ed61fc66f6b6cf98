"""Run `python -m app.serve` as a user would, on 127.0.0.1 and a free port, for the tests.

    with ServeProcess(env) as server:
        httpx.get(server.url + "/api/health")

The server prints "Serving on http://HOST:PORT/" once its models are loaded; the URL is read
from there (`--port 0` lets the system pick the port, so parallel runs cannot collide).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from app.config import Settings
from app.paths import PROJECT_ROOT

SERVING = re.compile(r"Serving on (http://\S+?)/? ")
SETTING_KEYS = {name.upper() for name in Settings.model_fields}


def serve_env(chroma_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a server process: no inherited setting, no .env, a private store."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_KEYS}
    env.update(
        LOCALRAG_ENV_FILE=os.devnull,
        HF_HUB_OFFLINE="1",
        CHROMA_DIR=str(chroma_dir),
        OLLAMA_PROBE_TIMEOUT="5",
    )
    if "MODEL_CACHE_DIR" in os.environ:  # models prepared once for the whole test run
        env["MODEL_CACHE_DIR"] = os.environ["MODEL_CACHE_DIR"]
    env.update(settings)
    return env


def ollama_env(chroma_dir: Path, ollama_url: str, docs: Path, **settings: str) -> dict[str, str]:
    """`serve_env` with both models from an Ollama test server, DOCS_DIR and one parse worker."""
    return serve_env(
        chroma_dir,
        OLLAMA_BASE_URL=ollama_url,
        EMBEDDING_PROVIDER="ollama",
        CHAT_PROVIDER="ollama",
        DOCS_DIR=str(docs),
        INGEST_WORKERS="1",
        **settings,
    )


class ServeProcess:
    def __init__(self, env: Mapping[str, str], *args: str, start_timeout: float = 240) -> None:
        self.env = dict(env)
        self.args = args
        self.start_timeout = start_timeout
        self.url = ""
        self.log: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ServeProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--port", "0", *self.args],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        found = threading.Event()
        threading.Thread(target=self._read_log, args=(found,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not found.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("app.serve did not start:\n" + "".join(self.log))
        while True:  # the line comes before uvicorn listens: wait until it answers
            try:
                httpx.get(self.url + "/", timeout=2)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("app.serve did not answer:\n" + "".join(self.log)) from None
                time.sleep(0.1)

    def _read_log(self, found: threading.Event) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            match = SERVING.search(line)
            if match and not found.is_set():
                self.url = match.group(1)
                found.set()

    def stop(self) -> int | None:
        """Ctrl-C, as a person stops it; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
