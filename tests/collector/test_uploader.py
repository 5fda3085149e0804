"""Uploads: verified before the local file goes, oldest first, retried forever with backoff."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

import pytest

from booktape.codec import Header, encode_header
from booktape.errors import StoreIntegrityError
from booktape.keys import RawKey
from booktape.stores import MemoryStore, ObjectInfo
from collector.metrics import Metrics
from collector.spool import SealedChunk, Spool
from collector.uploader import Backoff, Uploader, verify
from tests.collector.conftest import SEC, T0, depth_item, eventually

HEADER = encode_header(Header("binance", "depth", "BTCUSDT", "eu", "c1", "h1"))
FAST_BACKOFF = Backoff(base_s=0.02, cap_s=0.1)


def sealed_chunk(spool: Spool, n: int) -> SealedChunk:
    """Seal a one-record chunk whose first record came ``n`` seconds after T0."""
    path, fd = spool.create_open("binance", "depth", "BTCUSDT", T0 + n * SEC)
    data = HEADER + depth_item("BTCUSDT", T0 + n * SEC, n * 10 + 1, n * 10 + 10).line
    os.write(fd, data)
    os.close(fd)
    spool.usage.opened(len(data))
    key = RawKey.from_recv(
        "binance", "depth", "BTCUSDT", "eu", "c1", T0 + n * SEC, n * 10 + 1, n * 10 + 10
    )
    return spool.seal(path, len(data), key)


async def run_uploader(uploader: Uploader) -> asyncio.Task[None]:
    return asyncio.create_task(uploader.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def failures(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("booktape_upload_failures_total") or 0.0


# --- pure pieces ----------------------------------------------------------------------------


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0)

    assert backoff.delay_s(1, 0.0) == 0.5
    assert backoff.delay_s(1, 0.999) < 1.0
    assert backoff.delay_s(3, 0.0) == 2.0
    assert backoff.delay_s(50, 0.999) < 30.0
    assert backoff.delay_s(10_000, 0.0) == 15.0  # no overflow on a long outage


def test_verify_checks_size_and_plain_md5_etags() -> None:
    md5 = "0123456789abcdef0123456789abcdef"

    verify(ObjectInfo("k", 10, md5, None), 10, md5)
    verify(ObjectInfo("k", 10, "ffffffffffffffffffffffffffffffff-2", None), 10, md5)  # multipart
    with pytest.raises(StoreIntegrityError, match="ETag"):
        verify(ObjectInfo("k", 10, "f" * 32, None), 10, md5)
    with pytest.raises(StoreIntegrityError, match="bytes"):
        verify(ObjectInfo("k", 9, md5, None), 10, md5)


# --- the uploader -----------------------------------------------------------------------------


async def test_uploads_oldest_first_verifies_and_deletes(tmp_path: Path, metrics: Metrics) -> None:
    spool = Spool(tmp_path)
    chunks = [sealed_chunk(spool, n) for n in (3, 1, 2)]
    contents = {c.key.key: c.path.read_bytes() for c in chunks}
    store = MemoryStore()
    uploader = Uploader(store, spool, metrics, concurrency=1, backoff=FAST_BACKOFF)
    for chunk in chunks:
        uploader.add(chunk)

    task = await run_uploader(uploader)
    await asyncio.wait_for(uploader.wait_idle(), 5.0)
    await stop(task)

    assert [key for _, key in store.calls] == [
        c.key.key for c in sorted(chunks, key=lambda c: c.key.start_ns)
    ]
    assert all(not chunk.path.exists() for chunk in chunks)
    assert {k: await store.get(k) for k in contents} == contents
    assert spool.usage.snapshot().bytes == 0
    assert metrics.registry.get_sample_value("booktape_uploads_total") == 3
    assert uploader.last_upload_ns is not None


async def test_store_down_retries_with_backoff_then_resumes(
    tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collector")
    spool = Spool(tmp_path)
    chunks = [sealed_chunk(spool, n) for n in range(3)]
    contents = {c.key.key: c.path.read_bytes() for c in chunks}
    store = MemoryStore()
    store.down = True
    uploader = Uploader(store, spool, metrics, concurrency=4, backoff=FAST_BACKOFF)
    for chunk in chunks:
        uploader.add(chunk)

    task = await run_uploader(uploader)
    await asyncio.sleep(0.5)
    assert all(c.path.exists() for c in chunks)  # nothing deleted while failing
    assert uploader.failing_since_ns is not None
    assert uploader.pending == 3
    tried = failures(metrics)
    assert 3 <= tried < 60  # a shared gate: rounds of attempts, not a storm

    store.down = False
    await asyncio.wait_for(uploader.wait_idle(), 5.0)
    await stop(task)

    assert {k: await store.get(k) for k in contents} == contents
    assert uploader.failing_since_ns is None
    assert uploader.pending == 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("upload failed, retrying") == 1  # once per failure streak
    assert messages.count("uploads resumed") == 1


class WrongEtagStore(MemoryStore):
    """Stores the object but answers with another ETag while ``lying``."""

    lying = True

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        info = await super().put_file(key, path)
        return dataclasses.replace(info, etag="0" * 32) if self.lying else info


async def test_an_unverified_upload_keeps_the_file_and_is_retried(
    tmp_path: Path, metrics: Metrics
) -> None:
    spool = Spool(tmp_path)
    chunk = sealed_chunk(spool, 0)
    store = WrongEtagStore()
    uploader = Uploader(store, spool, metrics, concurrency=2, backoff=FAST_BACKOFF)
    uploader.add(chunk)

    task = await run_uploader(uploader)
    await eventually(lambda: failures(metrics) >= 2)
    assert chunk.path.exists()
    assert "StoreIntegrityError" in str(uploader.last_error)

    store.lying = False
    await asyncio.wait_for(uploader.wait_idle(), 5.0)
    await stop(task)

    assert not chunk.path.exists()


async def test_a_vanished_file_is_reported_and_dropped(
    tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    chunk = dataclasses.replace(sealed_chunk(spool, 0), md5=None)
    chunk.path.unlink()  # removed behind the collector's back
    uploader = Uploader(MemoryStore(), spool, metrics, concurrency=1, backoff=FAST_BACKOFF)
    uploader.add(chunk)

    task = await run_uploader(uploader)
    await asyncio.wait_for(uploader.wait_idle(), 5.0)
    await stop(task)

    assert "sealed chunk vanished from the spool" in [r.getMessage() for r in caplog.records]
    assert spool.usage.snapshot().sealed_chunks == 0


async def test_cancelled_uploads_stay_pending(tmp_path: Path, metrics: Metrics) -> None:
    spool = Spool(tmp_path)
    chunk = sealed_chunk(spool, 0)
    store = MemoryStore()
    store.down = True
    uploader = Uploader(store, spool, metrics, concurrency=1, backoff=FAST_BACKOFF)
    uploader.add(chunk)

    task = await run_uploader(uploader)
    await eventually(lambda: failures(metrics) >= 1)
    await stop(task)

    assert uploader.pending == 1
    assert chunk.path.exists()


class SilentStore(MemoryStore):
    """A store whose uploads never answer until ``wake`` is set (a frozen server)."""

    def __init__(self) -> None:
        super().__init__()
        self.wake = asyncio.Event()

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        await self.wake.wait()
        return await super().put_file(key, path)


async def test_an_upload_without_answer_times_out_and_is_retried(
    tmp_path: Path, metrics: Metrics
) -> None:
    spool = Spool(tmp_path)
    chunk = sealed_chunk(spool, 0)
    store = SilentStore()
    uploader = Uploader(
        store, spool, metrics, concurrency=1, backoff=FAST_BACKOFF, attempt_timeout_s=0.05
    )
    uploader.add(chunk)

    task = await run_uploader(uploader)
    await eventually(lambda: failures(metrics) >= 2)
    assert "no answer within" in str(uploader.last_error)
    store.wake.set()
    await asyncio.wait_for(uploader.wait_idle(), 5.0)
    await stop(task)

    assert not chunk.path.exists()


def sealed_at(spool: Spool, t_ns: int, symbol: str) -> SealedChunk:
    """Seal a one-record chunk of ``symbol`` whose first record came at ``t_ns``."""
    path, fd = spool.create_open("binance", "depth", symbol, t_ns)
    header = encode_header(Header("binance", "depth", symbol, "eu", "c1", "h1"))
    data = header + depth_item(symbol, t_ns, 1, 10).line
    os.write(fd, data)
    os.close(fd)
    spool.usage.opened(len(data))
    key = RawKey.from_recv("binance", "depth", symbol, "eu", "c1", t_ns, 1, 10)
    return spool.seal(path, len(data), key)


async def test_todays_folders_stay_for_the_next_chunk_past_days_are_pruned(
    tmp_path: Path, metrics: Metrics
) -> None:
    spool = Spool(tmp_path)
    today = sealed_at(spool, T0 + 30 * SEC, "BTCUSDT")  # the clock says T0's day
    yesterday = sealed_at(spool, T0 - 10 * SEC, "ETHUSDT")  # sealed after midnight
    store = MemoryStore()
    uploader = Uploader(
        store, spool, metrics, concurrency=1, backoff=FAST_BACKOFF, clock_ns=lambda: T0 + 90 * SEC
    )
    uploader.add(today)
    uploader.add(yesterday)
    task = await run_uploader(uploader)
    await asyncio.wait_for(uploader.wait_idle(), 5.0)
    await stop(task)

    assert sorted(key for _, key in store.calls) == sorted([today.key.key, yesterday.key.key])
    assert not today.path.exists()
    assert not yesterday.path.exists()
    assert today.path.parent.is_dir()  # kept, empty: the symbol's next chunk goes there
    assert not any(today.path.parent.iterdir())
    assert not (tmp_path / "sealed/raw/binance/depth/ETHUSDT").exists()  # pruned to the top
    assert spool.usage.snapshot().bytes == 0

    following = sealed_at(spool, T0 + 60 * SEC, "BTCUSDT")  # a minute later, same folder
    assert following.path.parent == today.path.parent
    following.path.unlink()  # as if a crash came after its upload, before its removal

    fresh = Spool(tmp_path)  # the next start prunes the empty folders left behind
    assert fresh.list_sealed() == ([], [])
    assert list((tmp_path / "sealed").iterdir()) == []
