"""REST depth snapshots, taken on a request-weight budget, never from the socket's read loop.

:class:`WeightBudget` is the gate every REST request of the feed passes (snapshots and
exchangeInfo). It keeps the process under ``share`` of the per-IP weight limit:

- requests are spread evenly: one of weight ``w`` every ``w / (share * limit / window)``
  seconds, so a mass reconnect of hundreds of symbols becomes a steady trickle;
- per window (aligned on the wall clock, like Binance's minutes) the weight spent is at
  most ``share * limit``, counting both what we spent and what the server says the IP
  used (``X-MBX-USED-WEIGHT-1M``: other processes may share the IP);
- a 429 stops every request until its ``Retry-After`` has passed; a 418 (IP banned) too,
  and shows in ``rest_banned`` and the feed's health until the ban ends.

:class:`SnapshotScheduler` owns a queue of symbols that need a snapshot, deduplicated
(one entry and at most one request in flight per symbol), ordered by when each is due.
The feed asks for one after a connection (re)opened or a break, once the symbol has >= 2
events buffered; the scheduler itself re-asks every ``snapshot_interval_s``, after a stale
snapshot (``lastUpdateId`` older than the first buffered event's previous id: retaken) and
after errors (with a growing delay). Every response is recorded verbatim as a ``snap``
record whatever its status: an error body is evidence too.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from booktape.binance import (
    SPECS,
    USED_WEIGHT_HEADER,
    WEIGHT_LIMIT_PER_MINUTE,
    Market,
    depth_weight,
    snapshot_is_fresh,
    snapshot_last_update_id,
)
from booktape.codec import Scalar, encode_snap
from collector.metrics import Metrics
from collector.types import Item, RecordSink

log = logging.getLogger("collector.snapshots")

NS = 1_000_000_000
REST_CONN = "rest"  # the connection id of snap records
DEFAULT_BAN_S = 120.0  # a 418 without Retry-After: Binance's first ban


def retry_after_s(headers: Mapping[str, str]) -> int | None:
    """The ``Retry-After`` header in seconds, None when absent or not a number."""
    value = headers.get("Retry-After", "").strip()
    return int(value) if value.isdigit() else None


class WeightBudget:
    """The REST weight gate of one process (see the module docstring)."""

    def __init__(
        self,
        share: float,
        metrics: Metrics,
        *,
        limit: int = WEIGHT_LIMIT_PER_MINUTE,
        window_s: float = 60.0,
        clock_ns: Callable[[], int],
    ) -> None:
        self.cap = max(1, int(limit * share))  # weight we may spend per window
        self.window_ns = int(window_s * NS)
        self.blocked_until_ns = 0  # no request before this (429 or 418)
        self.banned_until_ns: int | None = None  # set by a 418
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._next_ns = 0  # even spacing: the earliest time of the next request
        self._window = -1
        self._spent = 0  # our weight in the current window
        self._server_used = 0  # the IP's weight in the current window, as last reported
        self._lock = asyncio.Lock()

    def _roll(self, now: int) -> int:
        window = now // self.window_ns
        if window != self._window:
            self._window, self._spent, self._server_used = window, 0, 0
        return window

    def wait_ns(self, weight: int) -> int:
        """How long a request of ``weight`` has to wait now (0: it may go)."""
        now = self._clock_ns()
        self._check_ban(now)
        at = max(now, self.blocked_until_ns, self._next_ns)
        window = self._roll(now)
        used = max(self._spent, self._server_used)
        over = used > 0 and used + weight > self.cap  # one heavy request may go alone
        if over and at < (window + 1) * self.window_ns:
            at = (window + 1) * self.window_ns
        return at - now

    def spend(self, weight: int) -> None:
        """Count a request of ``weight`` sent now (after :meth:`wait_ns` said 0)."""
        now = self._clock_ns()
        self._roll(now)
        self._spent += weight
        self._next_ns = max(self._next_ns, now) + weight * self.window_ns // self.cap

    async def acquire(self, weight: int) -> None:
        """Wait until a request of ``weight`` fits, then count it."""
        async with self._lock:
            while True:
                wait = self.wait_ns(weight)
                if wait <= 0:
                    break
                await asyncio.sleep(wait / NS)
            self.spend(weight)

    def _check_ban(self, now: int) -> None:
        if self.banned_until_ns is not None and now >= self.banned_until_ns:
            self.banned_until_ns = None
            self._metrics.rest_banned.set(0)
            log.warning("REST ban over")

    def banned(self) -> bool:
        """Whether a 418 ban is in force now."""
        self._check_ban(self._clock_ns())
        return self.banned_until_ns is not None

    def observe(self, status: int, headers: Mapping[str, str], recv_ns: int) -> None:
        """Learn from a response: the IP's used weight, and 429/418 back-offs."""
        used = headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            if recv_ns // self.window_ns == self._roll(recv_ns):
                self._server_used = max(self._server_used, int(used))
            self._metrics.rest_weight_used.set(int(used))
        if status not in (418, 429):
            return
        after = retry_after_s(headers)
        if status == 429:
            wait_ns = after * NS if after is not None else self.window_ns - recv_ns % self.window_ns
            log.warning("REST rate limited (429)", extra={"retry_after": after})
        else:
            wait_ns = int((after if after is not None else DEFAULT_BAN_S) * NS)
            self.banned_until_ns = max(self.banned_until_ns or 0, recv_ns + wait_ns)
            self._metrics.rest_banned.set(1)
            log.error("REST banned (418): all REST stopped", extra={"retry_after": after})
        self.blocked_until_ns = max(self.blocked_until_ns, recv_ns + wait_ns)


