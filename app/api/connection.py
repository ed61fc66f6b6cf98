"""Bounds on every connection, below HTTP's routing: what uvicorn does not bound by itself.

uvicorn closes a connection left idle *after* a response (`timeout_keep_alive`), but a
connection that sends nothing, or its headers a byte at a time (slowloris), or a body that never
ends, stays open for ever, and the token check cannot run before the headers are complete. A
response whose client reads nothing waits for ever too. So each connection here is, at any
moment, in one phase with its own deadline, counted from the phase's start (a client cannot
stretch it by sending a byte now and then):

    idle       no request under way (just opened, or between requests)   `idle` s, then closed
    headers    a request has begun, its headers are not complete          `headers` s, then 408
    body       the headers are in, the body is not                        `body` s, then 408
    answering  the request is complete; the response is being written     no read deadline

While answering, a response the client takes no bytes of for `stall` s (the transport's buffer
full and not draining) is dropped. The kernel's send buffer of a connection is set to
`send_buffer` bytes (Linux doubles it) instead of growing to megabytes on its own: answers are
small, and a client that reads nothing is then noticed after a few hundred kB, not 4 MB.

The request line and headers are at most `max_header_bytes` (431 past it). At
most `max_connections` connections are open at once; one more is answered 503 and closed, so a
flood cannot use up the process's file descriptors (and every idle or slow one is gone within
the deadlines above).

uvicorn's h11 protocol underneath, whatever else is installed: its limits are the ones set here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ConnectionLimits:
    idle: float = 5.0
    headers: float = 10.0
    body: float = 30.0
    stall: float = 30.0
    max_connections: int = 256
    max_header_bytes: int = 16 * 1024
    send_buffer: int = 64 * 1024

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config's own settings that go with these limits."""
        return {
            "http": guarded_protocol(self),
            "timeout_keep_alive": max(1, round(self.idle)),
            "h11_max_incomplete_event_size": self.max_header_bytes,
        }


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def _raw_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"detail": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    limits: ConnectionLimits = ConnectionLimits()

    phase = "idle"
    _deadline: asyncio.TimerHandle | None = None
    _stall: asyncio.TimerHandle | None = None

    # --- the phases

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning(
                "Refused a connection: %d open, the most this server keeps.",
                self.limits.max_connections,
            )
            message = (
                "The server has as many connections open as it keeps "
                f"({self.limits.max_connections}). Try again in a few seconds."
            )
            transport.write(
                _raw_response(503, "Service Unavailable", message, "retry-after: 5\r\n")
            )
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer)
        self._enter("idle")

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            return
        super().data_received(data)
        self._follow()

    def _head_too_large(self, data: bytes) -> bool:
        """Request line and headers over `max_header_bytes`, however they arrive (h11's own
        limit only counts what is still incomplete, not a large head sent at once): 431."""
        head = self.conn.trailing_data[0] + data
        end = head.find(b"\r\n\r\n")
        size = len(head) if end < 0 else end + 4
        if size <= self.limits.max_header_bytes:
            return False
        message = (
            f"The request line and headers are larger than this server takes "
            f"({self.limits.max_header_bytes:,} bytes)."
        )
        self.transport.write(_raw_response(431, "Request Header Fields Too Large", message))
        self.transport.close()
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """The phase the connection is in now, from h11's view of the client's side."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            started = bool(self.conn.trailing_data[0])
            self._enter("headers" if started else "idle")
        elif state is h11.SEND_BODY:
            self._enter("body")
        else:  # DONE, MUST_CLOSE...: the request is in
            self._enter("answering")

    def _enter(self, phase: str) -> None:
        if phase == self.phase and (self._deadline is not None or phase == "answering"):
            return  # the deadline runs from the phase's start
        self.phase = phase
        self._cancel_deadline()
        limits = self.limits
        seconds = {"idle": limits.idle, "headers": limits.headers, "body": limits.body}.get(phase)
        if seconds is not None:
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing() or phase != self.phase:
            return
        if phase == "idle":
            self.transport.close()
            return
        seconds = self.limits.headers if phase == "headers" else self.limits.body
        what = "headers" if phase == "headers" else "body"
        self.logger.info("Closed a connection whose request %s took over %g s.", what, seconds)
        cycle = self.cycle
        if phase == "headers" or cycle is None or not cycle.response_started:
            message = (
                f"The request {what} did not arrive within {seconds:g} s; the connection is closed."
            )
            self.transport.write(_raw_response(408, "Request Timeout", message))
        self.transport.close()  # the app, if it waits for the body, hears a disconnect

    # --- writing

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.limits.stall, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if not self.transport.is_closing():
            self.logger.info(
                "Dropped a connection whose client took nothing for %g s.", self.limits.stall
            )
            self.transport.abort()  # what it has not read is not worth waiting for

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        super().connection_lost(exc)
