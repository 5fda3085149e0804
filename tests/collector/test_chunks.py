"""Chunk rotation (time, size, UTC midnight), chunk keys, and what recovery reads back."""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import errno
import os
import sys
from pathlib import Path

import pytest

from booktape.codec import Header, decode_line, encode_header, encode_msg, encode_snap
from booktape.errors import CodecError, InvalidNameError
from booktape.keys import NS_PER_DAY, RawKey, parse_raw_key
from booktape.stores import MemoryStore
from collector import syncfs as syncfs_module
from collector.chunks import (
    ChunkWriter,
    KeyClaims,
    OpenChunk,
    check_item,
    record_ids,
    rotation_deadline_ns,
    summarize,
)
from collector.metrics import Metrics
from collector.pipeline import Pipeline
from collector.spool import Spool
from collector.syncfs import fsync_and_close, sync_and_close
from collector.types import Item
from tests.collector.conftest import (
    FAST,
    SEC,
    T0,
    conn_item,
    depth_frame,
    depth_item,
    eventually,
    pipeline_settings,
    running,
    stored_lines,
    stored_objects,
)

MIDNIGHT = T0 + NS_PER_DAY  # 2026-01-02T00:00:00Z
MS = 1_000_000


def make_writer(
    tmp_path: Path, *, rotation_s: float = 60.0, max_bytes: int = 1 << 20
) -> ChunkWriter:
    return ChunkWriter(
        Spool(tmp_path / "spool"),
        exchange="binance",
        region="eu",
        collector="c1",
        host="h1",
        rotation_s=rotation_s,
        chunk_max_bytes=max_bytes,
    )


