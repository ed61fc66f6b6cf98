"""An OpenAI-compatible HTTP server for tests: standard library only, in-process, loopback only.

It stands in for vLLM, llama.cpp's server, LM Studio or a hosted API, so the app's `openai`
provider can be driven over real HTTP with no network and no models. `openai.OpenAI`,
`langchain_openai.OpenAIEmbeddings` and `langchain_openai.ChatOpenAI` work against it
unchanged::

    with OpenAITestServer(reply="Paris is the capital.") as server:
        chat = ChatOpenAI(model="gpt-4o-mini", base_url=server.base_url, api_key="unused")
        assert "".join(c.text for c in chat.stream("Capital of France?")) == server.reply
        assert server.requests_to("/v1/chat/completions")[0].json["stream"] is True

`base_url` ends in ``/v1``, as OPENAI_BASE_URL does. Endpoints: ``GET /v1/models``,
``POST /v1/embeddings`` and ``POST /v1/chat/completions``. Anything else gets 404 in OpenAI's
error shape (``Invalid URL (POST /v1/...)``).

Behaviour worth knowing when writing tests:

* Every error body is OpenAI's: ``{"error": {"message", "type", "param", "code"}}``. An
  unknown model is 404 ``model_not_found``; a wrong or missing key (when `api_key` is set) is
  401 ``invalid_api_key``, on every route, ``/v1/models`` included.
* ``/v1/models`` lists `models`; a model named in `max_model_len` carries that field, as vLLM
  reports its context window. `list_models = False` makes the route answer 404, as some
  servers and gateways do.
* A model whose name says it embeds (``embed``, ``bge-``, ``e5-``, ``minilm``, see
  `is_embedding_model`) serves only ``/v1/embeddings``; any other only chat. Asking the wrong
  one is a 400 ``invalid_request_error``, as vLLM refuses a task the model was not started for.
* Embeddings are `bag_of_words_vector` (tests/fakes.py) of `embedding_dim` slots by default:
  texts sharing words point the same way, so retrieval over them is meaningful.
  ``encoding_format`` ``float`` (the default) and ``base64`` (little-endian float32) are served.
* Chat replies are `reply` (a string, or a function of the request body), split into pieces by
  `split_reply` (tests/ollama_server.py) when streamed: one ``chat.completion.chunk`` per piece
  after a first chunk with the role, a last one with ``finish_reason``, then a usage chunk
  (empty ``choices``) when ``stream_options.include_usage`` is true, then ``data: [DONE]``.
  ``prompt_tokens`` is `estimate_tokens` over the message contents (4 characters a token);
  ``completion_tokens`` the number of pieces.
* ``delay`` seconds are slept, after the request is recorded, before ``/v1/embeddings`` and
  ``/v1/chat/completions`` answer. `stop` interrupts the sleep and drops such requests
  unanswered. ``piece_delay`` seconds are slept between streamed pieces.
* ``error``: ``(status, message)`` answers every embeddings and chat request with that status
  in OpenAI's error shape (a 500, a 503 "overloaded", a 429), after the key check.
* Recorded requests keep their header names in lower case (clients differ in case):
  ``request.headers["authorization"]``.
* ``port``: 0 (the default) picks a free one; give the port of a stopped server to start a
  server again where a client expects it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.fakes import bag_of_words_vector
from tests.ollama_server import RecordedRequest, estimate_tokens, split_reply

__all__ = [
    "DEFAULT_REPLY",
    "OpenAITestServer",
    "RecordedRequest",
    "is_embedding_model",
]

DEFAULT_REPLY = "This is a canned answer from the OpenAI-compatible test server."
CREATED = 1_735_689_600  # 2025-01-01, the `created` of every model

Reply = str | Callable[[dict[str, Any]], str]
"""A fixed reply, or a function of the /v1/chat/completions request body returning it."""

Embedder = Callable[[str, int], list[float]]
"""Maps (text, dimension) to a vector."""

_EMBEDDING_NAME = re.compile(r"embed|(^|[/-])bge-|(^|[/-])e5-|minilm", re.IGNORECASE)


def is_embedding_model(name: str) -> bool:
    """Whether the server treats `name` as an embedding model (else as a chat model)."""
    return bool(_EMBEDDING_NAME.search(name))


# --- HTTP plumbing ----------------------------------------------------------------------------


class _APIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Dropped(Exception):
    """The server is stopping: abandon the request without answering."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, app: OpenAITestServer, port: int = 0) -> None:
        self.app = app
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # without a network.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (timeout tests, stop()) is normal here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves vLLM; streams are chunked
    server: _HTTPServer

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

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        body: dict[str, Any] | None = None
        parse_error: str | None = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                parse_error = f"We could not parse the JSON body of your request. ({exc})"
            else:
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    parse_error = "The request body must be a JSON object."
        headers = {name.lower(): value for name, value in self.headers.items()}
        app._record(RecordedRequest(method, path, body, headers))

        try:
            app._check_key(self.headers.get("Authorization"))
            if parse_error is not None:
                raise _APIError(400, parse_error)
            route = (method, path)
            if route == ("GET", "/v1/models") and app.list_models:
                self._send_json(200, app._model_list())
            elif route == ("POST", "/v1/embeddings"):
                app._fail_or_wait()
                self._send_json(200, app._embed(body or {}))
            elif route == ("POST", "/v1/chat/completions"):
                app._fail_or_wait()
                self._chat(body or {})
            else:
                raise _APIError(404, f"Invalid URL ({method} {path})")
        except _APIError as exc:
            self._send_json(exc.status, exc.body)
        except _Dropped:
            self.close_connection = True

    def _send_json(self, status: int, obj: Mapping[str, Any]) -> None:
        payload = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_events(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Server-sent events, one `data:` line per object, then `data: [DONE]`."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        app = self.server.app

        def write(data: str) -> None:
            event = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(event):X}\r\n".encode("ascii") + event + b"\r\n")
            self.wfile.flush()

        try:
            for obj in objects:
                write(json.dumps(obj))
                app._count("pieces_sent")
            write("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up mid-stream
            app._count("streams_dropped")
            self.close_connection = True
            return
        app._count("streams_completed")

    def _chat(self, body: dict[str, Any]) -> None:
        app = self.server.app
        model = app._model(body, chat=True)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _APIError(400, "'messages' must be a non-empty array", param="messages")
        reply = app._reply_for(body)
        pieces = split_reply(reply)
        prompt_tokens = sum(
            estimate_tokens(m.get("content") or "")
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None  # as OpenAI: null on every chunk but the last
            return out

        def chunks() -> Iterator[dict[str, Any]]:
            yield chunk({"role": "assistant", "content": ""})
            for number, piece in enumerate(pieces):
                if number and app.piece_delay > 0 and app._stopping.wait(app.piece_delay):
                    raise OSError("the test server is stopping")
                yield chunk({"content": piece})
            yield chunk({}, "stop")
            if include_usage:
                yield {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }

        self._send_events(chunks())


# --- The server -------------------------------------------------------------------------------


class OpenAITestServer:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>``; see the module docstring.

    Attributes that may be changed while it runs: `models`, `max_model_len`, `list_models`,
    `api_key`, `reply`, `delay`, `piece_delay`, `error`.
    """

    def __init__(
        self,
        *,
        models: Sequence[str] = ("text-embedding-3-small", "gpt-4o-mini"),
        max_model_len: Mapping[str, int] | None = None,
        list_models: bool = True,
        api_key: str | None = None,
        embedding_dim: int = 256,
        embedder: Embedder = bag_of_words_vector,
        reply: Reply = DEFAULT_REPLY,
        delay: float = 0.0,
        piece_delay: float = 0.0,
        error: tuple[int, str] | None = None,
        port: int = 0,
    ) -> None:
        self.models: tuple[str, ...] = tuple(models)
        self.max_model_len: dict[str, int] = dict(max_model_len or {})
        self.list_models = list_models
        self.api_key = api_key
        self.embedding_dim = embedding_dim
        self.embedder = embedder
        self.reply: Reply = reply
        self.delay = delay
        self.piece_delay = piece_delay
        self.error = error
        self.pieces_sent = 0
        self.streams_completed = 0
        self.streams_dropped = 0
        self.requested_port = port
        self.requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""  # http://127.0.0.1:PORT
        self.base_url = ""  # the same with /v1: what OPENAI_BASE_URL is set to

    # -- lifecycle

    def start(self) -> OpenAITestServer:
        if self._httpd is not None:
            raise RuntimeError("OpenAITestServer already started")
        self._stopping.clear()
        httpd = _HTTPServer(self, self.requested_port)
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.base_url = f"{self.url}/v1"
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"openai-test-server:{port}",
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

    def __enter__(self) -> OpenAITestServer:
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
            raise RuntimeError("OpenAITestServer is not running")
        return int(self._httpd.server_address[1])

    # -- inspection

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The recorded requests whose path (without query string) is `path`, in order."""
        with self._requests_lock:
            return [r for r in self.requests if r.path == path]

    def embedding_inputs(self) -> list[list[str]]:
        """The `input` of every /v1/embeddings request, as a list of texts, in order."""
        sent = []
        for request in self.requests_to("/v1/embeddings"):
            texts = (request.json or {}).get("input")
            sent.append([texts] if isinstance(texts, str) else list(texts or []))
        return sent

    def clear_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self.requests.append(request)

    def _count(self, counter: str) -> None:
        with self._requests_lock:
            setattr(self, counter, getattr(self, counter) + 1)

    # -- checks

    def _check_key(self, header: str | None) -> None:
        if self.api_key is None:
            return
        if not header or not header.startswith("Bearer "):
            raise _APIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        given = header.removeprefix("Bearer ").strip()
        if given != self.api_key:
            shown = f"{given[:3]}***{given[-4:]}" if len(given) > 8 else "***"
            raise _APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")

    def _fail_or_wait(self) -> None:
        if self.error is not None:
            status, message = self.error
            raise _APIError(status, message, kind="server_error" if status >= 500 else "error")
        if self.delay > 0 and self._stopping.wait(self.delay):
            raise _Dropped
        if self._stopping.is_set():
            raise _Dropped

    def _model(self, body: Mapping[str, Any], *, chat: bool) -> str:
        requested = body.get("model")
        if not isinstance(requested, str) or not requested:
            raise _APIError(400, "you must provide a model parameter", param="model")
        if requested not in self.models:
            raise _APIError(
                404,
                f"The model `{requested}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        if chat == is_embedding_model(requested):
            task = "Chat Completions" if chat else "Embeddings"
            raise _APIError(400, f"The model `{requested}` does not support the {task} API.")
        return requested

    # -- routes

    def _model_list(self) -> dict[str, Any]:
        data = []
        for name in self.models:
            entry: dict[str, Any] = {
                "id": name,
                "object": "model",
                "created": CREATED,
                "owned_by": "openai-test-server",
                "root": name,
                "parent": None,
            }
            if name in self.max_model_len:
                entry["max_model_len"] = self.max_model_len[name]
            data.append(entry)
        return {"object": "list", "data": data}

    def _embed(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = self._model(body, chat=False)
        raw = body.get("input")
        if isinstance(raw, str):
            texts = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            texts = list(raw)
        else:
            raise _APIError(400, "'input' must be a string or a non-empty array of strings")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _APIError(400, f"Invalid encoding_format '{encoding}'", param="encoding_format")
        data = []
        for index, text in enumerate(texts):
            vector = self.embedder(text, self.embedding_dim)
            embedding: list[float] | str = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
                if encoding == "base64"
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(estimate_tokens(t) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _reply_for(self, body: dict[str, Any]) -> str:
        reply = self.reply
        if isinstance(reply, str):
            return reply
        try:
            return reply(body)
        except Exception as exc:  # a broken test script should read as an error, not a hang-up
            raise _APIError(500, f"reply callable failed: {exc!r}", kind="server_error") from exc
