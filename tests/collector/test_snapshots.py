"""Snapshots on a weight budget: spacing, windows, 429 and 418, freshness."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path

import aiohttp
import pytest

from booktape.binance import Market
from collector.metrics import Metrics
from collector.snapshots import NS, SnapshotScheduler, SnapshotTimers, WeightBudget
from simulator.app import Simulator
from tests.collector.feed_fixtures import (
    CHEAP,
    ListSink,
    eventually,
    fast_tuning,
    pairwise,
    running_feed,
    settings_for,
    sim_config,
    simulated,
)

pytestmark = pytest.mark.timeout(90)


class FakeClock:
    def __init__(self, start_s: float = 1_000.0) -> None:
        self.ns = int(start_s * NS)

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * NS)


def budget(clock: FakeClock, share: float = 0.5, limit: int = 100) -> WeightBudget:
    return WeightBudget(share, Metrics(), limit=limit, window_s=10.0, clock_ns=clock)


# --- the budget, on a fake clock ---------------------------------------------------------


def test_requests_are_spread_evenly_under_the_share() -> None:
    clock = FakeClock()
    gate = budget(clock)  # 50 weight per 10 s: one request of 5 every second
    assert gate.wait_ns(5) == 0
    gate.spend(5)
    assert gate.wait_ns(5) == 1 * NS
    clock.advance(1.0)
    gate.spend(5)
    assert gate.wait_ns(5) == 1 * NS


def test_the_window_cap_counts_what_the_server_says_the_ip_used() -> None:
    clock = FakeClock(1_000.0)  # the start of a 10 s window
    gate = budget(clock)
    gate.observe(200, {"X-MBX-USED-WEIGHT-1M": "48"}, clock())  # another process spent 48
    assert gate.wait_ns(5) == 10 * NS  # 48 + 5 > 50: wait for the next window
    clock.advance(10.0)
    assert gate.wait_ns(5) == 0


def test_429_stops_every_request_until_retry_after() -> None:
    clock = FakeClock()
    gate = budget(clock, share=1.0, limit=10_000)
    gate.observe(429, {"Retry-After": "7"}, clock())
    assert gate.wait_ns(1) == 7 * NS
    assert not gate.banned()
    clock.advance(7.0)
    assert gate.wait_ns(1) == 0


def test_418_bans_all_rest_and_shows_in_the_metric() -> None:
    clock = FakeClock()
    metrics = Metrics()
    gate = WeightBudget(1.0, metrics, limit=10_000, window_s=60.0, clock_ns=clock)
    gate.observe(418, {"Retry-After": "120"}, clock())
    assert gate.banned()
    assert gate.banned_until_ns == clock() + 120 * NS
    assert metrics.registry.get_sample_value("booktape_rest_banned") == 1
    assert gate.wait_ns(1) == 120 * NS
    clock.advance(120.0)
    assert gate.wait_ns(1) == 0
    assert not gate.banned()
    assert metrics.registry.get_sample_value("booktape_rest_banned") == 0


# --- against the simulator -------------------------------------------------------------


async def test_a_stale_snapshot_is_retaken(tmp_path: Path) -> None:
    async with simulated(sim_config(("BTCUSDT",))) as sim, aiohttp.ClientSession() as http:
        sink, metrics = ListSink(), Metrics()
        first_prev = {"BTCUSDT": 10**15}  # a buffer newer than any snapshot
        scheduler = SnapshotScheduler(
            market=Market.SPOT,
            rest_base=str(sim.ready_info()["binance_rest"]),
            limit=100,
            interval_s=3600.0,
            session=http,
            budget=WeightBudget(1.0, metrics, clock_ns=time.time_ns),
            sink=sink,
            metrics=metrics,
            first_prev=first_prev.get,
            clock_ns=time.time_ns,
            timers=SnapshotTimers(stale_retry_s=0.05),
            rand=random.Random(1),
        )
        task = asyncio.create_task(scheduler.run())
        try:
            scheduler.request("BTCUSDT", "test")
            scheduler.request("BTCUSDT", "test")  # deduplicated
            await eventually(lambda: len(sink.snaps()) >= 3)
            first_prev["BTCUSDT"] = 0  # now the buffer starts before the snapshots
            ok = {"symbol": "BTCUSDT", "outcome": "ok"}
            await eventually(
                lambda: metrics.registry.get_sample_value("booktape_snapshots_total", ok) == 1
            )
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    stale = metrics.registry.get_sample_value(
        "booktape_snapshots_total", {"symbol": "BTCUSDT", "outcome": "stale"}
    )
    assert stale is not None
    assert stale >= 3
    assert len(sink.snaps()) == stale + 1  # one ok, then nothing until the interval
    assert scheduler.pending() == 0


async def test_200_symbols_at_once_get_their_snapshots_without_a_429(tmp_path: Path) -> None:
    symbols = tuple(f"S{i:03d}USDT" for i in range(200))
    # the simulated IP may spend 1000 weight per 2 s; the collector takes half of it
    config = sim_config(symbols, weight_limit=1000, rate_limit_window=2.0, send_log=False, **CHEAP)
    async with simulated(config) as sim:
        settings = settings_for(sim, tmp_path, streams_per_connection=50, weight_share=0.5)
        tuning = fast_tuning(weight_limit=1000, weight_window_s=2.0)
        async with running_feed(settings, tuning) as run:
            # ~4 s of weight; the bounds leave room for a loaded machine (the simulator and
            # the 200-symbol feed share this process)
            await run.until(lambda: run.feed.snapshots.requests >= 200, 60)
            await run.until(lambda: run.feed.snapshots.pending() == 0, 20)
            health = run.feed.health()

    snaps = run.sink.snaps()
    assert len(snaps) == 200
    assert {s.extra["status"] for s in snaps} == {200}
    assert run.metric("booktape_rest_responses_total", status="429") == 0
    assert health.connected
    assert health.connections == 4
    sent = sorted(s.q for s in snaps)
    # 500 weight per 2 s at 5 a request: one every 20 ms; 200 of them take about 4 s
    assert (sent[-1] - sent[0]) / NS >= 199 * 0.02 * 0.95
    used = [s.extra["weight_used"] for s in snaps]
    assert all(isinstance(u, int) and u <= 500 + 5 for u in used)
    busiest = max(sum(1 for t in sent if a <= t < a + NS // 10) for a in sent)
    assert busiest <= 6  # no burst: at most ~5 requests in any 100 ms


async def test_snapshots_are_retaken_every_interval(tmp_path: Path) -> None:
    async with simulated(sim_config(("BTCUSDT",))) as sim:
        settings = settings_for(sim, tmp_path, snapshot_interval_s=0.4)
        async with running_feed(settings) as run:
            ok = {"symbol": "BTCUSDT", "outcome": "ok"}
            await run.until(lambda: run.metric("booktape_snapshots_total", **ok) >= 3, 5)

    sent = [s.q for s in run.sink.snaps("BTCUSDT")]
    assert all(b - a >= 0.4 * NS for a, b in pairwise(sent))


async def test_429_stops_all_rest_until_retry_after(tmp_path: Path) -> None:
    async with simulated(sim_config(("BTCUSDT", "ETHUSDT"), retry_after=2.0)) as sim:
        sim.rest_errors(429, count=1)
        async with running_feed(settings_for(sim, tmp_path)) as run:
            await run.until(
                lambda: len({s.r for s in run.sink.snaps() if s.extra["status"] == 200}) == 2
            )

    snaps = sorted(run.sink.snaps(), key=lambda s: s.q)
    refused = snaps[0]
    assert refused.extra["status"] == 429
    assert refused.extra["retry_after"] == 2
    later = snaps[1:]
    assert later
    assert all(s.q >= refused.t + 2 * NS for s in later)
    assert run.metric("booktape_rest_responses_total", status="429") == 1


async def _ban_the_ip(sim: Simulator) -> None:
    """Spend the window, ignore the 429, get banned (the IP is shared with the collector)."""
    url = f"{sim.ready_info()['binance_rest']}/api/v3/depth"
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(url, params={"symbol": "BTCUSDT", "limit": "1000"}) as response:
                statuses.append(response.status)
    assert statuses == [200, 429, 418]


async def test_418_stops_all_rest_until_the_ban_ends(tmp_path: Path) -> None:
    config = sim_config(
        ("BTCUSDT", "ETHUSDT"), weight_limit=60, rate_limit_window=30.0, ban_base=2.0
    )
    async with simulated(config) as sim:
        # keep the test inside one simulated window
        await eventually(lambda: time.time() % 30.0 < 25.0)
        await _ban_the_ip(sim)
        tuning = fast_tuning(weight_limit=60, weight_window_s=30.0)
        async with running_feed(settings_for(sim, tmp_path, weight_share=1.0), tuning) as run:
            await run.until(lambda: any(s.extra["status"] == 418 for s in run.sink.snaps()))
            health = run.feed.health()
            banned_metric = run.metric("booktape_rest_banned")
            await run.until(lambda: any(s.extra["status"] == 200 for s in run.sink.snaps()), 10)

    assert health.rest_banned_until_ns is not None
    assert banned_metric == 1
    assert run.metric("booktape_rest_banned") == 0
    snaps = sorted(run.sink.snaps(), key=lambda s: s.q)
    ban = next(s for s in snaps if s.extra["status"] == 418)
    retry_after = ban.extra["retry_after"]
    assert isinstance(retry_after, int)
    assert retry_after >= 1
    after = [s for s in snaps if s.q > ban.q]
    assert after
    assert all(s.q >= ban.t + retry_after * NS for s in after)
    assert after[0].extra["status"] == 200


async def test_a_cancel_in_the_tick_a_request_arrives_stops_the_scheduler() -> None:
    # Python 3.11's asyncio.wait_for returns instead of raising when the task waiting in it
    # is cancelled in the same loop tick its inner wait completes (cpython#86296): the
    # dispatcher then looped on and the feed's shutdown waited for it forever.
    async with aiohttp.ClientSession() as http:
        metrics = Metrics()
        scheduler = SnapshotScheduler(
            market=Market.SPOT,
            rest_base="http://127.0.0.1:9",  # never asked: nothing is due before the cancel
            limit=100,
            interval_s=3600.0,
            session=http,
            budget=WeightBudget(1.0, metrics, clock_ns=time.time_ns),
            sink=ListSink(),
            metrics=metrics,
            first_prev=lambda _symbol: None,
            clock_ns=time.time_ns,
        )
        scheduler._schedule("BTCUSDT", time.time_ns() + 3600 * NS)  # a snapshot due later
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.05)  # the dispatcher waits for that one, or for a change

        scheduler.request("ETHUSDT", "test")  # a change: its wait ends in the next tick ...
        task.cancel()  # ... which also delivers the cancel

        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert task in done
        assert task.cancelled()
        assert scheduler.requests == 0
