"""Replay of real recordings: byte-exact frames, a rolled REST book that joins them.

hftbacktest spot BTCUSDT (650 s), cryptofeed spot (4 symbols at once, 30 s) and cryptofeed
USD-M futures (``/fapi/v1/depth``, ``pu`` chains, the recorded body shape).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from booktape.binance import (
    DepthSnapshot,
    Market,
    decode_depth,
    decode_snapshot,
    first_splice_index,
    is_stale,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook
from simulator.app import Simulator
from simulator.recordings import load_recording
from simulator.replay import is_diff_depth
from simulator.wire import combined
from tests.simulator.conftest import base, fast_config, get_json, next_text

STREAM = "btcusdt@depth@100ms"


@pytest.fixture
def spot_files(real_data: Path) -> list[Path]:
    folder = real_data / "hftbacktest" / "spot"
    files = [folder / "btcusdt_20240808.gz", folder / "btcusdt_20240809.gz"]
    for path in files:
        assert path.exists(), f"missing real recording {path}"
    return files


async def test_replay_is_byte_exact_and_rest_rolls_the_snapshot_forward(
    spot_files: list[Path], http: aiohttp.ClientSession
) -> None:
    recording = load_recording(spot_files)
    expected = [
        b'{"stream":"' + f.stream.encode() + b'","data":' + f.frame + b"}"
        for f in recording.frames
        if f.stream in (STREAM, "btcusdt@bookTicker")
    ]
    config = fast_config(
        replay=tuple(spot_files), speed=200.0, send_queue_frames=100_000, send_log=False
    )
    async with Simulator(config) as sim:
        rest = f"{base(sim, 'binance_rest')}/api/v3/depth"
        async with http.get(rest, params={"symbol": "BTCUSDT", "limit": "1000"}) as response:
            assert await response.read() == recording.snapshots[0].body  # before its point
        received: list[bytes] = []
        snapshot_at: int | None = None
        body = b""
        url = f"{base(sim)}/stream?streams={STREAM}/btcusdt@bookTicker"
        async with http.ws_connect(url, max_msg_size=0) as ws:
            async with asyncio.timeout(60):
                while len(received) < len(expected):
                    msg = await ws.receive()
                    assert msg.type is aiohttp.WSMsgType.TEXT, msg
                    received.append(str(msg.data).encode())
                    if snapshot_at is None and len(received) == len(expected) // 3:
                        async with http.get(
                            rest, params={"symbol": "BTCUSDT", "limit": "500"}
                        ) as response:
                            body = await response.read()
                        snapshot_at = len(received)
            assert sim.replay is not None
            await asyncio.wait_for(sim.replay.finished.wait(), 10)
    assert received == expected
    snapshot = decode_snapshot(body)
    assert len(snapshot.bids) == 500
    depth = [f for f in received if f.startswith(b'{"stream":"btcusdt@depth@100ms"')]
    assert _rebuild(snapshot, depth) == parse_depth_header(depth[-1]).last_id


def _rebuild(snapshot: DepthSnapshot, frames: list[bytes], market: Market = Market.SPOT) -> int:
    """Join a snapshot to received frames and roll it to the end: the id reached."""
    headers = [parse_depth_header(f, market) for f in frames]
    start = first_splice_index(snapshot.last_update_id, headers)
    assert start is not None, "the snapshot does not join the stream"
    book = OrderBook()
    book.load_snapshot(snapshot)
    for frame in frames[start:]:
        event = decode_depth(frame, market)
        assert book.update_id is not None
        if is_stale(book.update_id, event.header.last_id):
            continue
        assert splices(book.update_id, event.header.prev_id, event.header.last_id)
        book.apply(event)
    assert book.update_id is not None
    return book.update_id


def _cryptofeed(real_data: Path, name: str) -> tuple[Path, Path]:
    folder = real_data / "cryptofeed"
    return folder / f"{name}.ws.1.0", folder / f"{name}.http.0.0"


async def test_four_symbols_replay_byte_exact_and_each_snapshot_rebuilds_its_symbol(
    real_data: Path, http: aiohttp.ClientSession
) -> None:
    files = _cryptofeed(real_data, "BINANCE")
    recording = load_recording(files)
    streams = sorted({f.stream for f in recording.frames if is_diff_depth(f.stream)})
    expected = [combined(f.stream, f.frame) for f in recording.frames if f.stream in streams]
    config = fast_config(replay=files, speed=20.0, send_queue_frames=100_000, send_log=False)
    snapshots: dict[str, DepthSnapshot] = {}
    received: list[bytes] = []
    async with Simulator(config) as sim:
        rest = f"{base(sim, 'binance_rest')}/api/v3/depth"
        async with http.ws_connect(f"{base(sim)}/stream?streams={'/'.join(streams)}") as ws:
            async with asyncio.timeout(30):
                while len(received) < len(expected):
                    received.append(await next_text(ws))
                    symbol = parse_depth_header(received[-1]).symbol
                    if symbol not in snapshots:  # its first event: take a snapshot now
                        params = {"symbol": symbol, "limit": "1000"}
                        async with http.get(rest, params=params) as response:
                            assert response.status == 200
                            snapshots[symbol] = decode_snapshot(await response.read())
            assert sim.replay is not None
            await asyncio.wait_for(sim.replay.finished.wait(), 10)
    assert len(streams) == 4
    assert received == expected
    assert sorted(snapshots) == ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]
    for symbol, snapshot in snapshots.items():
        frames = [f for f in received if parse_depth_header(f).symbol == symbol]
        assert _rebuild(snapshot, frames) == parse_depth_header(frames[-1]).last_id, symbol


async def test_a_futures_replay_serves_fapi_depth_in_the_recorded_shape(
    real_data: Path, http: aiohttp.ClientSession
) -> None:
    files = _cryptofeed(real_data, "BINANCE_FUTURES")
    recording = load_recording(files)
    assert recording.market is Market.USDM
    recorded = next(s for s in recording.snapshots if s.symbol == "SUSHIUSDT")
    stream = "sushiusdt@depth@100ms"
    expected = [combined(stream, f.frame) for f in recording.frames if f.stream == stream]
    config = fast_config(replay=files, speed=30.0, send_queue_frames=100_000, send_log=False)
    bodies: list[bytes] = []
    received: list[bytes] = []
    async with Simulator(config) as sim:
        fapi = f"{base(sim, 'binance_rest')}/fapi/v1/depth"
        async with http.get(fapi, params={"symbol": "SUSHIUSDT", "limit": "1000"}) as response:
            assert await response.read() == recorded.body  # before its point: verbatim
            assert response.headers["x-mbx-used-weight-1m"] == "20"
        status, body, _ = await get_json(
            http, f"{base(sim, 'binance_rest')}/api/v3/depth", symbol="SUSHIUSDT"
        )
        assert (status, body["code"]) == (400, -1121)  # not a spot symbol here
        async with http.ws_connect(f"{base(sim)}/stream?streams={stream}") as ws:
            async with asyncio.timeout(30):
                while len(received) < len(expected):
                    received.append(await next_text(ws))
                    if len(received) in (1, len(expected) // 2):
                        async with http.get(fapi, params={"symbol": "SUSHIUSDT"}) as response:
                            bodies.append(await response.read())
    assert received == expected
    rolled = orjson.loads(bodies[1])
    assert list(rolled) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert len(rolled["bids"]) == 500  # the futures default limit
    assert rolled["lastUpdateId"] > decode_snapshot(recorded.body).last_update_id
    for body in bodies:
        last_id = parse_depth_header(received[-1], Market.USDM).last_id
        assert _rebuild(decode_snapshot(body), received, Market.USDM) == last_id
