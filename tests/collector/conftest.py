"""Fixtures for the collector tests."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from booktape.codec import encode_conn, encode_msg
from booktape.keys import parse_raw_key
from booktape.objects import read_object
from booktape.stores import Store
from collector.config import CollectorSettings
from collector.metrics import Metrics
from collector.pipeline import Pipeline, PipelineOptions
from collector.types import Item
from collector.uploader import Backoff
from tests.s3servers import sandbox_env

# --- durability pipeline (spool, chunks, uploads) -----------------------------------------

#: Pipeline timings shrunk for tests: ticks, retries and upload backoff in tens of ms.
FAST = PipelineOptions(
    tick_s=0.02,
    fsync_interval_s=0.1,
    write_retry_s=0.02,
    seal_retry_s=0.02,
    backoff=Backoff(base_s=0.02, cap_s=0.1),
    uploads_unready_after_s=0.0,
)
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z in ns
SEC = 10**9
MS = 10**6
SETTLE_S = 10.0  # upper bound for anything the tests wait for


def pipeline_settings(spool_dir: Path, **overrides: Any) -> CollectorSettings:
    """Collector settings for pipeline tests (region eu, collector c1, spot BTCUSDT)."""
    values: dict[str, Any] = {
        "region": "eu",
        "collector": "c1",
        "store": "memory://unused",
        "symbols": "BTCUSDT",
        "spool_dir": spool_dir,
    }
    values.update(overrides)
    return CollectorSettings(**values)


def depth_frame(symbol: str, first_id: int, last_id: int, pad: int = 0) -> bytes:
    """A combined-stream spot depth frame (``pad`` bytes of extra levels make it bigger)."""
    levels = ",".join(f'["{60000 + n}.01","0.{n:08d}"]' for n in range(pad // 30))
    return (
        b'{"stream":"%s@depth@100ms","data":{"e":"depthUpdate","E":1767225600000,"s":"%s",'
        b'"U":%d,"u":%d,"b":[%s],"a":[]}}'
        % (symbol.lower().encode(), symbol.encode(), first_id, last_id, levels.encode())
    )


def depth_item(symbol: str, recv_ns: int, first_id: int, last_id: int, pad: int = 0) -> Item:
    """An Item holding one depth event, as the Binance feed makes it."""
    line = encode_msg(recv_ns, "c1", depth_frame(symbol, first_id, last_id, pad))
    return Item(symbol, line, recv_ns, first_id, last_id)


def conn_item(symbol: str, recv_ns: int) -> Item:
    """An Item without ids (a connection record)."""
    return Item(symbol, encode_conn(recv_ns, "c1", "open", {"url": "ws://x"}), recv_ns)


def numbered_items(
    n: int, *, symbols: tuple[str, ...] = ("BTCUSDT",), start: int = 0, pad: int = 0
) -> Iterator[Item]:
    """Depth items numbered ``start``.. (event i has ids 10i+1..10i+10, time T0 + i ms),
    round-robin over ``symbols``."""
    for i in range(start, start + n):
        yield depth_item(symbols[i % len(symbols)], T0 + i * MS, 10 * i + 1, 10 * i + 10, pad)


async def stored_objects(store: Store) -> dict[str, bytes]:
    """Every raw object in the store, decompressed (the exact JSON lines)."""
    out: dict[str, bytes] = {}
    async for info in store.list("raw/"):
        data = await store.get(info.key)
        read_object(data, info.key)  # a complete, valid object
        out[info.key] = zstandard.ZstdDecompressor().stream_reader(data).read()
    return out


def stored_lines(objects: dict[str, bytes]) -> list[bytes]:
    """The data lines of the objects (headers left out), objects in key-time order."""
    ordered = sorted(objects, key=lambda k: (parse_raw_key(k).start_ns, k))
    lines: list[bytes] = []
    for key in ordered:
        lines += objects[key].splitlines(keepends=True)[1:]
    return lines


def line_crc(lines: list[bytes]) -> list[int]:
    """Short fingerprints of lines, for readable assertion messages on large sets."""
    return [zlib.crc32(line) for line in lines]


@contextlib.asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[asyncio.Task[None]]:
    """Run the pipeline for the block; cancel it at the end (shutdown is the test's call)."""
    task = asyncio.create_task(pipeline.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], bool], timeout_s: float = SETTLE_S) -> None:
    """Wait until ``check()`` holds (polling), or fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not check():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def aws_sandbox(tmp_path: Path) -> Iterator[None]:
    """Test AWS credentials in the environment for S3 stores (see tests/s3servers.py)."""
    with pytest.MonkeyPatch.context() as mp:
        sandbox_env(mp, tmp_path / "aws-absent")
        yield
