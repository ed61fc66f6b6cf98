"""An Ollama-compatible HTTP server for tests: standard library only, in-process, loopback only.

It stands in for a real Ollama so the app's Ollama provider can be driven over real HTTP with no
network and no models. `ollama.Client`, `langchain_ollama.OllamaEmbeddings` and
`langchain_ollama.ChatOllama` work against it unchanged::

    with OllamaTestServer(reply="Paris is the capital.") as server:
        chat = ChatOllama(model="llama3.2", base_url=server.base_url)
        assert "".join(c.text for c in chat.stream("Capital of France?")) == server.reply
        assert server.requests_to("/api/chat")[0].json["stream"] is True

Endpoints: ``GET /``, ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``,
``POST /api/embed`` and ``POST /api/chat``. Anything else gets 404 ``404 page not found`` in
plain text, as Ollama's router answers.

Behaviour worth knowing when writing tests:

* Model names are stored with a tag (``llama3.2:latest``); a request may name a model with or
  without ``:latest``. A model whose name contains ``embed``, or starts with ``bge-`` or
  ``all-minilm``, has the capability ``embedding``; any other has ``completion`` (family
  ``llama``). An embedding model's family is Ollama's: ``bert`` for ``bge-*``, ``mxbai-*``,
  ``snowflake-arctic-embed*`` and ``all-minilm``, ``qwen3`` for ``qwen3-embedding``,
  ``nomic-bert`` for the others. ``/api/show`` reports its ``<family>.context_length`` and
  ``<family>.embedding_length`` from the server's ``context_length`` and ``embedding_dim``.
  Asking a model without ``completion`` to chat is a 400 ``"NAME" does not support chat``.
* Error bodies are Ollama's words, from its server/routes.go: unknown model on ``/api/show``
  and ``/api/chat`` is 404 ``model 'NAME' not found``; on ``/api/embed`` it is 404
  ``model "NAME" not found, try pulling it first``.
* Token estimate (see `estimate_tokens`): ``ceil(len(text) / 4)`` characters-based, so a text of
  ``4 * n`` characters is exactly ``n`` tokens. Characters rather than words, because a text
  with few spaces (a table of contents with dot leaders, a base64 blob) is what overflows a
  real tokenizer, and a word count would call it short.
* ``/api/embed`` refuses, with 400 ``the input length exceeds the context length``, any request
  in which one input's estimate exceeds the limit: the model's context length
  (``context_length`` for embedding models, ``chat_context_length`` for the others), or
  ``min(that, options.num_ctx)`` when the client sends a ``num_ctx`` (null counts as absent:
  `OllamaEmbeddings` sends every option, unset ones as null). ``truncate`` is recorded but
  ignored: this models the Ollama versions that refuse rather than truncate.
* ``/api/chat`` does not enforce a context length; ``prompt_eval_count`` is the estimate over
  all message contents, ``eval_count`` the number of streamed pieces.
* ``delay`` seconds are slept, after the request is recorded, before ``/api/embed`` and
  ``/api/chat`` answer. `stop` interrupts the sleep and drops such requests unanswered.
* ``piece_delay`` seconds are slept between the streamed pieces of a chat reply. A client that
  hangs up mid-stream is counted in ``streams_dropped`` (the write fails), a stream sent to the
  end in ``streams_completed``; ``pieces_sent`` counts every piece written.
* ``port``: 0 (the default) picks a free one; give the port of a stopped server to start a
  server again where a client expects it (a model server that went down and came back).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import math
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "OllamaTestServer",
    "RecordedRequest",
    "Reply",
    "bag_of_words_embedding",
    "closed_port",
    "estimate_tokens",
    "fake_embedding",
    "split_reply",
]

OLLAMA_VERSION = "0.12.0"
CONTEXT_LENGTH_ERROR = "the input length exceeds the context length"
DEFAULT_REPLY = "This is a canned answer from the Ollama test server."
DEFAULT_CHAT_CONTEXT_LENGTH = 131072

Reply = str | Callable[[dict[str, Any]], str]
"""A fixed reply, or a function of the /api/chat request body returning the reply."""

Embedder = Callable[[str, int], list[float]]
"""Maps (text, dimension) to a unit vector."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it. `json` is None when the body is empty or not JSON."""

    method: str
    path: str
    json: dict[str, Any] | None
    headers: Mapping[str, str]


# --- Pure helpers -----------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """The server's token count for `text`: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    if norm < 1e-12:
        return vector
    return [v / norm for v in vector]


def _hash_vector(seed: bytes, dim: int) -> list[float]:
    """`dim` floats in [-1, 1) drawn from sha256 in counter mode: stable across Python versions."""
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        out.extend(u / 2**31 - 1.0 for u in struct.unpack(">8I", block))
        counter += 1
    return out[:dim]


