"""The Coinbase feed: book snapshots and price points on a wall-clock grid.

On every slot of the grid (:mod:`collector.grid`; second 0 of each minute by default) the
feed fetches ``/products/{id}/book?level=N`` for each product from the Exchange API and
the buy, sell and spot price of each currency from the v2 prices API, and records each
response verbatim as a ``snap`` (``t`` response ns, ``q`` request ns, ``r`` path and
query, ``status``, ``slot`` ns, ``level`` or ``kind``), whatever its status.

Each request of a slot runs as its own task, so a slow product never delays another, nor
the next slot's start. Requests to one host share a token bucket paced under Coinbase's
public limit (10/s, burst 15); the prices API is another host with its own bucket. A 429
blocks the host's bucket until its ``Retry-After`` (or a capped doubling backoff) and the
request is tried again if it can still be sent before the next slot (at most
``attempts`` times). A request is given until the next slot starts: one still unanswered
then is cancelled. Whenever a slot yields no response for a product or a price --
started too late, no token before the next slot, refused connection, timeout -- a
``conn`` record ``ev: "miss"`` with ``{"slot": ns, "reason": text}`` goes into that
stream's chunk and ``booktape_missed_slots_total`` counts it. Start jitter (request start
minus slot time) feeds ``booktape_slot_jitter_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import orjson

from booktape.codec import Header, Scalar, encode_conn, encode_snap
from booktape.coinbase import (
    BURST,
    PRICE_KINDS,
    REQUESTS_PER_SECOND,
    book_path,
    check_interval,
    price_path,
)
from collector.config import CollectorSettings
from collector.grid import (
    NS,
    GridClock,
    Pacer,
    default_lateness_ns,
    plan_slots,
    sleep_until_mono,
)
from collector.metrics import Metrics
from collector.snapshots import retry_after_s
from collector.types import Item, RecordSink

if TYPE_CHECKING:
    from collector.pipeline import Pipeline

log = logging.getLogger("collector.coinbase")

QUOTE = "USD"


@dataclass(frozen=True, slots=True)
class CoinbaseTuning:
    """Internal choices, settable for tests."""

    rate: float = REQUESTS_PER_SECOND * 0.9  # a margin under the public limit
    burst: int = BURST - 2
    attempts: int = 3  # per request and slot, 429s included
    request_timeout_s: float = 30.0  # and never past the next slot
    max_lateness_ns: int | None = None  # None: a quarter of the interval, at most 5 s
    step_tolerance_ns: int = 50_000_000


@dataclass(frozen=True, slots=True)
class CoinbaseHealth:
    last_frame_ns: int | None  # the last 200 book response
    reason: str | None


@dataclass(frozen=True, slots=True)
class _Job:
    """One stream's request in one slot."""

    symbol: str  # product (book) or currency (prices)
    channel: str  # "book" or "prices"
    pacer: Pacer  # the host's token bucket
    url: str
    path: str  # recorded as the snap's "r"
    slot: int
    extra: dict[str, Scalar]  # level or kind


@dataclass(frozen=True, slots=True)
class _Refused:
    retry_after_s: float | None  # the 429's Retry-After; None: back off on our own


@dataclass(slots=True)
class _Stats:
    slots: int = 0
    missed: int = 0
    responses: dict[int, int] = field(default_factory=dict)


def _sequence(body: bytes) -> int | None:
    """A book body's ``sequence``, as chunk recovery reads it (collector.chunks)."""
    try:
        sequence = orjson.loads(body).get("sequence")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return sequence if type(sequence) is int and sequence >= 0 else None


def stream_headers(settings: CollectorSettings, host: str) -> list[Header]:
    """The chunk headers of the feed's streams, with the grid's extra fields."""
    interval_ns = check_interval(round(settings.interval_s * NS))
    where = (settings.region, settings.collector, host)
    book = {"interval_ns": interval_ns, "level": settings.level}
    prices = {"interval_ns": interval_ns, "quote": QUOTE}
    exchange = settings.exchange_name
    headers = [Header(exchange, "book", p, *where, extra=book) for p in settings.products]
    headers += [Header(exchange, "prices", c, *where, extra=prices) for c in settings.prices]
    return headers


def declare_headers(pipeline: Pipeline, settings: CollectorSettings) -> None:
    """Give the pipeline the feed's chunk headers' extra fields (grid interval, level)."""
    for header in stream_headers(settings, "-"):
        pipeline.declare_stream(header.channel, header.symbol, dict(header.extra))


