"""The REST endpoints of one region: depth, exchangeInfo, ping and time.

Depth is served at the path of the market being served: ``/api/v3/depth`` (spot: the
model, or a spot recording; limit 1..5000, default 100, weights 5/25/50/250), plus
``/fapi/v1/depth`` or ``/dapi/v1/depth`` when replaying a USD-M or COIN-M recording
(limit 1..1000, default 500, weights 2/5/10/20; the recorded body shape, with ``E`` and
``T``). A limit past the maximum is truncated to it. The spot path of a futures replay
answers ``Invalid symbol``: a spot client must not take futures ids for spot ones.

Every ``/api/v3`` response carries ``x-mbx-used-weight`` and ``x-mbx-used-weight-1m``;
weights and bans come from :class:`simulator.ratelimit.WeightLimiter` (per IP, windows
aligned on the wall clock like Binance's minutes). Region faults apply first: added
latency, then injected statuses for the next N requests. Errors use Binance's bodies
(``{"code":-1121,"msg":"Invalid symbol."}`` and so on).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from aiohttp import web

from booktape.binance import SPECS, Market, depth_weight
from simulator.config import SimConfig
from simulator.faults import RegionFaults
from simulator.ratelimit import Verdict, WeightLimiter
from simulator.symbols import SymbolSpec
from simulator.wire import (
    ILLEGAL_SYMBOL,
    INTERNAL_ERROR,
    INVALID_SYMBOL,
    MISSING_SYMBOL,
    illegal_limit,
    ip_banned,
    too_much_weight,
)

log = logging.getLogger(__name__)

JSON = "application/json;charset=UTF-8"
Handler = Callable[[web.Request], Awaitable[web.Response]]
_SYMBOL = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
EXCHANGE_INFO_WEIGHT = 20


class RestBackend(Protocol):
    """What the REST endpoints read from the simulator."""

    config: SimConfig

    @property
    def market(self) -> Market:
        """The market served: spot for the model, the recording's in replay."""

    def depth_body(self, symbol: str, limit: int, market: Market) -> bytes | None:
        """The depth body for a symbol of ``market`` now, None for an unknown symbol."""

    def specs(self) -> list[SymbolSpec]:
        """The listed symbols."""


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type=None)


def _symbol_info(spec: SymbolSpec) -> dict[str, object]:
    return {
        "symbol": spec.symbol,
        "status": "TRADING",
        "baseAsset": spec.base_asset,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote_asset,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": spec.tick_size,
                "maxPrice": "1000000.00000000",
                "tickSize": spec.tick_size,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": spec.step_size,
                "maxQty": "9000.00000000",
                "stepSize": spec.step_size,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
    }


