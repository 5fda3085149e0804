"""Binance's connection rules: pings, pong deadline, lifetime, message rate, shutdown."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
import websockets

from simulator.app import Simulator
from simulator.ratelimit import AttemptLimiter
from tests.simulator.conftest import base, fast_config, get_json, next_text

STREAM = "btcusdt@depth@100ms"


async def _until_closed(
    ws: aiohttp.ClientWebSocketResponse, within: float = 5.0
) -> tuple[list[aiohttp.WSMessage], float]:
    """Every message up to the close, and when the close came (monotonic)."""
    seen: list[aiohttp.WSMessage] = []
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            seen.append(msg)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return seen, time.monotonic()


async def test_a_client_that_does_not_pong_is_closed_after_the_deadline(
    http: aiohttp.ClientSession,
) -> None:
    config = fast_config(ping_interval=0.2, pong_timeout=0.6)
    async with (
        Simulator(config) as sim,
        http.ws_connect(f"{base(sim)}/ws/{STREAM}", autoping=False) as ws,
    ):
        opened = time.monotonic()
        seen, closed = await _until_closed(ws)
    pings = [m for m in seen if m.type is aiohttp.WSMsgType.PING]
    assert pings
    assert all(m.data for m in pings)
    assert seen[-1].type is aiohttp.WSMsgType.CLOSE
    assert seen[-1].data == 1008
    assert 0.7 <= closed - opened < 2.0


async def test_a_pong_with_the_wrong_payload_does_not_count(http: aiohttp.ClientSession) -> None:
    config = fast_config(ping_interval=0.2, pong_timeout=0.6)
    async with Simulator(config) as sim, http.ws_connect(f"{base(sim)}/ws", autoping=False) as ws:
        async with asyncio.timeout(5):
            while (await ws.receive()).type is not aiohttp.WSMsgType.PING:
                pass
        await ws.pong(b"not-the-payload")
        seen, _ = await _until_closed(ws)
    assert seen[-1].type is aiohttp.WSMsgType.CLOSE
    assert seen[-1].data == 1008


async def _recv_forever(ws: websockets.ClientConnection) -> None:
    while True:
        await ws.recv()


async def test_a_client_that_pongs_stays_and_lives_until_the_lifetime(
    http: aiohttp.ClientSession,
) -> None:
    config = fast_config(ping_interval=0.25, pong_timeout=0.6, max_lifetime=1.5)
    async with Simulator(config) as sim, websockets.connect(f"{base(sim)}/ws/{STREAM}") as ws:
        opened = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await _recv_forever(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert 1.4 <= time.monotonic() - opened < 2.5  # outlived two pong deadlines


async def test_more_than_five_messages_a_second_closes_the_connection(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{base(sim)}/ws") as ws:
        for request_id in range(6):
            await ws.send_str(
                orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id}).decode()
            )
        seen, _ = await _until_closed(ws)
    assert seen[-1].type is aiohttp.WSMsgType.CLOSE
    assert seen[-1].data == 1008


async def test_five_messages_a_second_are_fine(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{base(sim)}/ws") as ws:
        for request_id in range(7):
            await ws.send_str(
                orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id}).decode()
            )
            assert orjson.loads(await next_text(ws))["id"] == request_id
            await asyncio.sleep(0.21)
        assert not ws.closed


async def test_server_shutdown_is_announced_then_the_connection_closes(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        Simulator(fast_config()) as sim,
        http.ws_connect(f"{base(sim)}/stream?streams={STREAM}") as ws,
    ):
        await next_text(ws)
        assert sim.server_shutdown(delay=0.3) == 1
        announced = time.monotonic()
        while b"serverShutdown" not in (frame := await next_text(ws)):
            pass
        event = orjson.loads(frame)
        assert list(event) == ["e", "E"]
        assert event["e"] == "serverShutdown"
        assert abs(event["E"] - time.time() * 1000) < 5000
        seen, closed = await _until_closed(ws)
    assert seen[-1].type is aiohttp.WSMsgType.CLOSE
    assert seen[-1].data == 1001
    assert closed - announced >= 0.25


async def test_a_consumer_that_cannot_keep_up_is_closed(http: aiohttp.ClientSession) -> None:
    config = fast_config(send_queue_frames=2)
    async with (
        Simulator(config) as sim,
        http.ws_connect(f"{base(sim)}/ws/{STREAM}/btcusdt@depth") as ws,
    ):
        sim.latency(ws_ms=2000)  # frames pile up behind the delay: the queue overflows
        seen, _ = await _until_closed(ws)
        assert seen[-1].type in (
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
            aiohttp.WSMsgType.CLOSE,
        )
        closed = sim.connections(include_closed=True)[0]
        assert closed.close_reason == "slow consumer"


async def test_connection_attempts_past_the_limit_get_429_until_the_window_moves(
    http: aiohttp.ClientSession,
) -> None:
    config = fast_config(
        regions=("eu", "us"), max_connection_attempts=3, connection_attempt_window=1.0
    )
    async with Simulator(config) as sim:
        url = f"{base(sim, 'binance_ws', 'eu')}/ws/{STREAM}"
        for _ in range(3):
            async with http.ws_connect(url):
                pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 429
        plain = f"{base(sim, 'binance_rest', 'eu')}/ws/{STREAM}"  # the same upgrade path
        status, body, headers = await get_json(http, plain)
        assert status == 429
        assert body["code"] == -1003
        assert "3 connection attempts per 1 SECOND" in body["msg"]
        assert headers["Retry-After"] == "1"
        async with http.ws_connect(f"{base(sim, 'binance_ws', 'us')}/ws/{STREAM}") as other:
            assert await next_text(other)  # another region counts its own attempts
        assert (await get_json(http, f"{base(sim, 'binance_rest', 'eu')}/api/v3/ping"))[0] == 200
        await asyncio.sleep(int(headers["Retry-After"]))
        async with http.ws_connect(url) as ws:
            assert await next_text(ws)


def test_attempts_are_counted_in_a_sliding_window_per_ip() -> None:
    limiter = AttemptLimiter(limit=2, window_s=10.0)
    assert limiter.admit("ip", 0.0) == (0, False)
    assert limiter.admit("ip", 4.0) == (0, False)
    assert limiter.admit("ip", 5.0) == (5, True)  # the attempt at 0.0 leaves at 10.0
    assert limiter.admit("ip", 6.0) == (4, False)  # still refused, not a new episode
    assert limiter.admit("other", 6.0) == (0, False)
    assert limiter.admit("ip", 10.0) == (0, False)  # refused attempts were not counted
    assert limiter.admit("ip", 11.0) == (3, True)