def fake_embedding(text: str, dim: int = 768) -> list[float]:
    """The default embedding: an L2-normalised vector seeded by sha256 of the whole text.

    Equal texts give equal vectors; any other two texts give nearly orthogonal ones.
    """
    return _normalise(_hash_vector(hashlib.sha256(text.encode("utf-8")).digest(), dim))


_WORD = re.compile(r"\w+")


def bag_of_words_embedding(text: str, dim: int = 768) -> list[float]:
    """An alternative embedding (pass ``embedder=bag_of_words_embedding``) for retrieval tests.

    Each lower-cased word adds a fixed pseudo-random direction, so texts sharing words have a
    positive cosine similarity and a query finds the chunk that uses its words. Word order does
    not matter. A text without words falls back to `fake_embedding`.
    """
    words = _WORD.findall(text.lower())
    if not words:
        return fake_embedding(text, dim)
    vector = [0.0] * dim
    for word in words:
        digest = hashlib.sha256(b"word:" + word.encode("utf-8")).digest()
        # Eight (index, sign) features per word, from the digest's eight 32-bit words.
        for (u,) in struct.iter_unpack(">I", digest):
            vector[(u >> 1) % dim] += 1.0 if u & 1 else -1.0
    return _normalise(vector)


def split_reply(text: str) -> list[str]:
    """Split a reply into the pieces streamed one per chunk: whitespace stays with the next word.

    ``"Hello big  world\\n"`` -> ``["Hello", " big", "  world\\n"]``; the pieces join to `text`.
    """
    pieces = re.findall(r"\s*\S+", text)
    tail = text[sum(len(p) for p in pieces) :]
    if tail:
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces


_reserved_sockets: list[socket.socket] = []


def _close_reserved_sockets() -> None:
    while _reserved_sockets:
        _reserved_sockets.pop().close()


atexit.register(_close_reserved_sockets)


def closed_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused at once.

    The port is held by a socket that is bound but never listens, kept open until the
    interpreter exits, so nothing else can start listening on it during the test run.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _reserved_sockets.append(sock)
    port: int = sock.getsockname()[1]
    return port


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- Model catalogue --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelCard:
    name: str  # with tag, e.g. "llama3.2:latest"
    family: str
    capabilities: tuple[str, ...]
    parameter_size: str
    quantization_level: str
    size: int
    context_length: int
    embedding_length: int
    template: str
    parameters: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode("utf-8")).hexdigest()

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


def _with_tag(name: str) -> str:
    # A tag follows the last ':' unless that ':' belongs to a host:port ("host:11434/model").
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


_EMBEDDING_FAMILIES = (
    (re.compile(r"^(bge-|mxbai-|snowflake-arctic-embed|all-minilm)"), "bert"),
    (re.compile(r"^qwen3-embedding"), "qwen3"),
    (re.compile(r"embed"), "nomic-bert"),
)


def _embedding_family(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1].split(":", 1)[0].lower()
    return next((family for pattern, family in _EMBEDDING_FAMILIES if pattern.search(base)), None)