class FakeClock:
    """A settable wall clock in ns."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# --- pure rules -------------------------------------------------------------------------------


def test_rotation_deadline_is_the_next_aligned_boundary() -> None:
    assert rotation_deadline_ns(T0 + 12_345 * MS, 60 * SEC) == T0 + 60 * SEC
    assert rotation_deadline_ns(T0 + 60 * SEC, 60 * SEC) == T0 + 120 * SEC  # on the boundary


def test_rotation_deadline_never_passes_utc_midnight() -> None:
    # 86400 is not a multiple of 7: the 7 s grid would cross midnight, the deadline does not.
    assert rotation_deadline_ns(MIDNIGHT - 2 * SEC, 7 * SEC) == MIDNIGHT


def test_chunk_is_cut_when_the_next_rotation_boundary_is_reached(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)

    assert writer.route(depth_item("BTCUSDT", T0 + 1 * SEC, 1, 10)) is None
    assert writer.route(depth_item("BTCUSDT", T0 + 59 * SEC, 11, 20)) is None
    cut = writer.route(depth_item("BTCUSDT", T0 + 60 * SEC, 21, 30))

    assert cut is not None
    assert (cut.records, cut.first_id, cut.last_id) == (2, 1, 20)
    assert cut.key.key == "raw/binance/depth/BTCUSDT/2026-01-01/eu.c1/000001000-1-20.jsonl.zst"
    assert writer.chunks[("depth", "BTCUSDT")].first_recv_ns == T0 + 60 * SEC


def test_expire_cuts_chunks_whose_time_is_up_without_new_records(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.route(depth_item("BTCUSDT", T0 + 1 * SEC, 1, 10))
    writer.route(depth_item("ETHUSDT", T0 + 2 * SEC, 5, 6))

    assert writer.expire(T0 + 59 * SEC) == []
    due = writer.expire(T0 + 60 * SEC)

    assert sorted(c.header.symbol for c in due) == ["BTCUSDT", "ETHUSDT"]
    assert writer.chunks == {}


def test_chunk_is_cut_before_it_exceeds_the_size_cap(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, max_bytes=2048)
    items = [
        depth_item("BTCUSDT", T0 + i * MS, i * 10 + 1, i * 10 + 10, pad=300) for i in range(20)
    ]

    cuts = [c for item in items if (c := writer.route(item)) is not None]

    assert len(cuts) >= 3
    assert all(c.size <= 2048 for c in cuts)
    assert sum(c.records for c in cuts) + writer.chunks[("depth", "BTCUSDT")].records == 20


def test_size_cut_waits_for_the_next_millisecond(tmp_path: Path) -> None:
    # Two chunks of a stream starting in the same ms would share a key: keep appending.
    writer = make_writer(tmp_path, max_bytes=1024)
    same_ms = [depth_item("BTCUSDT", T0 + 5, i * 10 + 1, i * 10 + 10, pad=300) for i in range(5)]

    assert all(writer.route(item) is None for item in same_ms)
    assert writer.route(depth_item("BTCUSDT", T0 + MS, 51, 60)) is not None


def test_records_of_another_utc_date_start_a_new_chunk(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, rotation_s=3600 * 24 * 7)  # only the date can cut here
    writer.route(depth_item("BTCUSDT", MIDNIGHT + 100 * MS, 11, 20))

    cut = writer.route(depth_item("BTCUSDT", MIDNIGHT - 100 * MS, 1, 10))  # the clock stepped back

    assert cut is not None
    assert cut.key.date == dt.date(2026, 1, 2)
    assert writer.chunks[("depth", "BTCUSDT")].key.date == dt.date(2026, 1, 1)


def test_key_carries_first_U_and_last_u_and_0_0_without_ids(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.route(conn_item("BTCUSDT", T0 + SEC))
    writer.route(depth_item("BTCUSDT", T0 + 2 * SEC, 100, 170))
    writer.route(depth_item("BTCUSDT", T0 + 3 * SEC, 171, 240))
    writer.route(conn_item("BTCUSDT", T0 + 4 * SEC))
    writer.route(conn_item("ETHUSDT", T0 + SEC))

    btc, eth = writer.take_all()

    assert btc.key.key.endswith("/000001000-100-240.jsonl.zst")
    assert eth.key.key.endswith("/000001000-0-0.jsonl.zst")


def test_invalid_names_are_refused_before_any_chunk_exists(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)

    with pytest.raises(InvalidNameError):
        writer.route(Item("BTC.USDT", b"{}\n", T0))
    with pytest.raises(InvalidNameError):
        writer.route(Item("BTCUSDT", b"{}\n", T0, channel="book"))  # not a binance channel


def test_flush_writes_header_then_lines_to_the_open_file(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    items = [depth_item("BTCUSDT", T0 + i, i + 1, i + 1) for i in range(3)]
    for item in items:
        writer.route(item)
    chunk: OpenChunk = writer.chunks[("depth", "BTCUSDT")]

    written = writer.flush([chunk])
    assert not chunk.synced
    fsync_and_close(writer.dup_unsynced([chunk]))
    assert chunk.synced
    ChunkWriter.close(chunk)

    assert chunk.path is not None
    data = chunk.path.read_bytes()
    assert written == len(data) == chunk.size == chunk.written
    assert data == writer.header("depth", "BTCUSDT")[1] + b"".join(i.line for i in items)
    assert chunk.path.relative_to(tmp_path / "spool").as_posix() == (
        f"open/binance/depth/BTCUSDT/{T0}.jsonl"
    )


# --- recovery reads the key fields back ---------------------------------------------------


def test_summarize_recomputes_time_and_ids_and_drops_a_cut_line() -> None:
    header = Header("binance", "depth", "BTCUSDT", "eu", "c1", "h1")
    lines = [
        encode_msg(T0 + 5, "c1", b'{"result":null,"id":1}'),
        encode_msg(T0 + 6, "c1", depth_frame("BTCUSDT", 100, 110)),
        encode_msg(T0 + 7, "c1", depth_frame("BTCUSDT", 111, 150)),
    ]
    data = encode_header(header) + b"".join(lines) + lines[0][:20]  # a cut last line

    summary = summarize(data)

    assert summary.header == header
    assert summary.length == len(data) - 20
    assert (summary.records, summary.first_recv_ns) == (3, T0 + 5)
    assert (summary.first_id, summary.last_id) == (100, 150)


def test_summarize_refuses_a_file_without_a_whole_header() -> None:
    with pytest.raises(CodecError):
        summarize(b'{"k":"hdr","v":1,"exch')


def test_record_ids_follow_each_exchange() -> None:
    spot = Header("binance", "depth", "BTCUSDT", "eu", "c1", "h")
    usdm = Header("binance-usdm", "depth", "BTCUSDT", "eu", "c1", "h")
    book = Header("coinbase", "book", "BTC-USD", "eu", "c1", "h")
    spot_msg = decode_line(encode_msg(T0, "c", depth_frame("BTCUSDT", 5, 9)))
    futures = b'{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":5,"u":9,"pu":3,"b":[],"a":[]}'
    snap = decode_line(encode_snap(T0, T0, "c", "/products/BTC-USD/book", b'{"sequence":42}'))

    assert record_ids(spot, spot_msg) == (5, 9)
    assert record_ids(usdm, decode_line(encode_msg(T0, "c", futures))) == (5, 9)
    assert record_ids(usdm, spot_msg) is None  # a futures event needs its pu
    assert record_ids(book, snap) == (42, 42)
    assert record_ids(spot, decode_line(encode_msg(T0, "c", b'{"result":null}'))) is None


# --- through the pipeline, read back from the store -------------------------------------------


async def test_time_rotation_with_an_injected_clock(tmp_path: Path, metrics: Metrics) -> None:
    clock = FakeClock(T0)
    store = MemoryStore()
    pipeline = Pipeline(
        pipeline_settings(tmp_path), store, metrics, clock_ns=clock, host="h1", options=FAST
    )
    first = [depth_item("BTCUSDT", T0 + i * SEC, 10 * i + 1, 10 * i + 10) for i in range(1, 6)]
    second = [depth_item("BTCUSDT", T0 + 61 * SEC, 61, 70)]

    async with running(pipeline):
        for item in first:
            await pipeline.put(item)
        await pipeline.flush()
        clock.now = T0 + 60 * SEC  # the minute is over: the tick cuts the chunk
        await eventually(lambda: len(store.calls) == 1)
        for item in second:
            await pipeline.put(item)
        assert await pipeline.shutdown(5.0)

    objects = await stored_objects(store)
    assert sorted(objects) == [
        "raw/binance/depth/BTCUSDT/2026-01-01/eu.c1/000001000-11-60.jsonl.zst",
        "raw/binance/depth/BTCUSDT/2026-01-01/eu.c1/000101000-61-70.jsonl.zst",
    ]
    assert stored_lines(objects) == [item.line for item in first + second]
    assert metrics.registry.get_sample_value("booktape_chunks_sealed_total") == 2


async def test_records_either_side_of_midnight_land_in_two_dated_objects(
    tmp_path: Path, metrics: Metrics
) -> None:
    store = MemoryStore()
    pipeline = Pipeline(pipeline_settings(tmp_path), store, metrics, options=FAST)
    before = depth_item("BTCUSDT", MIDNIGHT - 100 * MS, 1, 10)  # 23:59:59.900
    after = depth_item("BTCUSDT", MIDNIGHT + 100 * MS, 11, 20)  # 00:00:00.100

    async with running(pipeline):
        await pipeline.put(before)
        await pipeline.put(after)
        assert await pipeline.shutdown(5.0)

    objects = await stored_objects(store)
    assert sorted(objects) == [
        "raw/binance/depth/BTCUSDT/2026-01-01/eu.c1/235959900-1-10.jsonl.zst",
        "raw/binance/depth/BTCUSDT/2026-01-02/eu.c1/000000100-11-20.jsonl.zst",
    ]
    assert stored_lines(objects) == [before.line, after.line]


async def test_size_rotation_objects_read_back_byte_for_byte(
    tmp_path: Path, metrics: Metrics
) -> None:
    store = MemoryStore()
    settings = pipeline_settings(tmp_path, chunk_max_bytes=4096, symbols="BTCUSDT,ETHUSDT")
    pipeline = Pipeline(settings, store, metrics, options=FAST)
    items = [
        depth_item(("BTCUSDT", "ETHUSDT")[i % 2], T0 + i * MS, i * 10 + 1, i * 10 + 10, pad=400)
        for i in range(200)
    ]

    async with running(pipeline):
        for item in items:
            await pipeline.put(item)
        assert await pipeline.shutdown(5.0)

    objects = await stored_objects(store)
    assert len(objects) > 10
    assert all(len(data) <= 4096 for data in objects.values())
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = {k: v for k, v in objects.items() if parse_raw_key(k).symbol == symbol}
        assert stored_lines(mine) == [i.line for i in items if i.symbol == symbol]
        for key, data in mine.items():  # each key names its first U and last u
            parsed = parse_raw_key(key)
            lines = data.splitlines()[1:]
            assert lines[0].count(b'"U":%d,' % parsed.first_id) == 1
            assert lines[-1].count(b'"u":%d,' % parsed.last_id) == 1


def test_key_claims_move_a_taken_key_by_one_millisecond(tmp_path: Path) -> None:
    keys = KeyClaims(Spool(tmp_path))
    key = depth_chunk_key(T0 + 5 * MS)

    assert keys.claim(key) == key
    moved = keys.claim(key)  # the clock stepped back onto the same ms and ids

    assert moved.time_ms == key.time_ms + 1
    assert keys.claim(key).time_ms == key.time_ms + 2


def test_key_claims_remember_each_streams_last_keys(tmp_path: Path) -> None:
    keys = KeyClaims(Spool(tmp_path), per_stream=3)
    first, *rest = (depth_chunk_key(T0 + i * MS) for i in range(4))
    for key in (first, *rest):
        assert keys.claim(key) == key
    keys.remember(rest[-1])  # remembered already: no second entry
    other = dataclasses.replace(first, symbol="ETHUSDT")

    assert keys.claim(other) == other  # another stream's keys never clash
    assert keys.claim(rest[-1]).time_ms == rest[-1].time_ms + 1  # among its stream's last 3
    assert keys.claim(first) == first  # forgotten: the oldest of its stream's four


def depth_chunk_key(first_ns: int) -> RawKey:
    return RawKey.from_recv("binance", "depth", "BTCUSDT", "eu", "c1", first_ns, 1, 10)


@pytest.mark.parametrize(
    "item",
    [
        Item("BTCUSDT", b'{"k":"msg"}', T0),  # no newline
        Item("BTCUSDT", b"{}\n{}\n", T0),  # two lines
        Item("BTCUSDT", b"{}\n", -1),
        Item("BTCUSDT", b"{}\n", T0, first_id=-5, last_id=3),
    ],
)
def test_items_no_chunk_can_hold_are_refused(item: Item) -> None:
    with pytest.raises(CodecError):
        check_item(item)


def test_open_files_are_synced_with_one_syncfs_per_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sys.platform.startswith("linux") == syncfs_module.HAVE_SYNCFS
    writer = make_writer(tmp_path)
    for n, symbol in enumerate(("BTCUSDT", "ETHUSDT", "BNBUSDT")):
        writer.route(depth_item(symbol, T0 + n, n + 1, n + 1))
    chunks = list(writer.chunks.values())
    writer.flush(chunks)
    synced: list[int] = []
    real = syncfs_module._SYNCFS

    def counting(fd: int) -> int:
        synced.append(fd)
        return real(fd) if real is not None else 0

    monkeypatch.setattr(syncfs_module, "_SYNCFS", counting)
    fds = writer.dup_unsynced(chunks, one_per_filesystem=True)
    assert len(fds) == 1  # three files, one filesystem
    assert all(chunk.synced for chunk in chunks)
    sync_and_close(fds)
    assert synced == fds
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fds[0])  # closed
    assert writer.dup_unsynced(chunks, one_per_filesystem=True) == []  # nothing new written

    def failing(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(syncfs_module, "_SYNCFS", failing)
    writer.route(depth_item("BTCUSDT", T0 + 9, 10, 10))
    writer.flush(chunks)
    fds = writer.dup_unsynced(chunks, one_per_filesystem=True)
    with pytest.raises(OSError, match="syncfs") as failed:
        sync_and_close(fds)
    assert failed.value.errno == errno.EIO
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fds[0])  # closed all the same

    fsynced: list[int] = []  # without syncfs: one fsync per file
    monkeypatch.setattr(syncfs_module, "_SYNCFS", None)
    monkeypatch.setattr(syncfs_module.os, "fsync", fsynced.append)
    for chunk in chunks:
        chunk.synced = False
    fds = writer.dup_unsynced(chunks)
    sync_and_close(fds)
    assert fsynced == fds
    assert len(fds) == 3
    for chunk in chunks:
        ChunkWriter.close(chunk)
