"""The simulator: one aiohttp server per region (WebSocket + REST on one port) around one
market (the model, or a replayed recording), plus the control API.

Usage from tests::

    async with Simulator(SimConfig(regions=("eu", "us"), send_log=True)) as sim:
        info = sim.ready_info()          # the `booktape sim` ready line
        await sim.region_down(2.0, region="eu")
        truth = sim.truth("BTCUSDT")

Every region serves the same market and the same update ids. Fault methods take
``region=None`` (all regions) or a region name, and connection faults also
``connection=<id>``; they return how many connections they touched.

Logs (``simulator.*`` loggers, fields bound with ``extra``; the library installs no
handler): start and stop here, every fault applied (``simulator.faults``), regions up and
down, connections opened and closed with their reason, limits hit and bans, replay
progress. Nothing is logged per frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import replace
from types import TracebackType
from typing import TypedDict

from aiohttp import WSCloseCode, web

from booktape.binance import Market
from booktape.coinbase import L3Book
from simulator.coinbase import CoinbaseBackend
from simulator.coinbase_book import CoinbaseBookModel
from simulator.config import SimConfig
from simulator.connection import Connection, LoggedFrame, wall_ms
from simulator.control import build_control_app
from simulator.faults import Malformed
from simulator.market import BID, MarketModel, SymbolModel
from simulator.recordings import load_recording
from simulator.region import Region
from simulator.replay import ReplayFeed
from simulator.streams import DepthBatcher, DepthStream
from simulator.symbols import SymbolSpec, default_spec
from simulator.wire import LevelFormatter, depth_body

log = logging.getLogger(__name__)
fault_log = logging.getLogger("simulator.faults")


class Truth(TypedDict):
    """The true book: every level, best first, as exchange strings."""

    symbol: str
    lastUpdateId: int | None  # None in replay before the recorded snapshot's point
    bids: list[list[str]]
    asks: list[list[str]]


def _scaled(spec: SymbolSpec, cfg: SimConfig) -> SymbolSpec:
    """A symbol's spec with the config's depth and activity overrides applied."""
    return replace(
        spec,
        levels_per_side=cfg.levels_per_side or spec.levels_per_side,
        activity=cfg.activity or spec.activity,
    )


class Simulator:
    """A local Binance spot exchange with fault injection; an async context manager."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.model: MarketModel | None = None
        self.replay: ReplayFeed | None = None
        self.regions: dict[str, Region] = {}
        self._formatters: dict[str, LevelFormatter] = {}
        self._specs: dict[str, SymbolSpec] = {}
        self._open: dict[int, Connection] = {}
        self._closed: OrderedDict[int, Connection] = OrderedDict()
        self._next_id = 1
        self._registry_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._control: web.AppRunner | None = None
        self._paused = False
        self.control_port: int | None = None
        self._started_ns = time.time_ns()
        self.coinbase = CoinbaseBackend(
            self._coinbase_model, self.config.products, lambda: self._paused
        )

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- lifecycle ---------------------------------------------------------------------

    def _coinbase_model(self, product: str) -> CoinbaseBookModel:
        cfg = self.config
        return CoinbaseBookModel(
            product,
            seed=cfg.seed,
            start_ns=self._started_ns,
            orders_per_side=cfg.coinbase_orders_per_side,
            activity=cfg.coinbase_activity,
            history=cfg.coinbase_history,
        )

    async def start(self) -> None:
        cfg = self.config
        self._started_ns = time.time_ns()
        if cfg.replay:
            recording = load_recording(list(cfg.replay))
            self.replay = ReplayFeed(recording, cfg.speed, self._deliver)
            specs = [default_spec(s) for s in self.replay.symbols()]
            self._tasks.append(asyncio.create_task(self.replay.run()))
            if not cfg.replay_waits_for_subscriber:
                self.replay.started.set()
        else:
            specs = [_scaled(default_spec(s), cfg) for s in cfg.symbols]
            self.model = MarketModel(
                specs,
                seed=cfg.seed,
                start_ms=wall_ms(),
                first_update_id=cfg.first_update_id,
                log_capacity=cfg.change_log_capacity,
            )
            if cfg.advance_interval is not None:
                self._tasks.append(asyncio.create_task(self._drive(cfg.advance_interval)))
        self._specs = {s.symbol: s for s in specs}
        self._formatters = {s.symbol: LevelFormatter(s.tick_e8, s.lot_e8) for s in specs}
        for index, name in enumerate(cfg.regions):
            port = cfg.port + index if cfg.port else 0
            region = Region(name, self, cfg.host, port)
            await region.start()
            self.regions[name] = region
        if cfg.control_port is not None:
            self._control = web.AppRunner(
                build_control_app(self), handle_signals=False, access_log=None, shutdown_timeout=1.0
            )
            await self._control.setup()
            site = web.TCPSite(self._control, cfg.host, cfg.control_port)
            await site.start()
            self.control_port = site.port
        log.info(
            "simulator started",
            extra={
                "regions": list(cfg.regions),
                "symbols": sorted(self._specs),
                "products": list(cfg.products),
                "market": str(self.market),
                "replay": [str(p) for p in cfg.replay],
                "control_port": self.control_port,
            },
        )

    async def stop(self) -> None:
        for conn in list(self._open.values()):
            conn.close(WSCloseCode.GOING_AWAY, "simulator stopping")
        for region in self.regions.values():
            await region.stop()
        if self._control is not None:
            await self._control.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        log.info("simulator stopped", extra={"connections": self._next_id - 1})

    async def _drive(self, interval: float) -> None:
        """Keep the model near the wall clock (readers also advance it on demand)."""
        assert self.model is not None
        while True:
            self._advance(self.model)
            await asyncio.sleep(interval)

    def _advance(self, model: MarketModel | SymbolModel) -> None:
        if not self._paused:
            model.advance_to(wall_ms())

    def pause_market(self) -> None:
        """Stop the market: no change until :meth:`resume_market` (exact ground truth)."""
        self._paused = True

    def resume_market(self) -> None:
        self._paused = False

    def ready_info(self) -> dict[str, object]:
        """The `booktape sim` ready line: bases per region, the first region's on top."""
        regions = {name: region.urls() for name, region in self.regions.items()}
        first = regions[self.config.regions[0]]
        host = self.regions[self.config.regions[0]].public_host
        control = f"http://{host}:{self.control_port}" if self.control_port else None
        return {**first, "control": control, "regions": regions}

    # --- what connections and REST read (the Backend protocols) ------------------------

    def specs(self) -> list[SymbolSpec]:
        return list(self._specs.values())

    def depth_batcher(self, stream: DepthStream, combined: bool) -> DepthBatcher | None:
        if self.model is None or stream.symbol not in self.model.symbols:
            return None
        symbol = self.model.symbols[stream.symbol]
        self._advance(symbol)
        return DepthBatcher(symbol, self._formatters[stream.symbol], stream, combined)

    def subscribed(self) -> None:
        if self.replay is not None:
            self.replay.started.set()

    @property
    def market(self) -> Market:
        """What is served: spot (the model), or the replayed recording's market."""
        return Market.SPOT if self.replay is None else self.replay.recording.market

    def depth_body(self, symbol: str, limit: int, market: Market = Market.SPOT) -> bytes | None:
        if market is not self.market:
            return None
        if self.replay is not None:
            return self.replay.depth_body(symbol, limit)
        if self.model is None or symbol not in self.model.symbols:
            return None
        model = self.model.symbols[symbol]
        self._advance(model)
        return depth_body(
            self._formatters[symbol],
            model.update_id,
            model.levels(BID, limit),
            model.levels(1 - BID, limit),
        )

    def _deliver(self, stream: str, payload: bytes, is_depth: bool) -> None:
        for conn in self._open.values():
            conn.deliver(stream, payload, is_depth)

    # --- the connection registry ------------------------------------------------------

    def new_connection_id(self) -> int:
        conn_id, self._next_id = self._next_id, self._next_id + 1
        return conn_id

    def opened(self, conn: Connection) -> None:
        self._open[conn.id] = conn
        self._registry_changed.set()

    def closed(self, conn: Connection) -> None:
        self._open.pop(conn.id, None)
        self._closed[conn.id] = conn
        while len(self._closed) > self.config.closed_connections_kept:
            self._closed.popitem(last=False)
        self._registry_changed.set()

    def connections(
        self, region: str | None = None, include_closed: bool = False
    ) -> list[Connection]:
        conns = list(self._open.values())
        if include_closed:
            conns += list(self._closed.values())
        return sorted(
            (c for c in conns if region is None or c.region == region), key=lambda c: c.id
        )

    def connection(self, conn_id: int) -> Connection:
        conn = self._open.get(conn_id) or self._closed.get(conn_id)
        if conn is None:
            raise KeyError(f"no connection {conn_id}")
        return conn

    def send_log(self, conn_id: int) -> list[LoggedFrame]:
        """What a connection was sent, in order, frames verbatim (needs ``send_log``)."""
        return self.connection(conn_id).send_log()

    async def wait_for_connections(
        self, count: int, region: str | None = None, within: float = 10.0
    ) -> list[Connection]:
        """Wait until at least ``count`` connections are open (tests)."""
        async with asyncio.timeout(within):
            while len(self.connections(region)) < count:
                self._registry_changed.clear()
                await self._registry_changed.wait()
        return self.connections(region)

    # --- ground truth ------------------------------------------------------------------

    def truth(self, symbol: str) -> Truth:
        """The true book now: every level, best first, and its update id."""
        symbol = symbol.upper()
        if self.replay is not None:
            book = self.replay.books.get(symbol)
            if book is None:
                raise KeyError(symbol)
            update_id, bids, asks = book.levels()
            return {
                "symbol": symbol,
                "lastUpdateId": update_id,
                "bids": [list(b) for b in bids],
                "asks": [list(a) for a in asks],
            }
        if self.model is None or symbol not in self.model.symbols:
            raise KeyError(symbol)
        model = self.model.symbols[symbol]
        self._advance(model)
        fmt = self._formatters[symbol]
        return {
            "symbol": symbol,
            "lastUpdateId": model.update_id,
            "bids": fmt.levels_list(model.levels(BID)),
            "asks": fmt.levels_list(model.levels(1 - BID)),
        }

    def coinbase_truth(self, product: str, sequence: int | None = None) -> L3Book:
        """The true Coinbase level-3 book now, or the one served at ``sequence`` (kept for
        the last ``coinbase_history`` books served); KeyError if unknown or forgotten."""
        model = self.coinbase.model(product.upper(), advance=sequence is None)
        if model is None:
            raise KeyError(product)
        if sequence is None:
            return model.snapshot()
        book = model.book_at(sequence)
        if book is None:
            raise KeyError(f"{product} book at sequence {sequence} not served or forgotten")
        return book

    # --- faults ------------------------------------------------------------------------

    def _regions(self, region: str | None) -> list[Region]:
        if region is None:
            return list(self.regions.values())
        if region not in self.regions:
            raise KeyError(f"no region {region!r}")
        return [self.regions[region]]

    def _targets(self, region: str | None, connection: int | None) -> list[Connection]:
        if connection is not None:
            conn = self._open.get(connection)
            if conn is None:
                raise KeyError(f"no open connection {connection}")
            return [conn]
        names = {r.name for r in self._regions(region)}
        return [c for c in self.connections() if c.region in names]

    @staticmethod
    def _applied(fault: str, region: str | None, touched: int | None, **details: object) -> None:
        fields = {"fault": fault, "region": region or "*", "connections": touched, **details}
        fault_log.info("fault applied", extra=fields)

    async def region_down(self, seconds: float, region: str | None = None) -> None:
        """Close the listening socket(s) for ``seconds``; open connections are dropped."""
        self._applied("region_down", region, None, seconds=seconds)
        for target in self._regions(region):
            await target.go_down(seconds)

    def drop(
        self, region: str | None = None, connection: int | None = None, abrupt: bool = True
    ) -> int:
        targets = self._targets(region, connection)
        for conn in targets:
            conn.close(WSCloseCode.GOING_AWAY, "dropped", abrupt=abrupt)
        self._applied("drop", region, len(targets), connection=connection, abrupt=abrupt)
        return len(targets)

    def stall(
        self, seconds: float | None = None, region: str | None = None, connection: int | None = None
    ) -> int:
        targets = self._targets(region, connection)
        for conn in targets:
            conn.stall(seconds)
        self._applied("stall", region, len(targets), connection=connection, seconds=seconds)
        return len(targets)

    def unstall(self, region: str | None = None, connection: int | None = None) -> int:
        targets = self._targets(region, connection)
        for conn in targets:
            conn.unstall()
        self._applied("unstall", region, len(targets), connection=connection)
        return len(targets)

    def skip_ids(
        self, count: int = 5, region: str | None = None, connection: int | None = None
    ) -> int:
        targets = self._targets(region, connection)
        for conn in targets:
            conn.skip_ids(count)
        self._applied("skip_ids", region, len(targets), connection=connection, count=count)
        return len(targets)

    def send_malformed(
        self, kind: Malformed | str, region: str | None = None, connection: int | None = None
    ) -> int:
        targets = self._targets(region, connection)
        for conn in targets:
            conn.inject_malformed(Malformed(kind))
        self._applied("malformed", region, len(targets), connection=connection, kind=str(kind))
        return len(targets)

    def server_shutdown(self, delay: float | None = None, region: str | None = None) -> int:
        targets = self._targets(region, None)
        delay = self.config.shutdown_delay if delay is None else delay
        for conn in targets:
            conn.announce_shutdown(delay)
        self._applied("server_shutdown", region, len(targets), delay=delay)
        return len(targets)

    def rest_errors(self, status: int, count: int = 1, region: str | None = None) -> None:
        """The next ``count`` REST requests of the region(s) get ``status``."""
        if status != 429 and not 500 <= status <= 599:
            raise ValueError(f"REST fault status {status} is neither 429 nor 5xx")
        for target in self._regions(region):
            target.faults.rest_errors.extend([status] * count)
        self._applied("rest_errors", region, None, status=status, count=count)

    def latency(self, ws_ms: float = 0.0, rest_ms: float = 0.0, region: str | None = None) -> None:
        for target in self._regions(region):
            target.faults.ws_latency_s = ws_ms / 1000
            target.faults.rest_latency_s = rest_ms / 1000
        self._applied("latency", region, None, ws_ms=ws_ms, rest_ms=rest_ms)

    def clear_faults(self, region: str | None = None) -> None:
        for target in self._regions(region):
            target.faults.clear()
        for conn in self._targets(region, None):
            conn.unstall()
        self._applied("clear", region, None)
