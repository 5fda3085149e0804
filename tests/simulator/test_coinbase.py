"""The simulator's Coinbase endpoints: book levels 1-3, price points, limits and faults."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal

import aiohttp
import orjson
import pytest

from booktape.coinbase import aggregate_l2, parse_l2_book, parse_l3_book, parse_price
from simulator.app import Simulator
from simulator.config import SimConfig
from tests.simulator.conftest import base, fast_config


def cb_config(**over: object) -> SimConfig:
    values: dict[str, object] = {
        "products": ("BTC-USD", "ETH-USD"),
        "coinbase_orders_per_side": 2000,
        "coinbase_activity": 50.0,
        "coinbase_rate": 1000.0,
        "coinbase_burst": 1000,
    }
    values.update(over)
    return fast_config(**values)


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as response:
        return response.status, await response.read()


async def test_level3_book_is_the_true_book_at_its_sequence(http: aiohttp.ClientSession) -> None:
    async with Simulator(cb_config()) as sim:
        url = base(sim, "coinbase_rest") + "/products/BTC-USD/book?level=3"
        status, body = await fetch(http, url)
        assert status == 200
        book = parse_l3_book(body)
        truth = sim.coinbase_truth("BTC-USD", book.sequence)
        assert (book.bids, book.asks) == (truth.bids, truth.asks)
        assert len(book.bids) > 1000
        assert len(book.asks) > 1000
        ids = [e.order_id for e in (*book.bids, *book.asks)]
        assert len(set(ids)) == len(ids)
        assert all(len(i) == 36 and i.count("-") == 4 for i in ids)  # UUID strings
        bids = [Decimal(e.price) for e in book.bids]
        asks = [Decimal(e.price) for e in book.asks]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks)
        assert bids[0] < asks[0]
        doc = orjson.loads(body)
        assert doc["time"].endswith("Z")
        assert doc["auction_mode"] is False


async def test_levels_agree_and_the_book_moves(http: aiohttp.ClientSession) -> None:
    async with Simulator(cb_config()) as sim:
        root = base(sim, "coinbase_rest") + "/products/ETH-USD/book?level="
        sim.pause_market()
        bodies = [await fetch(http, root + level) for level in ("1", "2", "3")]
        assert all(status == 200 for status, _ in bodies)
        l1, l2 = parse_l2_book(bodies[0][1], 1), parse_l2_book(bodies[1][1])
        l3 = parse_l3_book(bodies[2][1])
        assert l1.sequence == l2.sequence == l3.sequence
        expected = aggregate_l2(l3)
        assert l2.bids == expected.bids
        assert l2.asks == expected.asks
        assert (l1.bids, l1.asks) == (l2.bids[:1], l2.asks[:1])
        assert sum(e.num_orders for e in l2.bids) == len(l3.bids)
        sim.resume_market()
        await asyncio.sleep(0.2)  # 50 events a second
        later = parse_l3_book((await fetch(http, root + "3"))[1])
        assert later.sequence > l3.sequence
        assert later.bids != l3.bids or later.asks != l3.asks


async def test_the_book_is_deterministic_for_a_seed() -> None:
    from simulator.coinbase_book import CoinbaseBookModel  # noqa: PLC0415

    books = []
    for _ in range(2):
        model = CoinbaseBookModel("BTC-USD", seed=7, start_ns=0, orders_per_side=500)
        model.advance_to(10 * 10**9)
        books.append(model.snapshot())
    assert books[0] == books[1]
    other = CoinbaseBookModel("BTC-USD", seed=8, start_ns=0, orders_per_side=500)
    other.advance_to(10 * 10**9)
    assert other.snapshot().bids != books[0].bids


async def test_price_points(http: aiohttp.ClientSession) -> None:
    async with Simulator(cb_config()) as sim:
        root = base(sim, "coinbase_rest") + "/v2/prices/"
        sim.pause_market()
        points = {
            k: parse_price((await fetch(http, f"{root}BTC-USD/{k}"))[1])
            for k in ("buy", "sell", "spot")
        }
        truth = sim.coinbase_truth("BTC-USD")
        assert points["buy"].amount == truth.asks[0].price
        assert points["sell"].amount == truth.bids[0].price
        assert (
            Decimal(points["sell"].amount)
            <= Decimal(points["spot"].amount)
            <= Decimal(points["buy"].amount)
        )
        assert (points["spot"].base, points["spot"].currency) == ("BTC", "USD")
        xrp = parse_price((await fetch(http, root + "XRP-USD/spot"))[1])  # no book: a drift
        assert Decimal(xrp.amount) > 0
        status, body = await fetch(http, root + "BTC-USD/middle")
        assert status == 404
        assert b"not_found" in body


async def test_unknown_product_and_bad_level(http: aiohttp.ClientSession) -> None:
    async with Simulator(cb_config()) as sim:
        root = base(sim, "coinbase_rest")
        assert await fetch(http, root + "/products/DOGE-USD/book?level=2") == (
            404,
            b'{"message":"NotFound"}',
        )
        status, body = await fetch(http, root + "/products/BTC-USD/book?level=4")
        assert status == 400
        assert orjson.loads(body)["message"]


async def test_rate_limit_429_beyond_burst(http: aiohttp.ClientSession) -> None:
    async with Simulator(
        cb_config(coinbase_rate=10.0, coinbase_burst=15, coinbase_orders_per_side=50)
    ) as sim:
        url = base(sim, "coinbase_rest") + "/products/BTC-USD/book?level=1"
        started = time.monotonic()
        results = await asyncio.gather(*(fetch(http, url) for _ in range(25)))
        elapsed = time.monotonic() - started
        ok = sum(1 for status, _ in results if status == 200)
        limited = [body for status, body in results if status == 429]
        assert 15 <= ok <= 15 + int(elapsed * 10) + 1
        assert len(limited) == 25 - ok
        assert limited[0] == b'{"message":"Public rate limit exceeded"}'
        await asyncio.sleep(0.35)  # about 3 tokens back
        statuses = [(await fetch(http, url))[0] for _ in range(2)]
        assert statuses == [200, 200]
        prices = base(sim, "coinbase_rest") + "/v2/prices/BTC-USD/spot"
        assert (await fetch(http, prices))[0] == 200  # the prices API has its own bucket


async def test_faults_cover_coinbase_paths(http: aiohttp.ClientSession) -> None:
    async with Simulator(cb_config(coinbase_orders_per_side=50)) as sim:
        url = base(sim, "coinbase_rest") + "/products/BTC-USD/book?level=2"
        sim.rest_errors(503, count=1)
        sim.rest_errors(429, count=1)
        assert (await fetch(http, url))[0] == 503
        assert (await fetch(http, url))[0] == 429
        sim.latency(rest_ms=300)
        started = time.monotonic()
        assert (await fetch(http, url))[0] == 200
        assert time.monotonic() - started >= 0.3
        sim.clear_faults()
        await sim.region_down(0.5)
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(http, url)
        await asyncio.sleep(0.7)
        async with aiohttp.ClientSession() as fresh:
            assert (await fetch(fresh, url))[0] == 200


def test_cli_serves_products_and_announces_coinbase_rest() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "--products",
            "BTC-USD,SOL-USD",
            "--control-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        info = orjson.loads(proc.stdout.readline())
        rest = info["coinbase_rest"]
        assert info["regions"]["eu"]["coinbase_rest"] == rest

        async def check() -> tuple[int, int, int]:
            async with aiohttp.ClientSession() as http:
                sol = (await fetch(http, rest + "/products/SOL-USD/book?level=2"))[0]
                eth = (await fetch(http, rest + "/products/ETH-USD/book?level=2"))[0]
                async with http.get(info["control"] + "/coinbase/truth/SOL-USD") as response:
                    return sol, eth, response.status

        assert asyncio.run(check()) == (200, 404, 200)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
