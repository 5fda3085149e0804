"""Sealing chunks in batches behind one durability barrier (Spool.seal_many, the sealer)."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from booktape.codec import Header, encode_header
from booktape.keys import RawKey
from booktape.stores import MemoryStore
from collector import spool as spool_module
from collector.metrics import Metrics
from collector.pipeline import SEAL_BATCH, Pipeline
from collector.spool import SealedChunk, SealJob, Spool, sealed_content_equals
from tests.collector.conftest import (
    FAST,
    SEC,
    T0,
    depth_item,
    numbered_items,
    pipeline_settings,
    running,
    stored_lines,
    stored_objects,
)

SYMBOLS = tuple(f"S{n:03d}USDT" for n in range(5))


def open_chunks(spool: Spool, count: int) -> list[tuple[SealJob, bytes]]:
    """``count`` open files of distinct symbols, each with a header and two records."""
    out = []
    for n in range(count):
        symbol = SYMBOLS[n % len(SYMBOLS)] if n < len(SYMBOLS) else f"X{n:03d}USDT"
        header = encode_header(Header("binance", "depth", symbol, "eu", "c1", "h1"))
        lines = [depth_item(symbol, T0 + i, 10 * i + 1, 10 * i + 10).line for i in range(2)]
        data = header + b"".join(lines)
        path, fd = spool.create_open("binance", "depth", symbol, T0)
        os.write(fd, data)
        os.close(fd)
        spool.usage.opened(len(data))
        key = RawKey.from_recv("binance", "depth", symbol, "eu", "c1", T0, 1, 20)
        out.append((SealJob(path, len(data), key), data))
    return out


class SyncSpy:
    """Stands in for sync_filesystem: records which open files still exist at each sync."""

    def __init__(self, jobs: Sequence[SealJob], fail_at: int | None = None) -> None:
        self.jobs = jobs
        self.fail_at = fail_at
        self.open_files_at_sync: list[int] = []
        self.sealed_at_sync: list[int] = []

    def __call__(self, fd: int) -> bool:
        os.fstat(fd)  # a real descriptor of the spool's filesystem
        self.open_files_at_sync.append(sum(job.open_path.exists() for job in self.jobs))
        spool_root = self.jobs[0].open_path.parents[4]
        self.sealed_at_sync.append(len(list(spool_root.rglob("*.zst"))))
        if self.fail_at == len(self.open_files_at_sync):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return True


def test_a_batch_is_made_durable_by_two_syncs_before_any_open_file_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    chunks = open_chunks(spool, 5)
    jobs = [job for job, _ in chunks]
    spy = SyncSpy(jobs)
    monkeypatch.setattr(spool_module, "sync_filesystem", spy)
    fsyncs: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", fsyncs.append)

    results = spool.seal_many(jobs)

    # First sync: temp files written, nothing renamed yet; second: all renamed; the open
    # files are all still there at both, and gone after.
    assert spy.open_files_at_sync == [5, 5]
    assert spy.sealed_at_sync == [0, 5]
    assert fsyncs == []  # the syncs replace every per-file fsync
    for (job, data), result in zip(chunks, results, strict=True):
        assert isinstance(result, SealedChunk)
        assert not job.open_path.exists()
        assert sealed_content_equals(result.path, data)
    usage = spool.usage.snapshot()
    assert (usage.open_chunks, usage.sealed_chunks) == (0, 5)
    assert usage.sealed_bytes == sum(r.size for r in results if isinstance(r, SealedChunk))


def test_without_syncfs_every_file_and_folder_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    chunks = open_chunks(spool, 3)
    monkeypatch.setattr(spool_module, "sync_filesystem", lambda fd: False)
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)

    results = spool.seal_many([job for job, _ in chunks])

    paths = [r.path for r in results if isinstance(r, SealedChunk)]
    assert len(paths) == 3
    files = {(os.stat(p).st_dev, os.stat(p).st_ino) for p in paths}
    folders = {(os.stat(p.parent).st_dev, os.stat(p.parent).st_ino) for p in paths}
    assert set(synced) == files | folders
    assert len(synced) == len(files) + len(folders) == 6


def test_a_job_that_fails_fails_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    chunks = open_chunks(spool, 3)
    jobs = [job for job, _ in chunks]
    short = SealJob(jobs[1].open_path, jobs[1].length + 100, jobs[1].key)  # claims more

    results = spool.seal_many([jobs[0], short, jobs[2]])

    assert isinstance(results[1], OSError)
    assert results[1].errno == errno.EIO
    assert jobs[1].open_path.read_bytes() == chunks[1][1]  # untouched
    for n in (0, 2):
        result = results[n]
        assert isinstance(result, SealedChunk)
        assert sealed_content_equals(result.path, chunks[n][1])
        assert not jobs[n].open_path.exists()
    assert list(tmp_path.rglob("*.tmp")) == []


@pytest.mark.parametrize("fail_at", [1, 2])
def test_a_failed_sync_fails_the_batch_and_a_retry_seals_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    spool = Spool(tmp_path)
    chunks = open_chunks(spool, 4)
    jobs = [job for job, _ in chunks]
    monkeypatch.setattr(spool_module, "sync_filesystem", SyncSpy(jobs, fail_at=fail_at))

    results = spool.seal_many(jobs)

    assert all(isinstance(r, OSError) and r.errno == errno.EIO for r in results)
    for job, data in chunks:
        assert job.open_path.read_bytes() == data  # nothing lost: every open file is there
    assert list(tmp_path.rglob("*.tmp")) == []
    assert spool.usage.snapshot().sealed_chunks == 0

    monkeypatch.setattr(spool_module, "sync_filesystem", SyncSpy(jobs))
    again = spool.seal_many(jobs)

    for (job, data), result in zip(chunks, again, strict=True):
        assert isinstance(result, SealedChunk)
        assert sealed_content_equals(result.path, data)
        assert not job.open_path.exists()
    assert spool.usage.snapshot().sealed_chunks == 4


def open_files_left(root: Path) -> list[Path]:
    return list(root.rglob("*.jsonl"))


class RecordingSpool(Spool):
    """Records each batch's size; its first batch's first job fails once (ENOSPC)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.batches: list[int] = []

    def seal_many(self, jobs: Sequence[SealJob]) -> list[SealedChunk | OSError]:
        self.batches.append(len(jobs))
        results = super().seal_many(jobs[1:] if len(self.batches) == 1 else jobs)
        if len(self.batches) == 1:
            return [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), *results]
        return results


