"""Helpers for the simulator tests: short timers, clients, frame readers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from simulator.app import Simulator
from simulator.config import SimConfig


def fast_config(**overrides: Any) -> SimConfig:
    """One region, one symbol, the send log on, no control port unless asked."""
    base: dict[str, Any] = {"symbols": ("BTCUSDT",), "send_log": True, "control_port": None}
    base.update(overrides)
    return SimConfig(**base)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(fast_config()) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(sim: Simulator, key: str = "binance_ws", region: str | None = None) -> str:
    info = sim.ready_info()
    if region is not None:
        regions = info["regions"]
        assert isinstance(regions, dict)
        return str(regions[region][key])
    return str(info[key])


async def get_json(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, Any, Any]:
    async with http.get(url, params=params) as response:
        body = await response.read()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = body
        return response.status, doc, response.headers


async def next_text(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> bytes:
    """The next text frame (pings are answered by the client)."""
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                return str(msg.data).encode()
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                raise ConnectionError(f"closed: {ws.close_code}")


async def next_reply(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> Any:
    """The next frame that is not a stream event (a reply or an error)."""
    while True:
        frame = await next_text(ws, within)
        if b'"stream"' not in frame[:12] and b'"e":"depthUpdate"' not in frame[:30]:
            return orjson.loads(frame)


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read frames until the connection ends (raises ConnectionError then)."""
    while True:
        await next_text(ws)
