"""One region: a listening port serving WebSocket streams and REST, which can go down.

Routes: ``/ws``, ``/ws/<stream>[/<stream>...]`` (raw frames), ``/stream`` and
``/stream?streams=a/b/c`` (combined frames), ``/api/v3/...`` (:mod:`simulator.rest`).
A syntactically invalid stream name or more than ``max_streams`` streams in the URL gets
HTTP 400 on the upgrade; a well-formed name for an unknown symbol is accepted and silent,
as on Binance. Coinbase paths: ``/products/{id}/book`` and ``/v2/prices/...``
(:mod:`simulator.coinbase`), under the same region faults (down, latency, REST errors).

Connection attempts: at most ``max_connection_attempts`` WebSocket upgrade requests per
remote IP in any ``connection_attempt_window`` (Binance: 300 per 5 minutes), counted per
region (each region stands for the exchange as seen from one collector's location; every
loopback client shares 127.0.0.1, as every process on one host shares its IP). Binance's
documentation states the limit but not how an attempt beyond it is refused; the simulator
refuses the upgrade with HTTP 429, a Binance error body (``{"code":-1003,"msg":"Too many
connection attempts; ..."}``) and ``Retry-After`` (seconds until an attempt leaves the
window), like its REST limits. Refused attempts are not counted.

Going down closes the listening socket (new connections are refused by the kernel),
aborts every open WebSocket and HTTP connection of the region, and reopens the same port
when the window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aiohttp import WSCloseCode, web

from booktape.binance import Market
from simulator.coinbase import CoinbaseApi, CoinbaseBackend
from simulator.config import SimConfig
from simulator.connection import Connection
from simulator.faults import RegionFaults
from simulator.ratelimit import AttemptLimiter, WeightLimiter
from simulator.rest import RestApi
from simulator.streams import DepthBatcher, DepthStream, is_valid_stream_name
from simulator.symbols import SymbolSpec
from simulator.wire import too_many_connections

log = logging.getLogger(__name__)


class Hub(Protocol):
    """The simulator, as a region sees it."""

    config: SimConfig
    coinbase: CoinbaseBackend

    def depth_batcher(self, stream: DepthStream, combined: bool) -> DepthBatcher | None: ...

    def subscribed(self) -> None: ...

    @property
    def market(self) -> Market: ...

    def depth_body(self, symbol: str, limit: int, market: Market) -> bytes | None: ...

    def specs(self) -> list[SymbolSpec]: ...

    def new_connection_id(self) -> int: ...

    def opened(self, conn: Connection) -> None: ...

    def closed(self, conn: Connection) -> None: ...

    def connections(
        self, region: str | None = None, include_closed: bool = False
    ) -> list[Connection]: ...


class Region:
    """A region's server."""

    def __init__(self, name: str, hub: Hub, host: str, port: int) -> None:
        cfg = hub.config
        self.name = name
        self.host = host
        self.public_host = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104
        self.port = port
        self.faults = RegionFaults()
        self.limiter = WeightLimiter(
            cfg.weight_limit, cfg.rate_limit_window, cfg.retry_after, cfg.ban_base, cfg.ban_max
        )
        self.attempts = AttemptLimiter(cfg.max_connection_attempts, cfg.connection_attempt_window)
        self._hub = hub
        self._cfg = cfg
        app = web.Application()
        app.router.add_get("/ws", self._ws_raw)
        app.router.add_get("/ws/{streams:.+}", self._ws_raw)
        app.router.add_get("/stream", self._ws_combined)
        RestApi(hub, self.faults, self.limiter, name).add_routes(app)
        self.coinbase = CoinbaseApi(
            hub.coinbase, self.faults, name, cfg.coinbase_rate, cfg.coinbase_burst
        )
        self.coinbase.add_routes(app)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        self._site: web.TCPSite | None = None
        self._resume: asyncio.Task[None] | None = None

    def urls(self) -> dict[str, str]:
        base = f"{self.public_host}:{self.port}"
        return {
            "binance_ws": f"ws://{base}",
            "binance_rest": f"http://{base}",
            "coinbase_rest": f"http://{base}",
        }

    @property
    def is_down(self) -> bool:
        return self._site is None

    async def start(self) -> None:
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site.port
        self._site = site
        log.info("region up", extra={"region": self.name, "port": self.port})

    async def stop(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resume
        await self._runner.cleanup()
        self._site = None
        log.info("region stopped", extra={"region": self.name, "port": self.port})

    async def go_down(self, seconds: float) -> None:
        """Refuse connections for ``seconds``; open ones are aborted."""
        loop = asyncio.get_running_loop()
        self.faults.down_until = max(self.faults.down_until, loop.time() + seconds)
        log.warning(
            "region down",
            extra={"region": self.name, "port": self.port, "seconds": seconds},
        )
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for conn in self._hub.connections(self.name):
            conn.close(WSCloseCode.GOING_AWAY, "region down", abrupt=True)
        server = self._runner.server
        if server is not None:
            for handler in server.connections:
                handler.force_close()
        if self._resume is not None:
            self._resume.cancel()
        self._resume = asyncio.create_task(self._come_back(self.faults.down_until - loop.time()))

    async def _come_back(self, after: float) -> None:
        await asyncio.sleep(after)
        self.faults.down_until = 0.0
        await self._listen()

    # --- WebSocket upgrades -------------------------------------------------------------

    async def _ws_raw(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("streams", "")
        return await self._serve(request, [s for s in tail.split("/") if s], combined=False)

    async def _ws_combined(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("streams", "")
        return await self._serve(request, [s for s in raw.split("/") if s], combined=True)

    def _admit(self, request: web.Request) -> web.Response | None:
        """Count a connection attempt; a 429 response past the limit."""
        remote = request.remote or "?"
        retry_after, first = self.attempts.admit(remote, asyncio.get_running_loop().time())
        if not retry_after:
            return None
        if first:
            log.warning(
                "connection attempts limited",
                extra={"region": self.name, "remote": remote, "retry_after": retry_after},
            )
        body = too_many_connections(self.attempts.limit, self.attempts.window_s)
        headers = {"Retry-After": str(retry_after), "Content-Type": "application/json"}
        return web.Response(status=429, body=body, headers=headers)

    async def _serve(
        self, request: web.Request, streams: list[str], combined: bool
    ) -> web.StreamResponse:
        if self.is_down:  # a request that slipped in on an old keep-alive connection
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        refused = self._admit(request)
        if refused is not None:
            return refused
        if not all(is_valid_stream_name(s) for s in streams):
            return web.Response(status=400, text="Invalid request: invalid stream")
        if len(set(streams)) > self._cfg.max_streams:
            return web.Response(status=400, text="Invalid request: too many streams")
        ws = web.WebSocketResponse(
            autoping=False, autoclose=True, compress=False, max_msg_size=64 * 1024
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="Invalid request path")
        await ws.prepare(request)
        conn = Connection(
            conn_id=self._hub.new_connection_id(),
            region=self.name,
            ws=ws,
            request=request,
            backend=self._hub,
            faults=self.faults,
            combined_frames=combined,
        )
        self._hub.opened(conn)
        try:
            await conn.run(list(dict.fromkeys(streams)))
        finally:
            self._hub.closed(conn)
        return ws
