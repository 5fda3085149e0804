"""The bounded record queue and the spool writer's write interval."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

from booktape.stores import open_store
from collector.metrics import Metrics
from collector.pipeline import Pipeline, PipelineOptions
from collector.recordqueue import RecordQueue
from collector.types import Item
from tests.collector.conftest import (
    FAST,
    conn_item,
    eventually,
    numbered_items,
    pipeline_settings,
)

T = 1_767_225_600 * 10**9


def items(n: int, start: int = 0) -> list[Item]:
    return [conn_item("BTCUSDT", T + i) for i in range(start, start + n)]


async def test_batches_wait_in_turn_while_full_and_keep_their_order() -> None:
    queue = RecordQueue(limit=4)
    await queue.put_many(items(3))  # under the bound: in at once
    await queue.put_many(items(3, 3))  # admitted whole, past the bound
    assert len(queue) == 6
    assert queue.full()
    second = asyncio.create_task(queue.put_many(items(2, 6)))
    third = asyncio.create_task(queue.put_many(items(2, 8)))
    await asyncio.sleep(0.01)
    assert not second.done()
    assert not third.done()

    got = queue.take(5, 1 << 20)  # 1 left: room again, the first waiter goes in
    await asyncio.sleep(0.01)

    assert second.done()
    assert third.done()
    got += queue.take(100, 1 << 20)
    assert [item.recv_ns - T for item in got] == list(range(10))


async def test_take_stops_at_the_item_and_byte_bounds() -> None:
    queue = RecordQueue(limit=100)
    await queue.put_many(items(10))
    size = len(items(1)[0].line)

    assert len(queue.take(3, 1 << 20)) == 3
    assert len(queue.take(100, 2 * size)) == 2
    assert len(queue.take(100, 1 << 20)) == 5


async def test_the_writer_wakes_on_wake_a_full_batch_or_a_waiting_putter_only() -> None:
    queue = RecordQueue(limit=10, wake_at=3)
    queue.wake()  # before the writer waits: not lost
    t0 = time.monotonic()
    assert await queue.wait(5.0) is False
    assert time.monotonic() - t0 < 1.0

    await queue.put_many(items(1))  # under wake_at: the writer sleeps to its deadline
    t0 = time.monotonic()
    assert await queue.wait(0.2) is True
    assert time.monotonic() - t0 >= 0.15

    waiter = asyncio.create_task(queue.wait(5.0))
    await asyncio.sleep(0.01)
    await queue.put_many(items(2, 1))  # 3 queued: wake_at reached
    t0 = time.monotonic()
    assert await waiter is True
    assert time.monotonic() - t0 < 1.0

    await queue.put_many(items(7, 3))  # full now
    putter = asyncio.create_task(queue.put_many(items(1, 10)))
    await asyncio.sleep(0.01)
    assert not putter.done()
    assert await queue.wait(5.0) is True  # woken by the putter that has to wait
    assert time.monotonic() - t0 < 1.0
    queue.take(100, 1 << 20)
    await putter


@contextlib.asynccontextmanager
async def running_pipeline(tmp_path: Path, options: PipelineOptions) -> AsyncIterator[Pipeline]:
    """A pipeline on a spool in ``tmp_path`` and a memory store, running until the block ends."""
    pipeline = Pipeline(
        pipeline_settings(tmp_path / "spool"), open_store("memory://"), Metrics(),
        options=options, clock_ns=lambda: T + 1000 * 10**6,
    )  # fmt: skip
    run = asyncio.create_task(pipeline.run())
    try:
        yield pipeline
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_records_reach_the_spool_within_the_write_interval_or_at_flush(
    tmp_path: Path,
) -> None:
    options = dataclasses.replace(FAST, write_interval_s=0.3, fsync_interval_s=None)
    async with running_pipeline(tmp_path, options) as pipeline:
        batch = list(numbered_items(20))
        await pipeline.put_many(batch)
        t0 = time.monotonic()
        await pipeline.flush()  # written at once, not after the interval
        assert time.monotonic() - t0 < 0.25
        lines = b"".join(item.line for item in batch)
        (path,) = (tmp_path / "spool" / "open").rglob("*.jsonl")
        assert path.read_bytes().endswith(lines)

        more = list(numbered_items(5, start=20))
        await pipeline.put_many(more)
        await asyncio.sleep(0.05)
        assert path.read_bytes().endswith(lines)  # held for the interval...
        await asyncio.sleep(0.5)
        assert path.read_bytes().endswith(lines + b"".join(i.line for i in more))  # ...then written


async def test_records_are_written_early_once_write_bytes_are_pending(tmp_path: Path) -> None:
    first = list(numbered_items(20))
    size = sum(len(item.line) for item in first)
    options = dataclasses.replace(
        FAST, write_interval_s=30.0, write_bytes=size + 1, fsync_interval_s=None
    )
    spool_open = tmp_path / "spool" / "open"
    async with running_pipeline(tmp_path, options) as pipeline:
        await pipeline.put_many(first)  # one byte short of write_bytes: held
        await asyncio.sleep(0.3)
        assert not list(spool_open.rglob("*.jsonl"))
        more = list(numbered_items(1, start=20))
        await pipeline.put_many(more)  # over it: written long before the 30 s interval
        lines = b"".join(item.line for item in first + more)

        def written() -> bool:
            paths = list(spool_open.rglob("*.jsonl"))
            return bool(paths) and paths[0].read_bytes().endswith(lines)

        await eventually(written)  # within SETTLE_S
        (path,) = spool_open.rglob("*.jsonl")
        assert path.read_bytes().endswith(lines)