def _model_card(name: str, *, embedding_dim: int, context_length: int, chat_ctx: int) -> _ModelCard:
    family = _embedding_family(name)
    if family is not None:
        return _ModelCard(
            name=name,
            family=family,
            capabilities=("embedding",),
            parameter_size="137M",
            quantization_level="F16",
            size=274_302_450,
            context_length=context_length,
            embedding_length=embedding_dim,
            template="{{ .Prompt }}",
            parameters=f"num_ctx                        {context_length}",
        )
    return _ModelCard(
        name=name,
        family="llama",
        capabilities=("completion",),
        parameter_size="3.2B",
        quantization_level="Q4_K_M",
        size=2_019_393_189,
        context_length=chat_ctx,
        embedding_length=3072,
        template=(
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
            "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        parameters='stop                           "<|start_header_id|>"\n'
        'stop                           "<|end_header_id|>"\n'
        'stop                           "<|eot_id|>"',
    )


# --- HTTP plumbing ----------------------------------------------------------------------------


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Dropped(Exception):
    """The server is stopping: abandon the request without answering."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, app: OllamaTestServer, port: int = 0) -> None:
        self.app = app
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # without a network; the names are only used in the environ of CGI handlers anyway.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (timeout tests, stop()) is normal here: no tracebacks on stderr.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Ollama; streams use chunked encoding
    server: _HTTPServer

    # -- connection tracking, so stop() can cut keep-alive connections and in-flight requests

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- dispatch

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        body: dict[str, Any] | None = None
        parse_error: str | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                parse_error = f"invalid JSON: {exc}"
            else:
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    parse_error = "json: cannot unmarshal non-object into request"
        app._record(RecordedRequest(method, path, body, dict(self.headers.items())))

        try:
            if parse_error is not None:
                raise _HTTPError(400, parse_error)
            route = (method, path)
            if route in {("GET", "/"), ("HEAD", "/")}:
                self._send_text(200, "Ollama is running", head=method == "HEAD")
            elif route == ("GET", "/api/version"):
                self._send_json(200, {"version": OLLAMA_VERSION})
            elif route == ("GET", "/api/tags"):
                self._send_json(200, app._tags())
            elif route == ("POST", "/api/show"):
                self._send_json(200, app._show(body or {}))
            elif route == ("POST", "/api/embed"):
                app._wait_delay()
                self._send_json(200, app._embed(body or {}))
            elif route == ("POST", "/api/chat"):
                app._wait_delay()
                self._chat(body or {})
            else:
                self._send_text(404, "404 page not found")
        except _HTTPError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except _Dropped:
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- responses

    def _send_bytes(self, status: int, payload: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _send_json(self, status: int, obj: Mapping[str, Any]) -> None:
        payload = json.dumps(obj).encode("utf-8")
        self._send_bytes(status, payload, "application/json; charset=utf-8", head=False)

    def _send_text(self, status: int, text: str, head: bool = False) -> None:
        self._send_bytes(status, text.encode("utf-8"), "text/plain; charset=utf-8", head)

    def _send_ndjson(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        app = self.server.app
        try:
            for obj in objects:
                line = json.dumps(obj).encode("utf-8") + b"\n"
                self.wfile.write(f"{len(line):X}\r\n".encode("ascii") + line + b"\r\n")
                self.wfile.flush()
                app._count("pieces_sent")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up mid-stream
            app._count("streams_dropped")
            self.close_connection = True
            return
        app._count("streams_completed")

    def _chat(self, body: dict[str, Any]) -> None:
        app = self.server.app
        started = time.perf_counter_ns()
        model = app._chat_model(body)
        reply = app._reply_for(body)
        prompt_tokens = sum(
            estimate_tokens(m.get("content") or "")
            for m in body.get("messages") or []
            if isinstance(m, dict)
        )
        pieces = split_reply(reply)

        def final(content: str) -> dict[str, Any]:
            total = max(time.perf_counter_ns() - started, 1_000)
            return {
                "model": model,
                "created_at": _now_rfc3339(),
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": "stop",
                "total_duration": total,
                "load_duration": 1_000,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": total // 4,
                "eval_count": len(pieces),
                "eval_duration": total // 2,
            }

        if body.get("stream", True) is False:
            self._send_json(200, final(reply))
            return

        def chunks() -> Iterator[dict[str, Any]]:
            for number, piece in enumerate(pieces):
                if number and app.piece_delay > 0 and app._stopping.wait(app.piece_delay):
                    raise OSError("the test server is stopping")
                yield {
                    "model": model,
                    "created_at": _now_rfc3339(),
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            yield final("")

        self._send_ndjson(chunks())


# --- The server -------------------------------------------------------------------------------


class OllamaTestServer:
    """An Ollama look-alike on ``127.0.0.1:<free port>``; see the module docstring.

    Attributes that may be changed while it runs: `delay`, `piece_delay`, `reply`, `models`.
    """

    def __init__(
        self,
        *,
        models: Sequence[str] = ("nomic-embed-text:latest", "llama3.2:latest"),
        embedding_dim: int = 768,
        context_length: int = 2048,
        chat_context_length: int = DEFAULT_CHAT_CONTEXT_LENGTH,
        reply: Reply = DEFAULT_REPLY,
        delay: float = 0.0,
        piece_delay: float = 0.0,
        embedder: Embedder = fake_embedding,
        port: int = 0,
    ) -> None:
        self.models: tuple[str, ...] = tuple(_with_tag(m) for m in models)
        self.embedding_dim = embedding_dim
        self.context_length = context_length
        self.chat_context_length = chat_context_length
        self.reply: Reply = reply
        self.delay = delay
        self.piece_delay = piece_delay
        self.embedder = embedder
        self.pieces_sent = 0
        self.streams_completed = 0
        self.streams_dropped = 0
        self.requested_port = port
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle

    def start(self) -> OllamaTestServer:
        if self._httpd is not None:
            raise RuntimeError("OllamaTestServer already started")
        self._stopping.clear()
        httpd = _HTTPServer(self, self.requested_port)
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ollama-test-server:{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: in-flight delayed requests are dropped, open connections are cut."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with httpd.connections_lock:
            connections = list(httpd.open_connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OllamaTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("OllamaTestServer is not running")
        return int(self._httpd.server_address[1])

    # -- inspection

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The recorded requests whose path (without query string) is `path`, in order."""
        with self._requests_lock:
            return [r for r in self.requests if r.path == path]

    def clear_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self.requests.append(request)

    def _count(self, counter: str) -> None:
        with self._requests_lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _wait_delay(self) -> None:
        if self.delay > 0 and self._stopping.wait(self.delay):
            raise _Dropped
        if self._stopping.is_set():
            raise _Dropped

    # -- models

    def _card(self, requested: str) -> _ModelCard | None:
        wanted = _with_tag(requested)
        for name in self.models:
            if name == wanted:
                return _model_card(
                    name,
                    embedding_dim=self.embedding_dim,
                    context_length=self.context_length,
                    chat_ctx=self.chat_context_length,
                )
        return None

    def _tags(self) -> dict[str, Any]:
        models = []
        for name in self.models:
            card = self._card(name)
            assert card is not None
            models.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": card.size,
                    "digest": card.digest,
                    "details": card.details(),
                }
            )
        return {"models": models}

    def _show(self, body: Mapping[str, Any]) -> dict[str, Any]:
        requested = str(body.get("model") or body.get("name") or "")
        if not requested:
            raise _HTTPError(400, "model is required")
        card = self._card(requested)
        if card is None:
            raise _HTTPError(404, f"model '{requested}' not found")
        return {
            "modelfile": (
                '# Modelfile generated by "ollama show"\n'
                "# To build a new Modelfile based on this, replace FROM with:\n"
                f"# FROM {card.name}\n\n"
                f"FROM /models/blobs/sha256-{card.digest}\n"
                f'TEMPLATE """{card.template}"""\n'
                + "".join(f"PARAMETER {line}\n" for line in card.parameters.splitlines())
            ),
            "parameters": card.parameters,
            "template": card.template,
            "details": card.details(),
            "model_info": {
                "general.architecture": card.family,
                "general.basename": card.name.split(":", 1)[0],
                f"{card.family}.context_length": card.context_length,
                f"{card.family}.embedding_length": card.embedding_length,
            },
            "capabilities": list(card.capabilities),
            "modified_at": "2025-01-01T00:00:00Z",
        }

    # -- /api/embed

    def _embed(self, body: Mapping[str, Any]) -> dict[str, Any]:
        started = time.perf_counter_ns()
        raw_input = body.get("input")
        if raw_input is None or isinstance(raw_input, str):
            texts = [raw_input] if raw_input else []
        elif isinstance(raw_input, list) and all(isinstance(t, str) for t in raw_input):
            texts = list(raw_input)
        else:
            raise _HTTPError(400, "invalid input type")
        requested = str(body.get("model") or "")
        if not requested:
            raise _HTTPError(400, "model is required")
        card = self._card(requested)
        if card is None:
            raise _HTTPError(404, f'model "{requested}" not found, try pulling it first')

        limit = card.context_length
        options = body.get("options")
        if isinstance(options, dict) and isinstance(options.get("num_ctx"), int):
            limit = min(limit, options["num_ctx"])
        counts = [estimate_tokens(t) for t in texts]
        if any(c > limit for c in counts):
            raise _HTTPError(400, CONTEXT_LENGTH_ERROR)

        dim = self.embedding_dim
        dimensions = body.get("dimensions")
        vectors = [self.embedder(t, dim) for t in texts]
        if isinstance(dimensions, int) and 0 < dimensions < dim:
            vectors = [_normalise(v[:dimensions]) for v in vectors]
        return {
            "model": requested,
            "embeddings": vectors,
            "total_duration": max(time.perf_counter_ns() - started, 1_000),
            "load_duration": 1_000,
            "prompt_eval_count": sum(counts),
        }

    # -- /api/chat

    def _chat_model(self, body: Mapping[str, Any]) -> str:
        requested = str(body.get("model") or "")
        if not requested:
            raise _HTTPError(400, "model is required")
        card = self._card(requested)
        if card is None:
            raise _HTTPError(404, f"model '{requested}' not found")
        if "completion" not in card.capabilities:
            raise _HTTPError(400, f'"{requested}" does not support chat')
        think = body.get("think")
        if think is True or (isinstance(think, str) and think):
            raise _HTTPError(400, f'"{requested}" does not support thinking')
        return requested

    def _reply_for(self, body: dict[str, Any]) -> str:
        reply = self.reply
        if isinstance(reply, str):
            return reply
        try:
            return reply(body)
        except Exception as exc:  # a broken test script should read as an error, not a hang-up
            raise _HTTPError(500, f"reply callable failed: {exc!r}") from exc
