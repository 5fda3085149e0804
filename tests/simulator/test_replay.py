"""Replay of the real hftbacktest spot recording: byte-exact frames, a rolled REST book."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from booktape.binance import (
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
from tests.simulator.conftest import base, fast_config

STREAM = "btcusdt@depth@100ms"


@pytest.fixture
def spot_files(real_data: Path) -> list[Path]:
    folder = real_data / "hftbacktest" / "spot"
    files = [folder / "btcusdt_20240808.gz", folder / "btcusdt_20240809.gz"]
    for path in files:
        assert path.exists(), f"missing real recording {path}"
    return files


async def test_replay_is_byte_exact_and_rest_rolls_the_snapshot_forward(
        spot_files: list[Path], http: aiohttp.ClientSession) -> None:
    recording = load_recording(spot_files)
    expected = [b'{"stream":"' + f.stream.encode() + b'","data":' + f.frame + b"}"
                for f in recording.frames if f.stream in (STREAM, "btcusdt@bookTicker")]
    config = fast_config(replay=tuple(spot_files), speed=200.0, send_queue_frames=100_000,
                         send_log=False)
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
                        async with http.get(rest, params={"symbol": "BTCUSDT",
                                                          "limit": "500"}) as response:
                            body = await response.read()
                        snapshot_at = len(received)
            assert sim.replay is not None
            await asyncio.wait_for(sim.replay.finished.wait(), 10)
    assert received == expected
    snapshot = decode_snapshot(body)
    assert len(snapshot.bids) == 500
    depth = [f for f in received if f.startswith(b'{"stream":"btcusdt@depth@100ms"')]
    headers = [parse_depth_header(f) for f in depth]
    start = first_splice_index(snapshot.last_update_id, headers)
    assert start is not None  # the rolled snapshot joins the stream
    book = OrderBook()
    book.load_snapshot(snapshot)
    for frame in depth[start:]:
        event = decode_depth(frame)
        assert book.update_id is not None
        if is_stale(book.update_id, event.header.last_id):
            continue
        assert splices(book.update_id, event.header.prev_id, event.header.last_id)
        book.apply(event)
    assert book.update_id == headers[-1].last_id