class RestApi:
    """The ``/api/v3`` routes of one region."""

    def __init__(
        self, backend: RestBackend, faults: RegionFaults, limiter: WeightLimiter, region: str
    ) -> None:
        self._region = region
        self._backend = backend
        self._faults = faults
        self._limiter = limiter
        self._cfg = backend.config

    def add_routes(self, app: web.Application) -> None:
        markets = {Market.SPOT, self._backend.market}
        for market in sorted(markets):
            app.router.add_get(SPECS[market].depth_path, self._depth_route(market))
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info)
        app.router.add_get("/api/v3/ping", self.ping)
        app.router.add_get("/api/v3/time", self.server_time)

    async def _admit(
        self, request: web.Request, weight: int
    ) -> tuple[web.Response | None, dict[str, str]]:
        """Latency, injected faults, then the weight limit: a response to refuse with."""
        if self._faults.rest_latency_s > 0:
            await asyncio.sleep(self._faults.rest_latency_s)
        injected = self._faults.next_rest_error()
        ip = request.remote or "?"
        now = time.time()
        if injected is not None:
            headers = self._weight_headers(self._limiter.used(ip, now))
            if injected == 429:
                headers["Retry-After"] = str(max(1, round(self._cfg.retry_after or 1)))
                return _json(
                    too_much_weight(self._limiter.limit, self._limiter.window_s), 429, headers
                ), headers
            if injected in (502, 504):  # a gateway's page, not Binance's JSON
                headers["Content-Type"] = "text/html"
                page = f"<html><body><h1>{injected} Gateway error</h1></body></html>"
                return web.Response(status=injected, headers=headers, body=page.encode()), headers
            return _json(INTERNAL_ERROR, injected, headers), headers
        decision = self._limiter.check(ip, weight, now)
        headers = self._weight_headers(decision.used)
        if decision.verdict is Verdict.OK:
            return None, headers
        headers["Retry-After"] = str(decision.retry_after)
        if decision.verdict is Verdict.TOO_MANY:
            body = too_much_weight(self._limiter.limit, self._limiter.window_s)
        else:
            body = ip_banned(int(decision.banned_until * 1000))
        if decision.new:
            message = "ip banned" if decision.verdict is Verdict.BANNED else "weight limit hit"
            fields = {"region": self._region, "remote": ip, "status": int(decision.verdict)}
            log.warning(message, extra={**fields, "retry_after": decision.retry_after})
        return _json(body, int(decision.verdict), headers), headers

    @staticmethod
    def _weight_headers(used: int) -> dict[str, str]:
        return {
            "x-mbx-used-weight": str(used),
            "x-mbx-used-weight-1m": str(used),
            "Content-Type": JSON,
        }

    def _depth_route(self, market: Market) -> Handler:
        async def route(request: web.Request) -> web.Response:
            return await self.depth(request, market)

        return route

    async def depth(self, request: web.Request, market: Market = Market.SPOT) -> web.Response:
        maximum = SPECS[market].max_depth_limit
        raw_limit = request.query.get("limit", "500" if market.is_futures else "100")
        limit = int(raw_limit) if raw_limit.isdigit() and len(raw_limit) <= 20 else None
        weight = depth_weight(market, min(limit, maximum) if limit else 1)
        refused, headers = await self._admit(request, weight)
        if refused is not None:
            return refused
        symbol = request.query.get("symbol", "")
        if not symbol:
            return _json(MISSING_SYMBOL, 400, headers)
        if not _SYMBOL.match(symbol):
            return _json(ILLEGAL_SYMBOL, 400, headers)
        if limit is None or limit < 1:
            return _json(illegal_limit(maximum), 400, headers)
        body = self._backend.depth_body(symbol, min(limit, maximum), market)  # truncated
        if body is None:
            return _json(INVALID_SYMBOL, 400, headers)
        return _json(body, 200, headers)

    async def exchange_info(self, request: web.Request) -> web.Response:
        refused, headers = await self._admit(request, EXCHANGE_INFO_WEIGHT)
        if refused is not None:
            return refused
        specs = {s.symbol: s for s in self._backend.specs()}
        wanted = list(specs)
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                listed = orjson.loads(request.query["symbols"])
            except orjson.JSONDecodeError:
                listed = None
            if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
                return _json(INVALID_SYMBOL, 400, headers)
            wanted = [str(s) for s in listed]
        if any(s not in specs for s in wanted):
            return _json(INVALID_SYMBOL, 400, headers)
        body = {
            "timezone": "UTC",
            "serverTime": time.time_ns() // 1_000_000,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self._limiter.limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(specs[s]) for s in wanted],
        }
        return _json(orjson.dumps(body), 200, headers)

    async def ping(self, request: web.Request) -> web.Response:
        refused, headers = await self._admit(request, 1)
        return refused or _json(b"{}", 200, headers)

    async def server_time(self, request: web.Request) -> web.Response:
        refused, headers = await self._admit(request, 1)
        return refused or _json(
            f'{{"serverTime":{time.time_ns() // 1_000_000}}}'.encode(), 200, headers
        )
