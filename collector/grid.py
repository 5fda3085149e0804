"""The wall-clock grid: absolute slot deadlines on a monotonic clock, and request pacing.

Slot ``k`` is at ``k * interval`` ns since the epoch (UTC; :mod:`booktape.coinbase`), so
with the default 60 s every slot is second 0 of a minute. :class:`GridClock` maps a
slot's UTC time to the monotonic clock with an offset (``wall - monotonic``) captured at
start, and the scheduler sleeps until that absolute monotonic deadline: the time a slot
takes never shifts the next one, so nothing drifts however long it runs.

Wall-clock steps. Before each slot the offset is measured again; NTP slewing moves it by
microseconds, a step (an operator or a VM resume setting the clock) by more than
``step_tolerance_ns``. On a step the offset is re-captured (the grid is defined in UTC, so
the slots follow the new wall clock) and a warning is logged. A forward step makes the
slots jumped over late: they are recorded as missed. A backward step never repeats a slot:
slots are taken in increasing order only, so the grid waits for the next slot after the
last one taken.

A slot is *taken* when it can start within ``max_lateness_ns`` of its time (the process
may wake a little late); otherwise it is *missed* and recorded as such, never shifted.
:func:`plan_slots` is that decision, pure, for tests with an injected clock.

:class:`Pacer` is a token bucket (``rate`` a second, ``burst`` at most), one per host:
``acquire(deadline)`` waits for a token unless that wait would end after ``deadline``
(then it says no, and the caller records a miss instead of sending late). A 429 blocks
the bucket until its Retry-After (or a capped backoff) has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("collector.grid")

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """What to do next: the slots given up on, and the next slot to take."""

    missed: tuple[int, ...]
    next_slot: int


def plan_slots(
    now_ns: int, after_slot: int | None, interval_ns: int, max_lateness_ns: int
) -> SlotPlan:
    """The next slot to take at wall time ``now_ns``, after slot ``after_slot`` (None: none yet).

    Without a previous slot, the first slot at or after ``now_ns`` is next (a slot that
    is already late at start is not missed: it was never due). Slots after
    ``after_slot`` whose time is more than ``max_lateness_ns`` past are missed.
    """
    if after_slot is None:
        return SlotPlan((), -(-now_ns // interval_ns) * interval_ns)
    slot = after_slot + interval_ns
    latest_on_time = now_ns - max_lateness_ns  # a slot before this is too late
    if slot >= latest_on_time:
        return SlotPlan((), slot)
    first_ok = -(-latest_on_time // interval_ns) * interval_ns
    missed = tuple(range(slot, first_ok, interval_ns))
    return SlotPlan(missed, first_ok)


def default_lateness_ns(interval_ns: int) -> int:
    """How late a slot may start: a quarter of the interval, at most 5 s."""
    return min(interval_ns // 4, 5 * NS)


class GridClock:
    """UTC slot times <-> monotonic deadlines, with wall-clock step detection."""

    def __init__(
        self,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        step_tolerance_ns: int = 50_000_000,
    ) -> None:
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self.step_tolerance_ns = step_tolerance_ns
        self.offset_ns = self._measure()
        self.steps = 0

    def _measure(self) -> int:
        return self._wall_ns() - self._mono_ns()

    def check_step(self) -> int:
        """Re-measure the offset; on a step beyond the tolerance adopt it. Returns the step."""
        offset = self._measure()
        step = offset - self.offset_ns
        if abs(step) > self.step_tolerance_ns:
            log.warning("wall clock stepped: grid re-anchored", extra={"step_ns": step})
            self.offset_ns = offset
            self.steps += 1
            return step
        return 0

    def now_ns(self) -> int:
        """UTC now, as the grid sees it (monotonic + offset: never steps between checks)."""
        return self._mono_ns() + self.offset_ns

    def deadline_mono_ns(self, slot_ns: int) -> int:
        """The monotonic time of a slot."""
        return slot_ns - self.offset_ns


async def sleep_until_mono(
    deadline_ns: int, mono_ns: Callable[[], int] = time.monotonic_ns
) -> None:
    """Sleep until the monotonic clock reaches ``deadline_ns`` (asyncio's own clock is
    monotonic; a short final sleep absorbs a wake-up that came early)."""
    loop = asyncio.get_running_loop()
    for _ in range(3):
        remaining = deadline_ns - mono_ns()
        if remaining <= 0:
            return
        future: asyncio.Future[None] = loop.create_future()
        handle = loop.call_at(loop.time() + remaining / NS, future.set_result, None)
        try:
            await future
        finally:
            handle.cancel()


class Pacer:
    """A token bucket for one host (see the module docstring); times are monotonic ns."""

    def __init__(
        self,
        rate: float,
        burst: int,
        mono_ns: Callable[[], int] = time.monotonic_ns,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._mono_ns = mono_ns
        self._tokens = float(burst)
        self._at = mono_ns()
        self._blocked_until = 0
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._refusals = 0
        self._lock = asyncio.Lock()

    def _refill(self, now: int) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate / NS)
        self._at = now

    def wait_ns(self, now: int) -> int:
        """Nanoseconds until a token is free (0: now)."""
        self._refill(now)
        blocked = max(0, self._blocked_until - now)
        if self._tokens >= 1.0:
            return blocked
        return max(blocked, int((1.0 - self._tokens) * NS / self.rate) + 1)

    async def acquire(self, deadline_mono_ns: int | None = None) -> bool:
        """Take a token, waiting if needed; False (nothing taken) if the wait would pass
        ``deadline_mono_ns``."""
        async with self._lock:  # first come, first served
            for _ in range(1000):
                now = self._mono_ns()
                wait = self.wait_ns(now)
                if wait == 0:
                    self._tokens -= 1.0
                    return True
                if deadline_mono_ns is not None and now + wait > deadline_mono_ns:
                    return False
                await sleep_until_mono(now + wait, self._mono_ns)
            return False

    def refused(self, retry_after_s: float | None) -> float:
        """A 429: block until Retry-After, or a doubling backoff; returns the seconds.

        429s answering requests sent together (while the bucket is already blocked) are
        one episode: only the first doubles the backoff."""
        now = self._mono_ns()
        if now >= self._blocked_until:
            self._refusals += 1
        if retry_after_s is None:
            retry_after_s = min(
                self._backoff_cap_s, self._backoff_base_s * 2.0 ** min(self._refusals - 1, 20)
            )
        self._blocked_until = max(self._blocked_until, now + int(retry_after_s * NS))
        self._tokens = 0.0
        self._at = now
        return retry_after_s

    def accepted(self) -> None:
        """A response that was not a 429: the backoff starts over."""
        self._refusals = 0
