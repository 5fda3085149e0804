"""The real recordings replayed through the simulator give the same result as the files.

A plain ``websockets`` client receives the replay (raw bytes, no decoding) and a REST
snapshot from the simulator; rebuilt from those, the spot book agrees with the recorded
bookTicker exactly as the recording itself does (6491 of 6493, the same two misses).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import websockets

from simulator.app import Simulator
from simulator.config import SimConfig
from simulator.recordings import (
    RecordedFrame,
    RecordedSnapshot,
    Recording,
    load_recording,
    unwrap_combined,
)
from tests.realdata import ticker_check

STREAMS = "btcusdt@depth@100ms/btcusdt@bookTicker"


@pytest.mark.slow
async def test_spot_replay_through_the_simulator_matches_the_book_ticker(real_data: Path) -> None:
    files = (
        real_data / "hftbacktest/spot/btcusdt_20240808.gz",
        real_data / "hftbacktest/spot/btcusdt_20240809.gz",
    )
    recording = load_recording(files)
    wanted = sum(1 for f in recording.frames if f.stream in STREAMS.split("/"))
    config = SimConfig(
        symbols=("BTCUSDT",),
        replay=files,
        speed=200.0,
        control_port=None,
        send_queue_frames=100_000,
    )
    async with Simulator(config) as sim, aiohttp.ClientSession() as http:
        info = sim.ready_info()
        rest = f"{info['binance_rest']}/api/v3/depth?symbol=BTCUSDT&limit=1000"
        async with http.get(rest) as response:
            snapshot_body = await response.read()
        frames: list[RecordedFrame] = []
        url = f"{info['binance_ws']}/stream?streams={STREAMS}"
        async with websockets.connect(url, max_size=None) as ws, asyncio.timeout(90):
            while len(frames) < wanted:
                raw = await ws.recv(decode=False)
                stream, inner = unwrap_combined(raw)
                frames.append(RecordedFrame(0, stream, "BTCUSDT", inner))
    received = Recording(recording.market, frames, [RecordedSnapshot(0, "BTCUSDT", snapshot_body)])

    checks, matches, misses = ticker_check(received, "BTCUSDT")

    assert (checks, matches) == (6493, 6491)
    assert misses == [50093478174, 50093480542]
