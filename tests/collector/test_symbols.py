"""``--symbols ALL``: discovery from exchangeInfo, and listing changes applied live."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from booktape.binance import Market
from collector.backoff import FeedFatalError
from collector.metrics import Metrics
from collector.snapshots import WeightBudget
from collector.symbols import ListingChange, diff_listing, fetch_trading_symbols
from tests.collector.feed_fixtures import running_feed, settings_for, sim_config, simulated

pytestmark = pytest.mark.timeout(60)

FOUR = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")


def test_diff_listing() -> None:
    change = diff_listing(["BTCUSDT", "ETHUSDT", "LUNAUSDT"], ["ETHUSDT", "BTCUSDT", "NEWUSDT"])
    assert change == ListingChange(added=("NEWUSDT",), removed=("LUNAUSDT",))
    assert not diff_listing(["A"], ["A"])


async def test_fetch_reads_the_trading_symbols() -> None:
    async with simulated(sim_config(FOUR)) as sim, aiohttp.ClientSession() as http:
        metrics = Metrics()
        symbols = await fetch_trading_symbols(
            market=Market.SPOT,
            rest_base=str(sim.ready_info()["binance_rest"]),
            session=http,
            budget=WeightBudget(0.5, metrics, clock_ns=time.time_ns),
            metrics=metrics,
            clock_ns=time.time_ns,
        )
        assert symbols == sorted(FOUR)
        with pytest.raises(FeedFatalError, match="HTTP 404"):
            await fetch_trading_symbols(
                market=Market.SPOT,
                rest_base=f"{sim.ready_info()['binance_rest']}/wrong",
                session=http,
                budget=WeightBudget(0.5, metrics, clock_ns=time.time_ns),
                metrics=metrics,
                clock_ns=time.time_ns,
            )


async def test_all_records_every_trading_symbol_and_follows_listing_changes(
    tmp_path: Path,
) -> None:
    async with simulated(sim_config(FOUR)) as sim:
        settings = settings_for(sim, tmp_path, symbols="ALL", streams_per_connection=2)
        async with running_feed(settings) as run:
            await run.until(lambda: run.feed.health().connected)
            assert run.feed.symbols() == sorted(FOUR)
            await run.until(lambda: all(len(run.sink.msgs(s)) >= 2 for s in FOUR))

            # BNBUSDT is delisted: unsubscribed live, a close record says why
            await run.feed.apply_listing(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
            (close,) = run.sink.conns("BNBUSDT", "close")
            assert close.info == {"reason": "delisted"}
            await asyncio.sleep(0.5)  # frames already in flight may still arrive
            quiet = len(run.sink.msgs("BNBUSDT"))
            await asyncio.sleep(0.5)
            assert len(run.sink.msgs("BNBUSDT")) == quiet  # nothing more for it

            # ... and listed again: subscribed live on the connection with room
            await run.feed.apply_listing(list(FOUR))
            relisted = time.time_ns()
            await run.until(lambda: any(s.q > relisted for s in run.sink.snaps("BNBUSDT")))
            health = run.feed.health()
            sim_conns = sim.connections()

    assert health.connected
    assert health.connections == 2
    assert len(sim_conns) == 2
    (subscribe,) = run.sink.conns("BNBUSDT", "subscribe")
    assert subscribe.info["stream"] == "bnbusdt@depth@100ms"
    replies = [m for m in run.sink.msgs("BNBUSDT") if m.raw.startswith(b'{"result"')]
    assert replies  # the subscription's reply is part of the symbol's story
    assert len(run.sink.conns("BNBUSDT", "open")) == 1  # no new connection was needed
    for other in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):  # untouched by the change
        assert [c.info["reason"] for c in run.sink.conns(other, "close")] == ["shutdown"]
        assert len(run.sink.conns(other, "open")) == 1
