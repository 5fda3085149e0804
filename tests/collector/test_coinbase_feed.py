"""The Coinbase collector against the simulator (and a deliberately slow server): raw
objects, ground truth by sequence, misses, 429s and a product that answers too late."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from booktape.codec import Snap
from booktape.coinbase import parse_l3_book, parse_price
from booktape.keys import parse_raw_key
from booktape.objects import read_object
from collector.coinbase_feed import CoinbaseFeed, CoinbaseTuning
from collector.config import CollectorSettings
from collector.grid import GridClock
from collector.metrics import Metrics
from collector.service import run_collector
from simulator.app import Simulator
from simulator.config import SimConfig
from tests.collector.feed_fixtures import ListSink

SEC = 10**9


def sim_config(**over: Any) -> SimConfig:
    values: dict[str, Any] = {
        "symbols": ("BTCUSDT",),
        "products": ("BTC-USD", "ETH-USD"),
        "coinbase_orders_per_side": 800,
        "control_port": None,
    }
    values.update(over)
    return SimConfig(**values)


def settings(tmp: Path, rest: str, **over: Any) -> CollectorSettings:
    values: dict[str, Any] = {
        "exchange": "coinbase",
        "products": ("BTC-USD", "ETH-USD"),
        "prices": ("BTC", "XRP"),
        "level": 3,
        "interval_s": 1.0,
        "region": "eu",
        "collector": "c1",
        "store": str(tmp / "store"),
        "spool_dir": tmp / "spool",
        "rest_url": rest,
        "prices_url": rest,
    }
    values.update(over)
    return CollectorSettings(**values)


@contextlib.asynccontextmanager
async def running_feed(
    cfg: CollectorSettings, tuning: CoinbaseTuning | None = None
) -> AsyncIterator[tuple[CoinbaseFeed, ListSink, Metrics]]:
    sink, metrics = ListSink(), Metrics()
    async with aiohttp.ClientSession() as session:
        feed = CoinbaseFeed(cfg, sink, metrics, session=session, tuning=tuning)
        task = asyncio.create_task(feed.run())
        try:
            yield feed, sink, metrics
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def read_store(root: Path) -> dict[str, Any]:
    """Every raw object under ``root``: key -> ReadResult."""
    out = {}
    for path in sorted((root / "raw").rglob("*.jsonl.zst")):
        key = str(path.relative_to(root))
        out[key] = read_object(path.read_bytes(), key)
    return out


async def test_collector_records_true_books_and_prices_on_the_grid(tmp_path: Path) -> None:
    async with Simulator(sim_config(coinbase_history=64)) as sim:
        cfg = settings(tmp_path, str(sim.ready_info()["coinbase_rest"]))
        stop = asyncio.Event()
        task = asyncio.create_task(run_collector(cfg, stop, handle_signals=False))
        await asyncio.sleep(3.6)
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
        objects = read_store(tmp_path / "store")
        books = {k: v for k, v in objects.items() if "/book/" in k}
        assert {parse_raw_key(k).symbol for k in books} == {"BTC-USD", "ETH-USD"}
        # a run that crosses a minute boundary has two chunks per product (60 s rotation)
        by_product: dict[str, list[Snap]] = {}
        for key, result in sorted(books.items()):
            assert result.header.extra == {"interval_ns": SEC, "level": 3}
            chunk_snaps = [r for r in result.records if isinstance(r, Snap)]
            assert chunk_snaps, f"{key} holds no snapshot"
            by_product.setdefault(parse_raw_key(key).symbol, []).extend(chunk_snaps)
            sequences = [parse_l3_book(s.raw).sequence for s in chunk_snaps]
            key_ids = parse_raw_key(key)
            assert (key_ids.first_id, key_ids.last_id) == (sequences[0], sequences[-1])
        for product, snaps in by_product.items():
            slots = [s.extra["slot"] for s in snaps]
            assert len(snaps) >= 3
            assert slots == list(range(slots[0], slots[0] + SEC * len(slots), SEC))  # none missing
            for snap in snaps:
                assert snap.extra["status"] == 200
                assert snap.r == f"/products/{product}/book?level=3"
                assert snap.extra["slot"] <= snap.q <= snap.t
                book = parse_l3_book(snap.raw)
                truth = sim.coinbase_truth(product, book.sequence)
                assert (book.bids, book.asks) == (truth.bids, truth.asks)
        prices = {k: v for k, v in objects.items() if "/prices/" in k}
        assert {parse_raw_key(k).symbol for k in prices} == {"BTC", "XRP"}
        kinds_by_slot: dict[str, dict[int, set[str]]] = {}  # currency -> slot -> kinds
        for key, result in prices.items():
            assert result.header.extra == {"interval_ns": SEC, "quote": "USD"}
            currency = parse_raw_key(key).symbol
            by_slot = kinds_by_slot.setdefault(currency, {})
            for snap in (r for r in result.records if isinstance(r, Snap)):
                assert snap.r == f"/v2/prices/{currency}-USD/{snap.extra['kind']}"
                assert parse_price(snap.raw).base == currency
                by_slot.setdefault(int(snap.extra["slot"]), set()).add(str(snap.extra["kind"]))
        for by_slot in kinds_by_slot.values():
            assert len(by_slot) >= 3
            assert all(kinds == {"buy", "sell", "spot"} for kinds in by_slot.values())


async def test_region_down_is_recorded_as_missed_slots(tmp_path: Path) -> None:
    async with Simulator(sim_config()) as sim:
        cfg = settings(tmp_path, str(sim.ready_info()["coinbase_rest"]), prices=())
        async with running_feed(cfg) as (_, sink, metrics):
            await sim.region_down(2.2)
            await asyncio.sleep(3.5)
        misses = sink.conns("BTC-USD", ev="miss")
        assert len(misses) >= 1
        assert all(m.info["reason"].startswith("request failed") for m in misses)
        slots = [int(m.info["slot"]) for m in misses]
        assert all(s % SEC == 0 for s in slots)
        snaps = sink.snaps("BTC-USD")
        assert not {int(s.extra["slot"]) for s in snaps} & set(slots)  # a slot: snap or miss
        total = metrics.registry.get_sample_value(
            "booktape_missed_slots_total", {"symbol": "BTC-USD"}
        )
        assert total == len(misses)


async def test_429_is_recorded_and_retried_within_the_slot(tmp_path: Path) -> None:
    products = ("BTC-USD", "ETH-USD", "LTC-USD", "SOL-USD")
    config = sim_config(products=products, coinbase_rate=2.0, coinbase_burst=2)
    async with Simulator(config) as sim:
        cfg = settings(
            tmp_path,
            str(sim.ready_info()["coinbase_rest"]),
            products=products,
            prices=(),
            interval_s=2.0,
            level=1,
        )
        async with running_feed(cfg) as (_, sink, metrics):
            await asyncio.sleep(4.5)
        snaps = [s for p in products for s in sink.snaps(p)]
        refused = [s for s in snaps if s.extra["status"] == 429]
        assert refused
        assert all(s.raw == b'{"message":"Public rate limit exceeded"}' for s in refused)
        retried = [
            s
            for s in snaps
            if s.extra["status"] == 200
            and any(
                r.extra["slot"] == s.extra["slot"] and r.r == s.r and r.q < s.q for r in refused
            )
        ]
        assert retried  # the same slot's request succeeded after its 429
        count = metrics.registry.get_sample_value(
            "booktape_rest_responses_total", {"status": "429"}
        )
        assert count == len(refused)


@contextlib.asynccontextmanager
async def slow_server(delay_s: float) -> AsyncIterator[str]:
    """A book server where SLOW-USD answers after ``delay_s`` and FAST-USD at once."""

    async def book(request: web.Request) -> web.Response:
        product = request.match_info["product"]
        if product == "SLOW-USD":
            await asyncio.sleep(delay_s)
        return web.Response(body=b'{"sequence":1,"bids":[],"asks":[],"time":null}')

    app = web.Application()
    app.router.add_get("/products/{product}/book", book)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_a_slow_product_does_not_delay_the_others(tmp_path: Path) -> None:
    async with slow_server(3.0) as url:
        cfg = settings(tmp_path, url, products=("SLOW-USD", "FAST-USD"), prices=())
        async with running_feed(cfg) as (feed, sink, _):
            await asyncio.sleep(4.6)
        fast = sink.snaps("FAST-USD")
        assert len(fast) >= 4
        assert [int(s.extra["slot"]) for s in fast] == [
            int(fast[0].extra["slot"]) + k * SEC for k in range(len(fast))
        ]
        assert max(s.q - int(s.extra["slot"]) for s in fast) < 250_000_000
        slow_misses = sink.conns("SLOW-USD", ev="miss")
        assert len(slow_misses) >= 3
        assert all(m.info["reason"] == "no response before the next slot" for m in slow_misses)
        assert not sink.snaps("SLOW-USD")  # cancelled at the next slot: never recorded late
        assert feed.stats.slots >= 4


def test_coinbase_settings_refuse_an_interval_that_does_not_divide_a_day(tmp_path: Path) -> None:
    from booktape.errors import ConfigError  # noqa: PLC0415
    from collector.config import load_settings  # noqa: PLC0415

    flags = {
        "exchange": "coinbase",
        "products": "BTC-USD",
        "interval_s": 7.0,
        "region": "eu",
        "collector": "c1",
        "store": str(tmp_path),
    }
    with pytest.raises(ConfigError, match="divide a day"):
        load_settings(flags)


@pytest.mark.parametrize("step_s", [2.5, -2.0])
async def test_wall_clock_step_reanchors_without_repeating_or_shifting(
    tmp_path: Path, step_s: float
) -> None:
    offset = [0]

    def wall_ns() -> int:
        return time.time_ns() + offset[0]

    clock = GridClock(wall_ns, time.monotonic_ns)
    async with slow_server(0.0) as url:
        cfg = settings(tmp_path, url, products=("FAST-USD",), prices=())
        sink, metrics = ListSink(), Metrics()
        async with aiohttp.ClientSession() as session:
            feed = CoinbaseFeed(cfg, sink, metrics, session=session, clock=clock, wall_ns=wall_ns)
            task = asyncio.create_task(feed.run())
            await asyncio.sleep(1.6)
            offset[0] = int(step_s * SEC)
            await asyncio.sleep(2.6 if step_s > 0 else 5.5)  # back: wait out the step, resume
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert clock.steps == 1
    snaps = sink.snaps("FAST-USD")
    misses = sink.conns("FAST-USD", ev="miss")
    slots = sorted([int(s.extra["slot"]) for s in snaps] + [int(m.info["slot"]) for m in misses])
    assert len(set(slots)) == len(slots)  # no slot taken twice
    assert slots == list(range(slots[0], slots[-1] + 1, SEC))  # a snap or a miss for each
    assert all(abs(s.q - int(s.extra["slot"])) < 250_000_000 for s in snaps)  # never shifted
    if step_s > 0:
        assert len(misses) >= 2
        assert all(m.info["reason"].startswith("late") for m in misses)
    else:
        assert not misses
        assert len([s for s in snaps if s.q > snaps[0].q + 2 * SEC]) >= 1  # resumed
