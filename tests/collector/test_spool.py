"""The spool on disk: sealing, listing, accounting, a full spool, and a full disk."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from booktape.codec import Header, encode_header
from booktape.keys import RawKey
from booktape.objects import read_object
from booktape.stores import MemoryStore
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.spool import Spool, file_md5, sealed_content_equals
from collector.types import Item
from tests.collector.conftest import (
    FAST,
    SEC,
    T0,
    depth_item,
    eventually,
    numbered_items,
    pipeline_settings,
    running,
    stored_lines,
    stored_objects,
)

KEY = RawKey.from_recv("binance", "depth", "BTCUSDT", "eu", "c1", T0 + 1_500_000_000, 1, 20)
HEADER = encode_header(Header("binance", "depth", "BTCUSDT", "eu", "c1", "h1"))


def open_file(spool: Spool, lines: list[bytes], tail: bytes = b"") -> tuple[Path, int]:
    """An open file holding the header, ``lines`` and ``tail``; returns it and its length."""
    path, fd = spool.create_open("binance", "depth", "BTCUSDT", T0)
    data = HEADER + b"".join(lines) + tail
    os.write(fd, data)
    os.close(fd)
    spool.usage.opened(len(data))
    return path, len(data) - len(tail)


def test_seal_writes_one_checksummed_frame_and_removes_the_open_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    lines = [depth_item("BTCUSDT", T0 + i, i * 10 + 1, i * 10 + 10).line for i in range(2)]
    path, length = open_file(spool, lines)

    sealed = spool.seal(path, length, KEY)

    assert not path.exists()
    assert sealed.path == tmp_path / "sealed" / KEY.key
    assert not sealed.path.with_name(sealed.path.name + ".tmp").exists()
    data = sealed.path.read_bytes()
    assert (sealed.size, sealed.md5) == (len(data), file_md5(sealed.path))
    result = read_object(data, KEY.key)
    assert not result.truncated
    assert [r.t for r in result.records] == [T0, T0 + 1]  # type: ignore[union-attr]
    assert sealed_content_equals(sealed.path, HEADER + b"".join(lines))
    usage = spool.usage.snapshot()
    assert (usage.open_bytes, usage.open_chunks, usage.sealed_chunks) == (0, 0, 1)
    assert usage.sealed_bytes == sealed.size


def test_seal_leaves_out_a_cut_last_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    line = depth_item("BTCUSDT", T0, 1, 10).line
    path, length = open_file(spool, [line], tail=line[:30])

    sealed = spool.seal(path, length, KEY)

    assert sealed_content_equals(sealed.path, HEADER + line)
    assert spool.usage.snapshot().open_bytes == 0


def test_open_file_names_never_collide(tmp_path: Path) -> None:
    spool = Spool(tmp_path)

    first, fd1 = spool.create_open("binance", "depth", "BTCUSDT", T0)
    second, fd2 = spool.create_open("binance", "depth", "BTCUSDT", T0)
    os.close(fd1)
    os.close(fd2)

    assert (first.name, second.name) == (f"{T0}.jsonl", f"{T0}-1.jsonl")


def test_listing_drops_leftover_tmp_files_and_reports_strangers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path, length = open_file(spool, [depth_item("BTCUSDT", T0, 1, 10).line])
    sealed = spool.seal(path, length, KEY)
    tmp = sealed.path.with_name(sealed.path.name + ".tmp")
    tmp.write_bytes(b"cut by a crash")
    stranger = tmp_path / "sealed" / "notes.txt"
    stranger.write_text("not a chunk")

    fresh = Spool(tmp_path)
    chunks, strangers = fresh.list_sealed()

    assert [c.key for c in chunks] == [KEY]
    assert strangers == [stranger]
    assert not tmp.exists()
    assert fresh.usage.snapshot().sealed_bytes == sealed.size


def test_remove_sealed_prunes_empty_folders(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path, length = open_file(spool, [depth_item("BTCUSDT", T0, 1, 10).line])
    sealed = spool.seal(path, length, KEY)

    spool.remove_sealed(sealed)

    assert list((tmp_path / "sealed").iterdir()) == []
    assert spool.usage.snapshot().bytes == 0


# --- the spool bound ----------------------------------------------------------------------


async def test_full_spool_shows_in_health_and_metrics_and_recording_goes_on(
    tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    store.down = True
    settings = pipeline_settings(tmp_path, chunk_max_bytes=2048).model_copy(
        update={"spool_max_bytes": 20_000}  # far below the 1 MiB a user may configure
    )
    pipeline = Pipeline(settings, store, metrics, options=FAST)
    items = list(numbered_items(300, pad=200))

    async with running(pipeline):
        for item in items:
            await pipeline.put(item)  # never refused, never blocked for long
        await pipeline.flush()
        await eventually(lambda: pipeline.health().spool_full)
        health = pipeline.health()
        assert "spool full" in str(health.reason)
        assert metrics.registry.get_sample_value("booktape_spool_full") == 1
        assert health.spool_bytes > 20_000

        store.down = False
        assert await pipeline.shutdown(10.0)

    health = pipeline.health()
    assert (health.spool_full, health.reason, health.spool_bytes, health.spool_chunks) == (
        False,
        None,
        0,
        0,
    )
    assert metrics.registry.get_sample_value("booktape_spool_full") == 0
    assert stored_lines(await stored_objects(store)) == [item.line for item in items]
    full_logs = [r for r in caplog.records if r.getMessage().startswith("spool full")]
    assert len(full_logs) == 1  # at most once a minute
    assert full_logs[0].levelname == "ERROR"


# --- a full disk ----------------------------------------------------------------------------


class DiskFullSpool(Spool):
    """A spool on a disk that fills up: while ``full``, a write takes ``room`` bytes at
    most (a short write), then fails with ENOSPC."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.full = False
        self.room = 0
        self.refused = 0

    def write(self, fd: int, data: memoryview) -> int:
        if not self.full:
            return super().write(fd, data)
        if self.room > 0:
            n = super().write(fd, data[: self.room])
            self.room -= n
            return n
        self.refused += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_disk_full_holds_records_applies_backpressure_and_resumes(
    tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    spool = DiskFullSpool(tmp_path / "spool")
    settings = pipeline_settings(tmp_path / "spool", queue_items=10)
    pipeline = Pipeline(settings, store, metrics, options=FAST, spool=spool)
    items = list(numbered_items(100))

    async with running(pipeline):
        for item in items[:20]:
            await pipeline.put(item)
        await pipeline.flush()
        spool.full, spool.room = True, 100  # the next write stops mid-line
        for item in items[20:30]:
            await pipeline.put(item)
        await eventually(lambda: spool.refused >= 2)
        assert pipeline.health().reason is not None
        assert "spool write failing" in str(pipeline.health().reason)

        blocked = asyncio.create_task(_put_all(pipeline, items[30:]))
        await asyncio.sleep(0.3)
        assert not blocked.done()  # the queue is full: put waits
        assert pipeline.health().queue_depth == 10

        spool.full = False  # space returns
        await asyncio.wait_for(blocked, 5.0)
        assert await pipeline.shutdown(5.0)

    assert stored_lines(await stored_objects(store)) == [item.line for item in items]
    assert pipeline.health().reason is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("spool write failed; records held in memory, retrying") == 1
    assert "spool writes resumed" in messages


async def _put_all(pipeline: Pipeline, items: list[Item]) -> None:
    for item in items:
        await pipeline.put(item)


async def test_fsync_runs_on_open_chunks(tmp_path: Path, metrics: Metrics) -> None:
    # Not observable without pulling the plug: check that the periodic fsync runs cleanly
    # and that an open chunk becomes "synced".
    pipeline = Pipeline(pipeline_settings(tmp_path), MemoryStore(), metrics, options=FAST)

    async with running(pipeline):
        await pipeline.put(depth_item("BTCUSDT", T0 + SEC, 1, 10))
        await pipeline.flush()
        await eventually(lambda: all(c.synced for c in pipeline._writer.chunks.values()))
        assert await pipeline.shutdown(5.0)