async def test_the_sealer_seals_a_burst_in_batches_and_retries_a_failed_chunk(
    tmp_path: Path, metrics: Metrics
) -> None:
    symbols = tuple(f"B{n:03d}USDT" for n in range(SEAL_BATCH + 6))
    settings = pipeline_settings(tmp_path, symbols=",".join(symbols))
    store = MemoryStore()
    spool = RecordingSpool(tmp_path)
    items = list(numbered_items(2 * len(symbols), symbols=symbols))
    # A clock inside the items' minute: no chunk is cut before the shutdown cuts them all.
    clock = lambda: T0 + SEC  # noqa: E731
    pipeline = Pipeline(settings, store, metrics, options=FAST, spool=spool, clock_ns=clock)
    async with running(pipeline):
        for item in items:
            await pipeline.put(item)
        assert await pipeline.shutdown(10.0)  # cuts every symbol's chunk at once

    assert spool.batches[0] == SEAL_BATCH  # the burst, a batch at a time
    assert all(size <= SEAL_BATCH for size in spool.batches)
    assert sum(spool.batches) == len(symbols) + 1  # every chunk once, the failed one twice
    objects = await stored_objects(store)
    assert len(objects) == len(symbols)
    for symbol in symbols:
        mine = {k: v for k, v in objects.items() if f"/{symbol}/" in k}
        assert stored_lines(mine) == [item.line for item in items if item.symbol == symbol]
    assert open_files_left(tmp_path) == []
