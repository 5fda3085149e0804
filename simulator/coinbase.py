"""The Coinbase REST endpoints of one region: Exchange API books and v2 price points.

Routes (served on every region's port, next to the Binance ones):

- ``GET /products/{id}/book?level=1|2|3`` (default 1): the product's book now
  (:mod:`simulator.coinbase_book`); an unknown product is 404 ``{"message":"NotFound"}``,
  a bad level 400 ``{"message":"Invalid level"}``.
- ``GET /v2/prices/{BASE}-{QUOTE}/{buy|sell|spot}``: a price point
  ``{"data":{"amount":..,"base":..,"currency":..}}``: best ask, best bid and their mid of
  the modelled ``BASE-USD`` book, or a slow deterministic drift for other currencies; an
  unknown kind or pair is 404 ``{"errors":[{"id":"not_found","message":"Not found"}]}``.

Public rate limit: a token bucket per remote IP and region, ``coinbase_rate`` requests a
second with a burst of ``coinbase_burst`` (Coinbase: 10/s, burst 15); a request beyond it
gets 429 ``{"message":"Public rate limit exceeded"}`` and no ``Retry-After`` (Coinbase
sends none). The v2 prices API is another host on Coinbase: it has its own bucket here.
Region faults apply first, as for Binance: added REST latency, then injected statuses
(429 with the body above, 502/504 as a gateway's HTML page, other 5xx as
``{"message":"Internal server error"}``); a region that is down refuses every path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from simulator.coinbase_book import CoinbaseBookModel, fallback_prices, price_body
from simulator.faults import RegionFaults

log = logging.getLogger(__name__)

JSON = "application/json; charset=utf-8"
RATE_LIMITED = b'{"message":"Public rate limit exceeded"}'
NOT_FOUND = b'{"message":"NotFound"}'
INVALID_LEVEL = b'{"message":"Invalid level"}'
INTERNAL = b'{"message":"Internal server error"}'
V2_NOT_FOUND = b'{"errors":[{"id":"not_found","message":"Not found"}]}'
KINDS = {"buy": 0, "sell": 1, "spot": 2}


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Per-IP token buckets (pure: the caller passes the time, float seconds)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, ip: str, now: float) -> bool:
        """Take one token for ``ip``: False when the bucket is empty (a 429)."""
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True


class CoinbaseBackend:
    """What the routes read: the product models, shared by every region, built on first use
    (a simulator that nobody asks for Coinbase books pays nothing for them)."""

    def __init__(
        self,
        factory: Callable[[str], CoinbaseBookModel],
        products: tuple[str, ...],
        paused: Callable[[], bool],
    ) -> None:
        self.products = products
        self._factory = factory
        self._models: dict[str, CoinbaseBookModel] = {}
        self._paused = paused

    def model(self, product: str, *, advance: bool = True) -> CoinbaseBookModel | None:
        """The product's model (None if not served), caught up with the clock."""
        if product not in self.products:
            return None
        model = self._models.get(product)
        if model is None:
            model = self._models[product] = self._factory(product)
        if advance and not self._paused():
            model.advance_to(time.time_ns())
        return model

    def book_body(self, product: str, level: int) -> bytes | None:
        model = self.model(product)
        return None if model is None else model.body(level, time.time_ns())

    def price_body(self, base: str, quote: str, kind: str) -> bytes:
        model = self.model(f"{base}-{quote}")
        points = model.prices() if model is not None else None
        if points is None:
            points = fallback_prices(base, time.time_ns())
        return price_body(base, quote, points[KINDS[kind]])


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": JSON})


class CoinbaseApi:
    """The Coinbase routes of one region."""

    def __init__(
        self, backend: CoinbaseBackend, faults: RegionFaults, region: str, rate: float, burst: int
    ) -> None:
        self._backend = backend
        self._faults = faults
        self._region = region
        self.exchange_limit = TokenBuckets(rate, burst)
        self.prices_limit = TokenBuckets(rate, burst)
        self._limited: set[tuple[str, str]] = set()  # (api, ip) refusing since last admitted

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/products/{product}/book", self.book)
        app.router.add_get("/v2/prices/{pair}/{kind}", self.price)

    async def _admit(self, request: web.Request, api: str) -> web.Response | None:
        if self._faults.rest_latency_s > 0:
            await asyncio.sleep(self._faults.rest_latency_s)
        injected = self._faults.next_rest_error()
        if injected == 429:
            return _json(RATE_LIMITED, 429)
        if injected in (502, 504):
            page = f"<html><body><h1>{injected} Gateway error</h1></body></html>"
            return web.Response(
                status=injected, body=page.encode(), headers={"Content-Type": "text/html"}
            )
        if injected is not None:
            return _json(INTERNAL, injected)
        ip = request.remote or "?"
        buckets = self.exchange_limit if api == "exchange" else self.prices_limit
        if buckets.take(ip, time.monotonic()):
            self._limited.discard((api, ip))
            return None
        if (api, ip) not in self._limited:
            self._limited.add((api, ip))
            log.warning(
                "coinbase rate limit hit", extra={"region": self._region, "remote": ip, "api": api}
            )
        return _json(RATE_LIMITED, 429)

    async def book(self, request: web.Request) -> web.Response:
        refused = await self._admit(request, "exchange")
        if refused is not None:
            return refused
        raw_level = request.query.get("level", "1")
        if raw_level not in ("1", "2", "3"):
            return _json(INVALID_LEVEL, 400)
        body = self._backend.book_body(request.match_info["product"].upper(), int(raw_level))
        return _json(NOT_FOUND, 404) if body is None else _json(body)

    async def price(self, request: web.Request) -> web.Response:
        refused = await self._admit(request, "prices")
        if refused is not None:
            return refused
        base, _, quote = request.match_info["pair"].upper().partition("-")
        kind = request.match_info["kind"]
        if kind not in KINDS or not base.isalnum() or not quote.isalnum():
            return _json(V2_NOT_FOUND, 404)
        return _json(self._backend.price_body(base, quote, kind))