@dataclass(frozen=True, slots=True)
class SnapshotTimers:
    """Delays of the scheduler (seconds)."""

    stale_retry_s: float = 0.5  # a snapshot older than the buffer: retake after this
    error_base_s: float = 1.0  # first retry after a failed request, doubling ...
    error_cap_s: float = 60.0  # ... up to this
    request_timeout_s: float = 10.0
    concurrency: int = 8  # requests in flight at once (different symbols)


class SnapshotScheduler:
    """Takes each symbol's snapshots when due, within the budget, one at a time per symbol."""

    def __init__(
        self,
        *,
        market: Market,
        rest_base: str,
        limit: int,
        interval_s: float,
        session: aiohttp.ClientSession,
        budget: WeightBudget,
        sink: RecordSink,
        metrics: Metrics,
        first_prev: Callable[[str], int | None],
        clock_ns: Callable[[], int],
        timers: SnapshotTimers | None = None,
        rand: random.Random | None = None,
    ) -> None:
        self._market = market
        self._rest_base = rest_base
        self._limit = limit
        self._weight = depth_weight(market, limit)
        self._interval_ns = int(interval_s * NS)
        self._session = session
        self._budget = budget
        self._sink = sink
        self._metrics = metrics
        self._first_prev = first_prev
        self._clock_ns = clock_ns
        self._timers = timers or SnapshotTimers()
        self._rand = rand or random.Random()
        self._due: dict[str, int] = {}  # symbol -> when its next snapshot is due (ns)
        self._heap: list[tuple[int, str]] = []  # (due, symbol); stale entries skipped
        self._in_flight: set[str] = set()
        self._again: set[str] = set()  # asked for while in flight
        self._failures: dict[str, int] = {}
        self._changed = asyncio.Event()
        self.requests = 0  # requests sent (tests, logs)

    # --- what the feed calls -------------------------------------------------------

    def request(self, symbol: str, reason: str) -> None:
        """Ask for a snapshot of ``symbol`` now (deduplicated)."""
        if symbol in self._in_flight:
            self._again.add(symbol)
            return
        self._schedule(symbol, self._clock_ns())
        log.debug("snapshot requested", extra={"symbol": symbol, "why": reason})

    def forget(self, symbol: str) -> None:
        """Stop taking snapshots of ``symbol`` (delisted)."""
        self._due.pop(symbol, None)
        self._again.discard(symbol)
        self._failures.pop(symbol, None)

    def pending(self) -> int:
        """Symbols waiting for a snapshot or with one in flight."""
        now = self._clock_ns()
        return sum(1 for due in self._due.values() if due <= now) + len(self._in_flight)

    def _schedule(self, symbol: str, at_ns: int) -> None:
        current = self._due.get(symbol)
        if current is not None and current <= at_ns:
            return
        self._due[symbol] = at_ns
        heapq.heappush(self._heap, (at_ns, symbol))
        self._changed.set()

    # --- the dispatcher ------------------------------------------------------------

    async def run(self) -> None:
        """Send due requests forever, at most ``concurrency`` at a time."""
        slots = asyncio.Semaphore(self._timers.concurrency)
        async with asyncio.TaskGroup() as tasks:
            while True:
                symbol = await self._next_due()
                await slots.acquire()
                await self._budget.acquire(self._weight)
                if self._due.get(symbol, 1 << 62) > self._clock_ns():
                    slots.release()  # forgotten or rescheduled while we waited
                    continue
                del self._due[symbol]
                self._in_flight.add(symbol)
                tasks.create_task(self._take(symbol, slots))

    async def _next_due(self) -> str:
        while True:
            self._changed.clear()
            while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # superseded or forgotten
            wait_s: float | None = None
            if self._heap:
                due, symbol = self._heap[0]
                now = self._clock_ns()
                if due <= now:
                    heapq.heappop(self._heap)
                    return symbol
                wait_s = (due - now) / NS
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # comes in the tick the event is set (cpython#86296) and this loop would go on
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._changed.wait()

    async def _take(self, symbol: str, slots: asyncio.Semaphore) -> None:
        try:
            next_ns = await self._fetch(symbol)
        finally:
            slots.release()
            self._in_flight.discard(symbol)
        if symbol in self._again:
            self._again.discard(symbol)
            next_ns = self._clock_ns()
        if next_ns is not None:
            self._schedule(symbol, next_ns)

    async def _fetch(self, symbol: str) -> int | None:
        """One request and its record; returns when the symbol is due again."""
        path = f"{SPECS[self._market].depth_path}?symbol={symbol}&limit={self._limit}"
        self.requests += 1
        request_ns = self._clock_ns()
        try:
            timeout = aiohttp.ClientTimeout(total=self._timers.request_timeout_s)
            async with self._session.get(self._rest_base + path, timeout=timeout) as response:
                body = await response.read()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._metrics.rest_responses.labels("error").inc()
            self._metrics.snapshots.labels(symbol, "error").inc()
            log.warning("snapshot request failed", extra={"symbol": symbol, "error": repr(exc)})
            return self._after_error(symbol)
        response_ns = self._clock_ns()
        self._budget.observe(status, headers, response_ns)
        self._metrics.rest_responses.labels(str(status)).inc()
        extra: dict[str, Scalar] = {"status": status}
        used = headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            extra["weight_used"] = int(used)
        if (after := retry_after_s(headers)) is not None:
            extra["retry_after"] = after
        line = encode_snap(response_ns, request_ns, REST_CONN, path, body, extra=extra)
        await self._sink.put(Item(symbol, line, response_ns))
        last_update_id = snapshot_last_update_id(body) if status == 200 else None
        if last_update_id is None:
            self._metrics.snapshots.labels(symbol, "error").inc()
            log.warning("snapshot refused", extra={"symbol": symbol, "status": status})
            return response_ns if status in (418, 429) else self._after_error(symbol)
        self._failures.pop(symbol, None)
        first_prev = self._first_prev(symbol)
        if first_prev is not None and not snapshot_is_fresh(last_update_id, first_prev):
            self._metrics.snapshots.labels(symbol, "stale").inc()
            log.info(
                "snapshot older than the buffer: retaking",
                extra={"symbol": symbol, "last_update_id": last_update_id, "first": first_prev},
            )
            return response_ns + int(self._timers.stale_retry_s * NS)
        self._metrics.snapshots.labels(symbol, "ok").inc()
        return response_ns + self._interval_ns

    def _after_error(self, symbol: str) -> int:
        failures = self._failures.get(symbol, 0)
        self._failures[symbol] = failures + 1
        ceiling = min(
            self._timers.error_cap_s, self._timers.error_base_s * 2.0 ** min(failures, 20)
        )
        return self._clock_ns() + int(self._rand.uniform(ceiling / 2, ceiling) * NS)