class CoinbaseFeed:
    """Records the configured products and prices on the grid; see the module docstring."""

    def __init__(
        self,
        settings: CollectorSettings,
        sink: RecordSink,
        metrics: Metrics,
        *,
        session: aiohttp.ClientSession,
        clock: GridClock | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        tuning: CoinbaseTuning | None = None,
    ) -> None:
        self.settings = settings
        self.tuning = t = tuning or CoinbaseTuning()
        self.interval_ns = check_interval(round(settings.interval_s * NS))
        self.lateness_ns = (
            t.max_lateness_ns
            if t.max_lateness_ns is not None
            else default_lateness_ns(self.interval_ns)
        )
        self.clock = clock or GridClock(step_tolerance_ns=t.step_tolerance_ns)
        self._sink = sink
        self._metrics = metrics
        self._session = session
        self._wall_ns = wall_ns
        self._rest_base = settings.coinbase_rest_base
        self._prices_base = settings.prices_base
        self.exchange_pacer = Pacer(t.rate, t.burst)
        self.prices_pacer = Pacer(t.rate, t.burst)
        self._conn = f"rest-{wall_ns() // NS:x}"
        self.stats = _Stats()
        self._last_ok_ns: int | None = None
        self._context = {"region": settings.region, "collector": settings.collector}

    # --- the public surface -------------------------------------------------------

    def health(self) -> CoinbaseHealth:
        return CoinbaseHealth(self._last_ok_ns, None)

    async def run(self) -> None:
        """Take slots until cancelled."""
        log.info(
            "coinbase grid starting",
            extra={
                **self._context,
                "products": list(self.settings.products),
                "prices": list(self.settings.prices),
                "interval_ns": self.interval_ns,
                "level": self.settings.level,
            },
        )
        last: int | None = None
        async with asyncio.TaskGroup() as tasks:
            while True:
                plan = plan_slots(self.clock.now_ns(), last, self.interval_ns, self.lateness_ns)
                for slot in plan.missed:
                    await self._miss_all(slot, "late: the slot could not start in time")
                slot = plan.next_slot
                await sleep_until_mono(self.clock.deadline_mono_ns(slot))
                if self.clock.check_step():  # the wall clock stepped while we slept
                    continue  # plan again: the slot may now be late (missed) or ahead
                last = slot
                late = self.clock.now_ns() - slot
                if late > self.lateness_ns:
                    await self._miss_all(slot, f"late: woke {late / NS:.3f} s after the slot")
                    continue
                self.stats.slots += 1
                self._start_slot(tasks, slot)

    # --- one slot -------------------------------------------------------------------

    def _start_slot(self, tasks: asyncio.TaskGroup, slot: int) -> None:
        level = self.settings.level
        for product in self.settings.products:
            path = book_path(product, level)
            url = self._rest_base + path
            job = _Job(product, "book", self.exchange_pacer, url, path, slot, {"level": level})
            tasks.create_task(self._fetch(job))
        for currency in self.settings.prices:
            for kind in PRICE_KINDS:
                path = price_path(currency, QUOTE, kind)
                url = self._prices_base + path
                job = _Job(currency, "prices", self.prices_pacer, url, path, slot, {"kind": kind})
                tasks.create_task(self._fetch(job))

    async def _fetch(self, job: _Job) -> None:
        """One slot's request for one stream, with its 429 retries; a miss if no answer."""
        next_slot_mono = self.clock.deadline_mono_ns(job.slot + self.interval_ns)
        for attempt in range(self.tuning.attempts):
            if not await job.pacer.acquire(next_slot_mono):
                await self._miss(job.symbol, job.channel, job.slot, "no request token in time")
                return
            if attempt == 0:
                self._metrics.slot_jitter.observe(max(0, self.clock.now_ns() - job.slot) / NS)
            refused = await self._request(job, next_slot_mono)
            if refused is None:
                job.pacer.accepted()
                return
            retry_in_s = job.pacer.refused(refused.retry_after_s)
            if time.monotonic_ns() + int(retry_in_s * NS) >= next_slot_mono:
                return  # the 429 is recorded: the slot has no book

    async def _request(self, job: _Job, next_slot_mono: int) -> _Refused | None:
        """Send and record; None when done, a :class:`_Refused` after a 429."""
        loop = asyncio.get_running_loop()
        until = loop.time() + (next_slot_mono - time.monotonic_ns()) / NS
        timeout = aiohttp.ClientTimeout(total=self.tuning.request_timeout_s)
        request_ns = self._wall_ns()
        try:
            async with asyncio.timeout_at(until):
                async with self._session.get(job.url, timeout=timeout) as response:
                    body = await response.read()
                    status, headers = response.status, response.headers
        except TimeoutError:
            await self._miss(job.symbol, job.channel, job.slot, "no response before the next slot")
            return None
        except aiohttp.ClientError as exc:
            self._metrics.rest_responses.labels("error").inc()
            reason = f"request failed: {exc!r}"[:200]
            await self._miss(job.symbol, job.channel, job.slot, reason)
            return None
        response_ns = self._wall_ns()
        self._metrics.rest_responses.labels(str(status)).inc()
        self.stats.responses[status] = self.stats.responses.get(status, 0) + 1
        extra: dict[str, Scalar] = {"status": status, "slot": job.slot, **job.extra}
        line = encode_snap(response_ns, request_ns, self._conn, job.path, body, extra=extra)
        sequence = _sequence(body) if job.channel == "book" else None
        item = Item(job.symbol, line, response_ns, sequence, sequence, job.channel)
        await self._sink.put(item)
        if status == 429:
            after = retry_after_s(headers)
            fields = {"symbol": job.symbol, "path": job.path, "retry_after": after}
            log.warning("coinbase rate limited", extra={**self._context, **fields})
            return _Refused(float(after) if after is not None else None)
        if job.channel == "book":
            self._metrics.snapshots.labels(job.symbol, "ok" if status == 200 else "error").inc()
            if status == 200:
                self._last_ok_ns = response_ns
                self._metrics.last_frame.labels(job.symbol).set(response_ns / NS)
        return None

    # --- misses ---------------------------------------------------------------------

    async def _miss(self, symbol: str, channel: str, slot: int, reason: str) -> None:
        now = self._wall_ns()
        line = encode_conn(now, self._conn, "miss", {"slot": slot, "reason": reason})
        await self._sink.put(Item(symbol, line, now, channel=channel))
        self._metrics.missed_slots.labels(symbol).inc()
        self.stats.missed += 1
        log.warning(
            "slot missed",
            extra={
                **self._context,
                "symbol": symbol,
                "channel": channel,
                "slot": slot,
                "reason": reason,
            },
        )

    async def _miss_all(self, slot: int, reason: str) -> None:
        for product in self.settings.products:
            await self._miss(product, "book", slot, reason)
        for currency in self.settings.prices:
            await self._miss(currency, "prices", slot, reason)
