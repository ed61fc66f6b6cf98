"""Taking turns on the chat model: at most `slots` answers at once, `queue` more waiting."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.api.errors import Busy


class GenerationGate:
    """At most `slots` answers run at once and `queue` more wait; past that, `Busy`.

    The embedded llama.cpp model gets one slot: one context is not thread-safe (concurrent calls
    abort the interpreter). Lives on the event loop: admission and release are plain counters.
    """

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self.admitted = 0
        self.running = 0
        self._turns = asyncio.Semaphore(slots)
        self._seconds_per_answer = 5.0  # a first guess, then a moving average of real answers

    @property
    def waiting(self) -> int:
        return self.admitted - self.running

    def admit(self) -> Ticket:
        if self.admitted >= self.slots + self.queue:
            raise Busy(
                f"The server is busy: {self.running} answer(s) running and {self.waiting} "
                f"waiting, the most it takes (SERVE_CONCURRENCY={self.slots}, "
                f"SERVE_QUEUE_SIZE={self.queue}). Try again in a few seconds.",
                retry_after=self.retry_after(),
            )
        self.admitted += 1
        return Ticket(self)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead, at the recent pace."""
        rounds = (self.waiting + 1) / self.slots
        return max(1, min(300, math.ceil(rounds * self._seconds_per_answer)))

    def _took(self, seconds: float) -> None:
        self._seconds_per_answer = 0.8 * self._seconds_per_answer + 0.2 * seconds

    def status(self) -> dict[str, int]:
        return {
            "slots": self.slots,
            "queue": self.queue,
            "running": self.running,
            "waiting": self.waiting,
        }


class Ticket:
    """A place in the gate: `turn()` waits for a slot; `release()` gives the place back (once)."""

    def __init__(self, gate: GenerationGate) -> None:
        self.gate = gate
        self.released = False

    def must_wait(self) -> bool:
        return self.gate._turns.locked()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self.gate._turns:
            self.gate.running += 1
            started = time.monotonic()
            try:
                yield
            finally:
                self.gate.running -= 1
                self.gate._took(time.monotonic() - started)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.admitted -= 1
