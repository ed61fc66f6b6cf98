"""Shared fixtures: no network beyond loopback, and every test in its own store and settings."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.paths import PROJECT_ROOT, SAMPLE_DOCS_DIR
from tests.ollama_server import OllamaTestServer, closed_port

SETTING_KEYS = [name.upper() for name in Settings.model_fields]
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(AssertionError):
    pass


def _check_address(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets stay on this machine
    host = address[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise NetworkBlocked(f"test tried to connect to {host!r}: only loopback is allowed")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """Fail any test that opens a connection to a non-loopback address."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def shared_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared models (the ONNX query encoder) are derived from the packaged ones only, so
    the tests share one cache rather than exporting again for every private store."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_model_cache: Path
) -> None:
    """No .env, no inherited setting, a private store, and an Ollama URL where nothing listens
    (so `auto` resolves to the embedded models unless a test starts a test server)."""
    for key in SETTING_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    monkeypatch.setenv("LOCALRAG_ENV_FILE", os.devnull)
    monkeypatch.setenv("CHROMA_DIR", str(tmp_path / "chroma"))
    monkeypatch.setenv("MODEL_CACHE_DIR", str(shared_model_cache))
    monkeypatch.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OLLAMA_PROBE_TIMEOUT", "5")  # a loaded CI machine answers slowly
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from app.models.ollama import probe_ollama
    from app.models.openai import list_models

    probe_ollama.cache_clear()
    list_models.cache_clear()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings(**overrides)

    return make


@pytest.fixture
def sample_docs(tmp_path: Path) -> Path:
    """A private copy of data/docs that a test may edit."""
    target = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS_DIR, target)
    return target


@pytest.fixture
def ollama_server() -> Iterator[OllamaTestServer]:
    with OllamaTestServer() as server:
        yield server


@pytest.fixture
def run_module(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m MODULE ARGS` as a user would, with the test's environment."""

    def run(module: str, *args: str, timeout: float = 600, **env: str) -> Any:
        environment = {**os.environ, **env}
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run
