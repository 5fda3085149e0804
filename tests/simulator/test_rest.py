"""REST: depth snapshots, weights and headers, 429 then 418, Binance's error bodies."""

from __future__ import annotations

import asyncio

import aiohttp

from simulator.app import Simulator
from simulator.ratelimit import Verdict, WeightLimiter
from tests.simulator.conftest import base, fast_config, get_json


def _rest(sim: Simulator) -> str:
    return f"{base(sim, 'binance_rest')}/api/v3"


async def test_depth_weights_and_used_weight_headers(http: aiohttp.ClientSession) -> None:
    async with Simulator(fast_config(rate_limit_window=1e9)) as sim:  # no window edge
        sim.pause_market()  # the book's depth stays what the truth says
        await _weights(sim, http)


async def _weights(sim: Simulator, http: aiohttp.ClientSession) -> None:
    used = 0
    for limit, weight, levels in (
        (None, 5, 100),
        ("500", 25, 500),
        ("1000", 50, 1000),
        ("5000", 250, 5000),
        ("7000", 250, 5000),
    ):
        params = {"symbol": "BTCUSDT"} | ({"limit": limit} if limit else {})
        status, body, headers = await get_json(http, f"{_rest(sim)}/depth", **params)
        used += weight
        assert status == 200
        assert headers["X-MBX-USED-WEIGHT-1M"] == str(used)
        assert headers["x-mbx-used-weight"] == str(used)
        assert list(body) == ["lastUpdateId", "bids", "asks"]
        assert len(body["bids"]) == min(levels, len(sim.truth("BTCUSDT")["bids"]))
        assert float(body["bids"][0][0]) < float(body["asks"][0][0])
        assert float(body["bids"][0][0]) > float(body["bids"][1][0])
    assert body["lastUpdateId"] >= sim.config.first_update_id - 1


async def test_the_snapshot_is_the_true_book_now(http: aiohttp.ClientSession) -> None:
    async with Simulator(fast_config()) as sim:
        sim.pause_market()
        status, body, _ = await get_json(
            http, f"{_rest(sim)}/depth", symbol="BTCUSDT", limit="5000"
        )
        truth = sim.truth("BTCUSDT")
    assert status == 200
    assert body["lastUpdateId"] == truth["lastUpdateId"]
    assert body["bids"] == truth["bids"][:5000]
    assert body["asks"] == truth["asks"][:5000]


async def test_bad_requests_get_binance_errors(sim: Simulator, http: aiohttp.ClientSession) -> None:
    cases = [
        ({"symbol": "NOSUCHCOIN"}, -1121, "Invalid symbol."),
        ({"symbol": "btcusdt"}, -1100, "Illegal characters found in parameter 'symbol'"),
        ({}, -1102, "Mandatory parameter 'symbol'"),
        ({"symbol": "BTCUSDT", "limit": "abc"}, -1100, "parameter 'limit'"),
        ({"symbol": "BTCUSDT", "limit": "0"}, -1100, "parameter 'limit'"),
    ]
    for params, code, message in cases:
        status, body, _ = await get_json(http, f"{_rest(sim)}/depth", **params)
        assert status == 400
        assert body["code"] == code
        assert message in body["msg"]


async def test_exchange_info_ping_and_time(sim: Simulator, http: aiohttp.ClientSession) -> None:
    status, info, headers = await get_json(http, f"{_rest(sim)}/exchangeInfo")
    assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == "20"
    assert info["timezone"] == "UTC"
    assert isinstance(info["serverTime"], int)
    limits = {(r["rateLimitType"], r["interval"]): r["limit"] for r in info["rateLimits"]}
    assert limits[("REQUEST_WEIGHT", "MINUTE")] == 6000
    assert ("ORDERS", "SECOND") in limits
    assert ("RAW_REQUESTS", "MINUTE") in limits
    (btc,) = info["symbols"]
    assert (btc["symbol"], btc["status"], btc["baseAsset"], btc["quoteAsset"]) == (
        "BTCUSDT",
        "TRADING",
        "BTC",
        "USDT",
    )
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    status, _, _ = await get_json(http, f"{_rest(sim)}/exchangeInfo", symbol="NOPE")
    assert status == 400
    assert (await get_json(http, f"{_rest(sim)}/ping"))[1] == {}
    status, body, _ = await get_json(http, f"{_rest(sim)}/time")
    assert status == 200
    assert isinstance(body["serverTime"], int)


async def test_over_the_limit_429_then_418_when_not_backing_off(
    http: aiohttp.ClientSession,
) -> None:
    config = fast_config(weight_limit=30, ban_base=0.5, rate_limit_window=1e9)
    async with Simulator(config) as sim:
        url = f"{_rest(sim)}/depth"
        for _ in range(6):
            assert (await get_json(http, url, symbol="BTCUSDT"))[0] == 200
        status, body, headers = await get_json(http, url, symbol="BTCUSDT")
        assert status == 429
        assert body["code"] == -1003
        assert int(headers["Retry-After"]) >= 1
        assert "request weight" in body["msg"]
        status, body, headers = await get_json(http, url, symbol="BTCUSDT")
        assert status == 418
        assert body["code"] == -1003
        assert "IP banned" in body["msg"]
        assert headers["Retry-After"] == "1"
        await asyncio.sleep(0.6)  # the ban is over; the window is still full
        status, _, _ = await get_json(http, url, symbol="BTCUSDT")
        assert status == 429
        status, _, headers = await get_json(http, url, symbol="BTCUSDT")
        assert status == 418  # a second offence: the ban doubled


def test_limiter_windows_backoff_and_escalating_bans() -> None:
    limiter = WeightLimiter(limit=10, window_s=60, retry_after=None, ban_base=120, ban_max=300)
    assert limiter.check("ip", 10, 0.0).verdict is Verdict.OK
    refused = limiter.check("ip", 1, 10.0)
    assert refused.verdict is Verdict.TOO_MANY
    assert refused.retry_after == 50
    assert limiter.check("other", 5, 10.0).verdict is Verdict.OK  # per IP
    first_ban = limiter.check("ip", 1, 11.0)
    assert first_ban.verdict is Verdict.BANNED
    assert first_ban.retry_after == 120
    assert limiter.check("ip", 1, 100.0).retry_after == 31  # still banned
    assert limiter.check("ip", 1, 131.0).verdict is Verdict.OK  # a new window, ban over
    assert limiter.check("ip", 10, 132.0).verdict is Verdict.TOO_MANY
    assert limiter.check("ip", 1, 133.0).retry_after == 240  # doubled
    limiter.check("ip", 10, 1000.0)
    limiter.check("ip", 10, 1000.5)
    assert limiter.check("ip", 1, 1001.0).retry_after == 300  # capped at ban_max
    assert limiter.used("ip", 1000.0) == 10
    assert limiter.used("ip", 2000.0) == 0
