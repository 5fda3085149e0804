"""`booktape sim` as a process: the ready line, a plain websockets client, JSON logs on
stderr, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
import websockets

from booktape.binance import parse_depth_header
from simulator.cli import run

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


async def test_the_ready_line_then_frames_then_a_clean_stop() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator.cli",
        "--regions",
        "eu,us",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--seed",
        "3",
        "--send-log",
        "--log-level",
        "debug",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        info = orjson.loads(line)
        assert set(info) == {"binance_ws", "binance_rest", "coinbase_rest", "control", "regions"}
        assert set(info["regions"]) == {"eu", "us"}
        assert info["binance_ws"] == info["regions"]["eu"]["binance_ws"]
        assert info["regions"]["eu"]["binance_ws"] != info["regions"]["us"]["binance_ws"]
        url = f"{info['regions']['us']['binance_ws']}/ws/ethusdt@depth@100ms"
        async with websockets.connect(url) as ws:
            frame = await asyncio.wait_for(ws.recv(decode=False), 10)
        assert parse_depth_header(frame).symbol == "ETHUSDT"
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 15)
    assert code == 0
    assert process.stderr is not None
    logs = [orjson.loads(line) for line in (await process.stderr.read()).splitlines()]
    opened = [e for e in logs if e["msg"] == "connection opened"]
    assert len(opened) == 1
    assert opened[0]["logger"] == "simulator.connection"
    assert opened[0]["region"] == "us"
    assert {"ts", "level", "connection", "remote", "path"} <= set(opened[0])
    closed = next(e for e in logs if e["msg"] == "connection closed")
    assert closed["connection"] == opened[0]["connection"]
    assert any(e["msg"] == "simulator stopped" for e in logs)


def test_usage_errors_exit_2(capsys: object) -> None:
    assert run(["--regions", "eu,eu"]) == 2
    assert run(["--speed", "0", "--replay", __file__]) == 2
    assert run(["--replay", "/nonexistent/file.gz"]) == 2
    assert run(["--no-such-flag"]) == 2
    assert run(["--log-level", "chatty"]) == 2
