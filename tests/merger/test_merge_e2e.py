"""End to end: the simulator, two in-process collectors, a local store, then the merge.

Ground truth: the simulator's true book (``sim.truth``) at the end, and the update ids that
the collectors' own records show nobody recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from booktape.binance import parse_depth_header
from booktape.codec import Msg
from booktape.keys import canonical_key
from booktape.objects import read_object
from booktape.stores import LocalStore
from collector.config import load_settings
from collector.service import run_collector
from merger.day import merge_day
from simulator.app import Simulator
from simulator.config import SimConfig
from tests.merger.levels import Book, replay_parquet

SYMBOL = "BTCUSDT"
WINDOW = 1000  # levels a side compared (the snapshot limit)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _settings(store: Path, region: str, urls: dict[str, str], spool: Path) -> object:
    return load_settings(
        {
            "symbols": SYMBOL,
            "region": region,
            "collector": "c1",
            "store": str(store),
            "ws_url": urls["binance_ws"],
            "rest_url": urls["binance_rest"],
            "spool_dir": spool / region,
            "rotation_s": 2.0,
        }
    )


async def _record(tmp: Path, faults: object) -> tuple[Simulator, Book]:
    """Run the simulator and both collectors through ``faults``; return the final truth."""
    config = SimConfig(regions=("eu", "us"), symbols=(SYMBOL,), control_port=None,
                       levels_per_side=200)  # fmt: skip
    async with Simulator(config) as sim:
        regions = sim.ready_info()["regions"]
        assert isinstance(regions, dict)
        stops = {region: asyncio.Event() for region in regions}
        runs = [
            asyncio.create_task(
                run_collector(
                    _settings(tmp / "store", region, urls, tmp / "spool"),  # type: ignore[arg-type]
                    stops[region],
                    handle_signals=False,
                )
            )
            for region, urls in regions.items()
        ]
        await sim.wait_for_connections(2, within=10)
        await asyncio.sleep(2.0)
        await faults(sim)  # type: ignore[operator]
        sim.pause_market()
        await asyncio.sleep(1.5)
        truth = sim.truth(SYMBOL)
        for stop in stops.values():
            stop.set()
        assert await asyncio.wait_for(asyncio.gather(*runs), 30) == [0, 0]
    book: Book = {
        "bid": {Decimal(p): Decimal(q) for p, q in truth["bids"][:WINDOW]},
        "ask": {Decimal(p): Decimal(q) for p, q in truth["asks"][:WINDOW]},
    }
    return sim, book


async def _canonical(store: LocalStore, date: dt.date) -> tuple[Book, dict[str, object]]:
    key = canonical_key("binance", "depth", SYMBOL, date, "levels.parquet")
    book = replay_parquet(await store.get(key))
    top = {
        "bid": dict(sorted(book["bid"].items(), reverse=True)[:WINDOW]),
        "ask": dict(sorted(book["ask"].items())[:WINDOW]),
    }
    gaps = orjson.loads(await store.get(canonical_key("binance", "depth", SYMBOL, date,
                                                      "gaps.json")))  # fmt: skip
    return top, gaps


async def _recorded_ids(store: LocalStore) -> set[int]:
    """Every update id some collector recorded an event for."""
    ids: set[int] = set()
    async for info in store.list("raw/"):
        for record in read_object(await store.get(info.key), info.key).records:
            if isinstance(record, Msg) and b"depthUpdate" in record.raw[:200]:
                header = parse_depth_header(record.raw)
                ids.update(range(header.first_id, header.last_id + 1))
    return ids


async def _merge(store: LocalStore) -> dt.date:
    date = dt.datetime.now(dt.UTC).date()
    result = await merge_day(store, "binance", date)
    assert result.failed == []
    return date


async def test_staggered_drops_merge_to_the_true_book_without_gaps(tmp_path: Path) -> None:
    async def faults(sim: Simulator) -> None:
        for region in ("eu", "us"):  # one after the other, the standby covering each
            await sim.region_down(3.0, region=region)
            await asyncio.sleep(3.5)
            await sim.wait_for_connections(1, region=region, within=20)  # reconnected
            await asyncio.sleep(2.0)  # its snapshot and events are in before the next drop

    _, truth = await _record(tmp_path, faults)
    store = LocalStore(str(tmp_path / "store"))
    date = await _merge(store)
    book, gaps = await _canonical(store, date)

    assert gaps["unrecoverable"] == []
    assert book == truth
    filled = gaps["filled"]
    assert isinstance(filled, dict)
    assert set(filled) == {"eu.c1", "us.c1"}
    assert all(n > 0 for n in filled.values())


async def test_both_regions_down_gives_one_gap_over_the_missing_ids(tmp_path: Path) -> None:
    async def faults(sim: Simulator) -> None:
        await asyncio.gather(sim.region_down(3.0, region="eu"), sim.region_down(3.0, region="us"))
        await asyncio.sleep(3.5)
        for region in ("eu", "us"):
            await sim.wait_for_connections(1, region=region, within=20)
        await asyncio.sleep(2.0)

    _, truth = await _record(tmp_path, faults)
    store = LocalStore(str(tmp_path / "store"))
    date = await _merge(store)
    book, gaps = await _canonical(store, date)
    recorded = await _recorded_ids(store)
    missing = [i for i in range(min(recorded), max(recorded)) if i not in recorded]

    unrecoverable = gaps["unrecoverable"]
    assert isinstance(unrecoverable, list)
    assert len(unrecoverable) == 1
    (gap,) = unrecoverable
    assert missing
    assert gap["from_update_id"] <= missing[0]
    assert missing[-1] <= gap["to_update_id"]
    assert gap["reanchored_on"]["lastUpdateId"] == gap["to_update_id"]
    assert book == truth
