"""Fault injection through the Python API and the control API."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from booktape.binance import is_continuous, parse_depth_header
from simulator.app import Simulator
from tests.simulator.conftest import base, fast_config, get_json, next_text, read_until_closed

STREAM = "btcusdt@depth@100ms"


async def test_a_region_down_refuses_connections_then_comes_back(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(fast_config(regions=("eu", "us"))) as sim:
        eu_ws, eu_rest = base(sim, "binance_ws", "eu"), base(sim, "binance_rest", "eu")
        us_rest = base(sim, "binance_rest", "us")
        async with http.ws_connect(f"{eu_ws}/ws/{STREAM}") as before:
            await next_text(before)
            await sim.region_down(1.0, region="eu")
            with pytest.raises(ConnectionError):
                await read_until_closed(before)
        async with aiohttp.ClientSession() as fresh:  # no pooled connection to reuse
            with pytest.raises(aiohttp.ClientConnectorError):
                await get_json(fresh, f"{eu_rest}/api/v3/ping")
            with pytest.raises(aiohttp.ClientConnectorError):
                await fresh.ws_connect(f"{eu_ws}/ws/{STREAM}")
            assert (await get_json(fresh, f"{us_rest}/api/v3/ping"))[0] == 200
            await asyncio.sleep(1.1)
            assert (await get_json(fresh, f"{eu_rest}/api/v3/ping"))[0] == 200
            async with fresh.ws_connect(f"{eu_ws}/ws/{STREAM}") as after:
                assert parse_depth_header(await next_text(after)).symbol == "BTCUSDT"
        assert base(sim, "binance_ws", "eu") == eu_ws  # the same port


async def test_drop_one_connection_without_a_close_frame(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with (
        http.ws_connect(f"{base(sim)}/ws/{STREAM}") as one,
        http.ws_connect(f"{base(sim)}/ws/{STREAM}") as two,
    ):
        await next_text(one)
        first, _ = await sim.wait_for_connections(2)
        assert sim.drop(connection=first.id) == 1
        async with asyncio.timeout(5):
            while (msg := await one.receive()).type is aiohttp.WSMsgType.TEXT:
                pass
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert await next_text(two)  # the other one lives on


async def test_a_stalled_connection_stays_open_and_silent(http: aiohttp.ClientSession) -> None:
    config = fast_config(ping_interval=0.2, pong_timeout=0.5)
    async with (
        Simulator(config) as sim,
        http.ws_connect(f"{base(sim)}/ws/{STREAM}", autoping=False) as ws,
    ):
        before = parse_depth_header(await next_text(ws))
        (conn,) = await sim.wait_for_connections(1)
        sim.stall(connection=conn.id)
        await asyncio.sleep(0.15)  # let what was already queued drain
        last_id = before.last_id
        while True:
            try:
                msg = await ws.receive(timeout=0.2)
            except TimeoutError:
                break
            if msg.type is aiohttp.WSMsgType.TEXT:
                last_id = parse_depth_header(str(msg.data).encode()).last_id
        with pytest.raises(TimeoutError):  # no frames, no pings, yet no close
            await ws.receive(timeout=1.0)
        assert not ws.closed
        assert conn.stalled
        sim.unstall(connection=conn.id)
        while (msg := await ws.receive(timeout=5)).type is not aiohttp.WSMsgType.TEXT:
            await ws.pong(msg.data)
        resumed = parse_depth_header(str(msg.data).encode())
        assert is_continuous(last_id, resumed.prev_id)  # nothing lost: one big event


async def test_skip_ids_breaks_continuity_on_that_connection_only(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with (
        http.ws_connect(f"{base(sim)}/ws/{STREAM}") as one,
        http.ws_connect(f"{base(sim)}/ws/{STREAM}") as two,
    ):
        first, _ = await sim.wait_for_connections(2)
        last_ids = [parse_depth_header(await next_text(ws)).last_id for ws in (one, two)]
        assert sim.skip_ids(5, connection=first.id) == 1
        breaks = []
        for ws, last_id in zip((one, two), last_ids, strict=True):
            count, previous = 0, last_id
            for _ in range(8):
                header = parse_depth_header(await next_text(ws))
                count += not is_continuous(previous, header.prev_id)
                previous = header.last_id
            breaks.append(count)
    assert breaks == [1, 0]


async def test_malformed_frames(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base(sim)}/ws/{STREAM}") as ws:
        (conn,) = await sim.wait_for_connections(1)
        previous = await next_text(ws)
        sim.send_malformed("invalid_json", connection=conn.id)
        sim.send_malformed("truncated", connection=conn.id)
        sim.send_malformed("binary", connection=conn.id)
        got: list[aiohttp.WSMessage] = []
        async with asyncio.timeout(5):
            while len([m for m in got if m.type is aiohttp.WSMsgType.BINARY]) < 1:
                got.append(await ws.receive())
    texts = [str(m.data).encode() for m in got if m.type is aiohttp.WSMsgType.TEXT]
    broken = []
    for text in texts:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            broken.append(text)
    assert len(broken) == 2
    assert any(previous.startswith(b) or b in previous for b in broken)  # the truncated copy
    (binary,) = [m for m in got if m.type is aiohttp.WSMsgType.BINARY]
    assert bytes(binary.data).startswith(b'{"e":"depthUpdate"')


async def test_rest_errors_for_the_next_requests(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = f"{base(sim, 'binance_rest')}/api/v3/depth"
    sim.rest_errors(503, count=2)
    sim.rest_errors(429)
    sim.rest_errors(502)
    statuses = []
    for _ in range(5):
        status, body, headers = await get_json(http, url, symbol="BTCUSDT")
        statuses.append(status)
        if status == 503:
            assert body == {
                "code": -1001,
                "msg": "Internal error; unable to process your request. Please try again.",
            }
        if status == 429:
            assert body["code"] == -1003
            assert headers["Retry-After"] == "1"
        if status == 502:
            assert isinstance(body, bytes)
            assert b"502" in body
    assert statuses == [503, 503, 429, 502, 200]


async def test_added_latency(http: aiohttp.ClientSession) -> None:
    async with (
        Simulator(fast_config(regions=("eu", "us"))) as sim,
        http.ws_connect(f"{base(sim, 'binance_ws', 'eu')}/ws/{STREAM}") as ws,
    ):
        sim.latency(ws_ms=300, rest_ms=300, region="eu")
        await asyncio.sleep(0.5)  # frames queued before the fault are gone
        while True:  # skip whatever was in flight
            try:
                await ws.receive(timeout=0.05)
            except TimeoutError:
                break
        delays = []
        for _ in range(5):
            frame = await next_text(ws)
            delays.append(time.time() * 1000 - parse_depth_header(frame).event_time)
        assert min(delays) >= 250
        started = time.monotonic()
        await get_json(http, f"{base(sim, 'binance_rest', 'eu')}/api/v3/ping")
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        await get_json(http, f"{base(sim, 'binance_rest', 'us')}/api/v3/ping")
        assert time.monotonic() - started < 0.3  # the other region is not slowed


async def test_the_control_api_serves_truth_connections_logs_and_faults(
    http: aiohttp.ClientSession,
) -> None:
    async with Simulator(fast_config(control_port=0)) as sim:
        control = str(sim.ready_info()["control"])
        async with http.ws_connect(f"{base(sim)}/stream?streams={STREAM}") as ws:
            received = [await next_text(ws) for _ in range(3)]
            status, truth, _ = await get_json(http, f"{control}/truth/BTCUSDT")
            assert status == 200
            assert truth["symbol"] == "BTCUSDT"
            assert len(truth["bids"]) > 3000
            assert truth["lastUpdateId"] >= 50_000_000_000
            status, conns, _ = await get_json(http, f"{control}/connections")
            (conn,) = conns
            assert conn["streams"] == [STREAM]
            assert conn["region"] == "eu"
            status, log, _ = await get_json(http, f"{control}/connections/{conn['id']}/log")
            texts = [f["data"].encode() for f in log["frames"] if f["kind"] == "text"]
            assert texts[:3] == received  # verbatim, in order
            assert [f.data for f in sim.send_log(conn["id"]) if f.kind == "text"][:3] == received
            async with http.post(
                f"{control}/faults/drop", json={"connection": conn["id"]}
            ) as response:
                assert await response.json() == {"ok": True, "connections": 1}
            with pytest.raises(ConnectionError):
                await read_until_closed(ws)
        async with http.post(
            f"{control}/faults/rest_errors", json={"status": 500, "count": 1}
        ) as response:
            assert response.status == 200
        assert (await get_json(http, f"{base(sim, 'binance_rest')}/api/v3/ping"))[0] == 500
        async with http.post(f"{control}/faults/nonsense", json={}) as response:
            assert response.status == 404
        async with http.post(f"{control}/faults/region_down", json={}) as response:
            assert response.status == 400
        assert (await get_json(http, f"{control}/truth/NOPE"))[0] == 404
        assert (await get_json(http, f"{control}/info"))[1] == orjson.loads(
            orjson.dumps(sim.ready_info())
        )
