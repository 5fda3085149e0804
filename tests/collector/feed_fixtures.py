"""Helpers for the feed tests: an in-memory sink, a cheap simulator, a running feed.

Imported explicitly by tests/collector/test_{feed,snapshots,symbols,rotation}.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from booktape.binance import DepthHeader, FrameKind, classify_frame, parse_depth_header
from booktape.codec import Bad, Conn, DataRecord, Header, Msg, Snap, decode_line
from booktape.keys import validate_name
from collector.binance_feed import BinanceFeed, FeedTuning
from collector.chunks import check_item
from collector.config import CollectorSettings
from collector.metrics import Metrics
from collector.snapshots import SnapshotTimers
from collector.types import Item
from simulator.app import Simulator
from simulator.config import SimConfig


class ListSink:
    """A RecordSink that keeps every item in memory, in order. It checks every item the
    way the pipeline does, also those a caller vouches for (``checked=True``): a feed
    that vouches wrongly fails its tests."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.vouched = 0  # items put with checked=True

    async def put(self, item: Item) -> None:
        check_item(item)
        self.items.append(item)

    async def put_many(self, items: list[Item], *, checked: bool = False) -> None:
        for item in items:
            check_item(item)
            validate_name("symbol", item.symbol)
        if checked:
            self.vouched += len(items)
        self.items.extend(items)

    def records(self, symbol: str | None = None) -> list[DataRecord]:
        out: list[DataRecord] = []
        for item in self.items:
            if symbol is None or item.symbol == symbol:
                record = decode_line(item.line)
                assert not isinstance(record, Header), "feeds never write headers"
                out.append(record)
        return out

    def msgs(self, symbol: str | None = None) -> list[Msg]:
        return [r for r in self.records(symbol) if isinstance(r, Msg)]

    def snaps(self, symbol: str | None = None) -> list[Snap]:
        return [r for r in self.records(symbol) if isinstance(r, Snap)]

    def conns(self, symbol: str | None = None, ev: str | None = None) -> list[Conn]:
        return [
            r for r in self.records(symbol) if isinstance(r, Conn) and (ev is None or r.ev == ev)
        ]

    def bads(self, symbol: str | None = None) -> list[Bad]:
        return [r for r in self.records(symbol) if isinstance(r, Bad)]

    def depth(self, symbol: str, conn: str | None = None) -> list[tuple[str, DepthHeader]]:
        """(connection id, header) of every depth event recorded for ``symbol``."""
        out = []
        for msg in self.msgs(symbol):
            if classify_frame(msg.raw) is FrameKind.DEPTH and (conn is None or msg.c == conn):
                out.append((msg.c, parse_depth_header(msg.raw)))
        return out

    def symbols(self) -> set[str]:
        return {item.symbol for item in self.items}


CHEAP = {"levels_per_side": 40, "activity": 0.3}  # 200 symbols start in well under a second


def sim_config(symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"), **over: Any) -> SimConfig:
    base: dict[str, Any] = {"symbols": symbols, "send_log": True, "control_port": None}
    base.update(over)
    return SimConfig(**base)


@contextlib.asynccontextmanager
async def simulated(config: SimConfig) -> AsyncIterator[Simulator]:
    async with Simulator(config) as sim:
        yield sim


def settings_for(sim: Simulator, tmp: Path, **over: Any) -> CollectorSettings:
    """Collector settings pointing at the simulator's first region, with short timers."""
    info = sim.ready_info()
    base: dict[str, Any] = {
        "symbols": tuple(sim.config.symbols),
        "region": "eu",
        "collector": "c1",
        "store": str(tmp),
        "ws_url": str(info["binance_ws"]),
        "rest_url": str(info["binance_rest"]),
        "snapshot_limit": 100,
        "stale_after_s": 5.0,
    }
    base.update(over)
    return CollectorSettings(**base)


def fast_tuning(**over: Any) -> FeedTuning:
    base: dict[str, Any] = {
        "handover_timeout_s": 5.0,
        "backoff_base_s": 0.1,
        "backoff_cap_s": 1.0,
        "weight_limit": 6000,
        "weight_window_s": 60.0,
        "close_timeout_s": 1.0,
        "snapshots": SnapshotTimers(error_base_s=0.2, error_cap_s=1.0, stale_retry_s=0.2),
    }
    base.update(over)
    return FeedTuning(**base)


class Running:
    """A feed running in a task, with its sink and metrics."""

    def __init__(self, feed: BinanceFeed, sink: ListSink, metrics: Metrics) -> None:
        self.feed = feed
        self.sink = sink
        self.metrics = metrics
        self.task: asyncio.Task[None] | None = None

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    async def until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (fails the test after ``within`` seconds)."""

        def check() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # raise what ended the feed
                raise AssertionError("the feed ended")
            return predicate()

        await eventually(check, within)


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_feed(
    settings: CollectorSettings, tuning: FeedTuning | None = None, seed: int = 1
) -> AsyncIterator[Running]:
    sink, metrics = ListSink(), Metrics()
    async with aiohttp.ClientSession() as session:
        feed = BinanceFeed(
            settings,
            sink,
            metrics,
            session=session,
            rand=random.Random(seed),
            tuning=tuning or fast_tuning(),
        )
        running = Running(feed, sink, metrics)
        running.task = asyncio.create_task(feed.run())
        try:
            yield running
        finally:
            if not running.task.done():  # a finished one was awaited by the test
                running.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running.task


def text_frames(sim: Simulator, conn_id: int) -> list[bytes]:
    """What the simulator sent on a connection as text frames, in order."""
    return [f.data for f in sim.send_log(conn_id) if f.kind == "text"]


def gaps(headers: list[DepthHeader]) -> list[tuple[int, int]]:
    """Where the union of recorded events (any connection) leaves ids out: (cur, next prev).

    Events are taken in id order; the book id ``cur`` advances by the splice rule.
    """
    ordered = sorted(headers, key=lambda h: (h.prev_id, h.last_id))
    holes: list[tuple[int, int]] = []
    cur: int | None = None
    for header in ordered:
        if cur is None:
            cur = header.last_id
            continue
        if header.last_id <= cur:
            continue
        if header.prev_id > cur:
            holes.append((cur, header.prev_id))
        cur = header.last_id
    return holes


def pairwise(items: list[int]) -> Iterator[tuple[int, int]]:
    return itertools.pairwise(items)
