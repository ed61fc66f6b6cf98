"""Taking turns on the chat model: at most `slots` answers at once, `queue` more waiting, in the
order they came. Every figure it gives a client is measured, never assumed: a waiting request's
place (`ahead`) is its place in the line now, and the waits it announces (the queued event's
`wait_seconds`, a 503's `Retry-After`) come from how long recent answers took here and how long
the ones running now have been at it."""

from __future__ import annotations

import asyncio
import heapq
import math
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from app.api.errors import Busy

PACE_WINDOW = 20  # answers whose durations make the pace
FIRST_GUESS = 10.0  # seconds per answer before any answer has finished (said so to clients)


class GenerationGate:
    """At most `slots` answers run at once and `queue` more wait, first come first served;
    past that, `Busy` with a `Retry-After` from the measured pace.

    The embedded llama.cpp model gets one slot: one context is not thread-safe (concurrent calls
    abort the interpreter). Lives on the event loop: admission and release are plain bookkeeping.
    """

    def __init__(self, slots: int, queue: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.queue = queue
        self.clock = clock
        self._line: deque[Ticket] = deque()  # admitted, waiting for a slot, in arrival order
        self._running: list[Ticket] = []
        self._durations: deque[float] = deque(maxlen=PACE_WINDOW)

    # --- figures

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._line)

    @property
    def admitted(self) -> int:
        return self.running + self.waiting

    @property
    def measured(self) -> bool:
        return bool(self._durations)

    def pace(self) -> float:
        """Seconds one answer holds a slot: the median of the last answers' durations here."""
        if not self._durations:
            return FIRST_GUESS
        return statistics.median(self._durations)

    def ahead_of(self, ticket: Ticket) -> int:
        """Requests waiting before this one (0 when it is next, or running)."""
        try:
            return self._line.index(ticket)
        except ValueError:
            return 0

    def _slot_free_times(self) -> list[float]:
        """Seconds from now until each slot is expected to be free: a running answer is
        expected to take the pace, and one that already took longer to end any moment."""
        now, pace = self.clock(), self.pace()
        times = [max(0.0, pace - (now - t.started)) for t in self._running]
        return times + [0.0] * (self.slots - len(times))

    def expected_start(self, ahead: int) -> float:
        """Seconds until a request with `ahead` requests before it gets a slot, if each answer
        takes the measured pace: the slots free up in turn, each taking the next in line."""
        pace = self.pace()
        free = self._slot_free_times()
        heapq.heapify(free)
        start = 0.0
        for _ in range(ahead + 1):
            start = heapq.heappop(free)
            heapq.heappush(free, start + pace)
        return start

    def retry_after(self) -> int:
        """Whole seconds until a place in the line is expected to free: the first running
        answer to finish lets the first waiting one in."""
        return max(1, math.ceil(min(self._slot_free_times())))

    def status(self) -> dict[str, int | float | None]:
        return {
            "slots": self.slots,
            "queue": self.queue,
            "running": self.running,
            "waiting": self.waiting,
            "seconds_per_answer": round(self.pace(), 2) if self.measured else None,
        }

    # --- admission

    def admit(self) -> Ticket:
        if self.admitted >= self.slots + self.queue:
            raise Busy(self._busy_message(), retry_after=self.retry_after())
        ticket = Ticket(self)
        self._line.append(ticket)
        self._dispatch()
        return ticket

    def _busy_message(self) -> str:
        retry = self.retry_after()
        pace = self.pace()
        measured = (
            f"answers take about {pace:.0f} s each here (the median of the last "
            f"{len(self._durations)})"
            if self.measured
            else f"no answer has finished yet, so {pace:.0f} s per answer is a guess"
        )
        wait = math.ceil(self.expected_start(self.waiting))
        return (
            f"The server is busy: {self.running} answer(s) running and {self.waiting} waiting, "
            f"the most it takes (SERVE_CONCURRENCY={self.slots}, SERVE_QUEUE_SIZE={self.queue}). "
            f"A place should free up in about {retry} s: try again then (Retry-After: {retry}). "
            f"{measured[0].upper() + measured[1:]}; a request let in now would wait about "
            f"{wait} s for its turn."
        )

    def _dispatch(self) -> None:
        while self._line and len(self._running) < self.slots:
            ticket = self._line.popleft()
            ticket.started = self.clock()
            self._running.append(ticket)
            ticket.granted = True
        for ticket in (*self._line, *self._running):
            ticket.moved.set()

    def _leave(self, ticket: Ticket) -> None:
        if ticket in self._running:
            self._running.remove(ticket)
            if ticket.answered:  # a place given back before its answer began is no measure
                self._durations.append(self.clock() - ticket.started)
        elif ticket in self._line:
            self._line.remove(ticket)
        self._dispatch()


class Ticket:
    """A place in the gate, from admission until `release()` (idempotent): first in the line,
    then in a slot. `turn()` waits for the slot, telling the waiter each time its place moves."""

    def __init__(self, gate: GenerationGate) -> None:
        self.gate = gate
        self.granted = False
        self.released = False
        self.answered = False
        self.started = 0.0
        self.moved = asyncio.Event()

    def must_wait(self) -> bool:
        return not self.granted

    async def places(self) -> AsyncIterator[int]:
        """While waiting: `ahead` now, then again every time it changes. Ends with the turn."""
        last = None
        while not self.granted and not self.released:
            self.moved.clear()
            ahead = self.gate.ahead_of(self)
            if ahead != last:
                last = ahead
                yield ahead
            if self.granted:
                return
            await self.moved.wait()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Holds the slot for the block; the place is given back when it ends, however."""
        try:
            while not self.granted:
                self.moved.clear()
                await self.moved.wait()
            self.answered = True
            yield
        finally:
            self.release()

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate._leave(self)
