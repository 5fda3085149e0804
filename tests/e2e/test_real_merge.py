"""Real data end to end: a real recording replayed to two collectors with drops, then merged.

The simulator replays the hftbacktest BTCUSDT recording (spot, and USD-M futures with its
``pu`` chain; COIN-M as the same USD-M frames renamed to BTCUSD_PERP with COIN-M's extra
``ps``/``pair`` fields, since no COIN-M recording is at hand) to two regions; each
region's connections are dropped over its own window, so neither collector holds the
whole stream. Ground truth is the recording itself: rebuilt from its REST snapshot plus its
diffs, the book after each recorded ``u``. The canonical ``levels.parquet``, replayed on
its own, must equal that book at EVERY event boundary of the canonical stream (top levels,
where both the recording and the snapshots the collectors took agree), with no
unrecoverable gap and fills from both regions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import io
import re
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from booktape.binance import Market
from booktape.book import OrderBook
from booktape.keys import canonical_key
from booktape.stores import LocalStore
from collector.config import CollectorSettings, load_settings
from collector.service import run_collector
from merger.day import merge_day
from simulator.app import Simulator
from simulator.config import SimConfig
from simulator.recordings import Recording, load_recording
from tests.realdata import rebuild

SYMBOL = "BTCUSDT"
TOP = 50  # levels a side compared at every event boundary
SPEED = 25.0  # spot 650 s in 26 s, futures 345 s in 14 s
DOWN_S = 1.5  # each region's outage (38 s of market at SPEED)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

Top = tuple[tuple[tuple[Decimal, Decimal], ...], tuple[tuple[Decimal, Decimal], ...]]


def _top(book: OrderBook) -> Top:
    bids, asks = book.top(TOP)
    return (
        tuple((Decimal(p), Decimal(q)) for p, q in bids),
        tuple((Decimal(p), Decimal(q)) for p, q in asks),
    )


def truth_by_update_id(recording: Recording, symbol: str = SYMBOL) -> dict[int, Top]:
    """The recording's own rebuild: u -> top of the book after the diff ending at u."""
    out: dict[int, Top] = {}
    rebuild(recording, symbol, lambda u, book: out.__setitem__(u, _top(book)))
    return out


COINM_SYMBOL = "BTCUSD_PERP"


def coinm_copy(usdm: Path, dest: Path) -> Path:
    """The USD-M recording as COIN-M would send it: the symbol ``BTCUSD_PERP`` with its
    pair (``"ps"`` in events, ``"symbol"``/``"pair"`` in snapshots); ids, ``pu`` and levels
    unchanged (the book rules are the same)."""
    with gzip.open(usdm, "rb") as src:
        data = src.read()
    data = data.replace(b'"stream":"btcusdt@', b'"stream":"btcusd_perp@')
    data = data.replace(b'"s":"BTCUSDT"', b'"s":"BTCUSD_PERP","ps":"BTCUSD"')
    data = re.sub(
        rb'(\{"lastUpdateId":[0-9]+,"E":[0-9]+,"T":[0-9]+,)',
        rb'\1"symbol":"BTCUSD_PERP","pair":"BTCUSD",',
        data,
    )
    with gzip.open(dest, "wb", compresslevel=1) as out:
        out.write(data)
    return dest


def canonical_steps(data: bytes) -> list[tuple[int, Top]]:
    """Replay levels.parquet alone: (last_update_id, top) after each event or book image."""
    table = pq.read_table(io.BytesIO(data))
    cols = table.to_pydict()
    steps: list[tuple[int, Top]] = []
    book: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
    in_image = False
    n = table.num_rows

    def top() -> Top:
        bids = sorted(book["bid"].items(), reverse=True)[:TOP]
        asks = sorted(book["ask"].items())[:TOP]
        return tuple(bids), tuple(asks)

    for i in range(n):
        snap = cols["is_snapshot"][i]
        if snap and not in_image:
            book = {"bid": {}, "ask": {}}  # an image after events: reset (Tardis rule)
        in_image = snap
        price, qty = Decimal(repr(cols["price"][i])), Decimal(repr(cols["qty"][i]))
        side = book[cols["side"][i]]
        if qty == 0:
            side.pop(price, None)
        else:
            side[price] = qty
        last = cols["last_update_id"][i]
        boundary = (
            i + 1 == n
            or cols["last_update_id"][i + 1] != last
            or cols["is_snapshot"][i + 1] != snap
            or cols["first_update_id"][i + 1] != cols["first_update_id"][i]
        )
        if boundary:
            steps.append((last, top()))
    return steps


def _decimal_top(top: Top) -> Top:
    """Normalise exchange strings and parquet floats to the same Decimal form."""
    return tuple(  # type: ignore[return-value]
        tuple((p.normalize(), q.normalize()) for p, q in side) for side in top
    )


def _settings(
    tmp: Path, region: str, urls: dict[str, str], market: Market, symbol: str
) -> CollectorSettings:
    return load_settings(
        {
            "symbols": symbol,
            "region": region,
            "collector": "c1",
            "market": market.value,
            "depth_speed_ms": 0 if market.is_futures else 100,
            "store": str(tmp / "store"),
            "spool_dir": tmp / "spool" / region,
            "ws_url": urls["binance_ws"],
            "rest_url": urls["binance_rest"],
            "rotation_s": 2.0,
        }
    )


async def _record(
    tmp: Path, files: tuple[Path, ...], market: Market, drops: list[float], symbol: str
) -> None:
    config = SimConfig(regions=("eu", "us"), symbols=(symbol,), replay=files, speed=SPEED,
                       control_port=None, send_queue_frames=100_000)  # fmt: skip
    async with Simulator(config) as sim:
        regions = sim.ready_info()["regions"]
        assert isinstance(regions, dict)
        stops = {region: asyncio.Event() for region in regions}
        runs = [
            asyncio.create_task(
                run_collector(_settings(tmp, region, urls, market, symbol), stops[region],
                              handle_signals=False)
            )
            for region, urls in regions.items()
        ]  # fmt: skip
        await sim.wait_for_connections(2, within=15)
        assert sim.replay is not None
        for region, at in zip(("eu", "us"), drops, strict=True):  # one after the other
            await asyncio.sleep(at)
            await sim.region_down(DOWN_S, region=region)
            await asyncio.sleep(DOWN_S + 0.5)
            await sim.wait_for_connections(1, region=region, within=20)  # back: the standby
            await asyncio.sleep(1.0)  # covered; now it records again before the next drop
        await asyncio.wait_for(sim.replay.finished.wait(), 120)
        await asyncio.sleep(1.0)
        for stop in stops.values():
            stop.set()
        assert await asyncio.wait_for(asyncio.gather(*runs), 30) == [0, 0]


@pytest.mark.parametrize(
    ("market", "exchange", "files", "drops"),
    [
        (Market.SPOT, "binance",
         ("hftbacktest/spot/btcusdt_20240808.gz", "hftbacktest/spot/btcusdt_20240809.gz"),
         [3.0, 3.0]),
        (Market.USDM, "binance-usdm", ("hftbacktest/usdm/btcusdt_20240808.gz",), [1.5, 1.0]),
        (Market.COINM, "binance-coinm", ("hftbacktest/usdm/btcusdt_20240808.gz",), [1.5, 1.0]),
    ],
)  # fmt: skip
async def test_real_recording_through_two_collectors_merges_to_its_own_book(
    real_data: Path, tmp_path: Path, market: Market, exchange: str, files: tuple[str, ...],
    drops: list[float],
) -> None:  # fmt: skip
    paths = tuple(real_data / f for f in files)
    symbol = SYMBOL
    if market is Market.COINM:
        paths = tuple(coinm_copy(p, tmp_path / f"coinm-{p.name}") for p in paths)
        symbol = COINM_SYMBOL
    recording = load_recording(paths)
    assert recording.market is market
    truth = truth_by_update_id(recording, symbol)
    await _record(tmp_path, paths, market, drops, symbol)
    store = LocalStore(str(tmp_path / "store"))
    date = dt.datetime.now(dt.UTC).date()

    result = await merge_day(store, exchange, date)

    assert result.failed == []
    gaps = orjson.loads(await store.get(canonical_key(exchange, "depth", symbol, date,
                                                      "gaps.json")))  # fmt: skip
    assert gaps["unrecoverable"] == []
    assert set(gaps["filled"]) == {"eu.c1", "us.c1"}  # each region covered the other's drop
    assert all(s["gaps"] >= 1 for s in gaps["sources"].values())  # both really lost data
    assert gaps["audit"]["mismatched"] == 0
    steps = canonical_steps(await store.get(canonical_key(exchange, "depth", symbol, date,
                                                          "levels.parquet")))  # fmt: skip
    assert len(steps) > 0.9 * len(truth)  # nearly the whole recording, at every event
    for update_id, top in steps:
        assert update_id in truth, f"canonical id {update_id} is not a recorded u"
        assert _decimal_top(top) == _decimal_top(truth[update_id]), f"book differs at {update_id}"
