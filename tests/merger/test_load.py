"""Loading the raw chunks of one symbol-day: good days and every kind of bad input."""

from __future__ import annotations

import io
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import merger.load
from booktape.binance import DepthHeader, Market, parse_depth_header
from booktape.codec import DataRecord, Header, Msg
from booktape.fastframe import spot_depth_header
from booktape.keys import NS_PER_DAY, RawKey, parse_raw_key
from booktape.objects import RecordWriter
from booktape.stores import MemoryStore
from merger.load import Loaded, ProvenFrames, load_symbol_day
from merger.model import GapLog, StreamEvent
from merger.stitch import stitch
from tests.merger.chunks import chunk, snap

SYMBOL = "BTCUSDT"
T0 = 1_723_161_600 * 10**9 + 3_600 * 10**9  # 2024-08-09 01:00 UTC


def depth(first: int, last: int, price: str = "100.5") -> bytes:
    doc = {"e": "depthUpdate", "E": 1, "s": SYMBOL, "U": first, "u": last,
           "b": [[price, str(last % 7 + 1)]], "a": [["200.5", "1"]]}  # fmt: skip
    return orjson.dumps(doc)


def book_body(last_update_id: int) -> bytes:
    return orjson.dumps({"lastUpdateId": last_update_id, "bids": [["100.5", "3"]], "asks": []})


def events(first: int, last: int, conn: str = "c-1", t0: int = T0) -> list[DataRecord]:
    """One event per id, first..last, received 1 ms apart."""
    return [Msg(t0 + (i - first) * 10**6, conn, depth(i, i)) for i in range(first, last + 1)]


async def put(
    store: MemoryStore, source: str, records: list[DataRecord], header: Header | None = None
) -> str:
    key, data = chunk("binance", SYMBOL, source, records, header=header)
    await store.put(key, data)
    return key


async def load(store: MemoryStore, keys: list[str]) -> tuple[GapLog, list[StreamEvent], Loaded]:
    log = GapLog()
    loaded = await load_symbol_day(store, keys, market=Market.SPOT, log=log)
    return log, [e for es in loaded.streams.values() for e in es], loaded


async def test_one_region_day_loads_streams_snapshots_and_source_stats() -> None:
    store = MemoryStore()
    records = [*events(101, 110), snap(T0 + 5 * 10**6, book_body(100), SYMBOL, limit=500)]
    records.append(Msg(T0 + 20 * 10**6, "c-1", b'{"result":null,"id":1}'))  # a reply
    key = await put(store, "eu.c1", sorted(records, key=lambda r: r.t))
    log = GapLog()

    loaded = await load_symbol_day(store, [key], market=Market.SPOT, log=log)

    assert list(loaded.streams) == ["eu.c1/c-1"]
    assert [e.header.last_id for e in loaded.streams["eu.c1/c-1"]] == list(range(101, 111))
    assert [(s.snapshot.last_update_id, s.limit, s.key) for s in loaded.snapshots] == [
        (100, 500, key)
    ]
    assert loaded.sources == {"eu.c1"}
    stats = log.sources["eu.c1"]
    assert (stats.events, stats.first_update_id, stats.last_update_id, stats.gaps) == (
        10, 101, 110, 0
    )  # fmt: skip
    assert log.corrupt == []


async def test_empty_day_loads_nothing_and_stitches_nothing() -> None:
    log = GapLog()

    loaded = await load_symbol_day(MemoryStore(), [], market=Market.SPOT, log=log)
    stitcher = stitch(loaded, market=Market.SPOT, log=log)

    assert list(stitcher) == []
    assert stitcher.closing is None
    assert (loaded.streams, loaded.snapshots, loaded.sources) == ({}, [], set())
    assert log.events == 0


async def test_corrupt_chunk_is_reported_and_the_other_source_covers_it() -> None:
    store = MemoryStore()
    good = await put(store, "us.c1", [snap(T0 - 1, book_body(100), SYMBOL), *events(101, 120)])
    bad = RawKey.from_recv("binance", "depth", SYMBOL, "eu", "c1", T0, 101, 120).key
    await store.put(bad, os.urandom(300))
    log = GapLog()

    loaded = await load_symbol_day(store, [bad, good], market=Market.SPOT, log=log)
    items = list(stitch(loaded, market=Market.SPOT, log=log, primary="eu"))

    assert [c["key"] for c in log.corrupt] == [bad]
    assert log.events == 20
    assert log.filled == {"us.c1": 20}
    assert log.unrecoverable == []
    assert len(items) == 21


async def test_truncated_chunk_keeps_its_whole_records_and_is_reported() -> None:
    store = MemoryStore()
    records = events(101, 120)
    out = io.BytesIO()
    writer = RecordWriter(out, Header("binance", "depth", SYMBOL, "eu", "c1", host="h"))
    for record in records[:12]:
        writer.write_record(record)
    writer.flush()
    cut = out.getvalue()  # a crash after the flush: the frame never ends
    for record in records[12:]:
        writer.write_record(record)
    key = RawKey.from_recv("binance", "depth", SYMBOL, "eu", "c1", T0, 101, 120).key
    await store.put(key, cut)

    log, got, _ = await load(store, [key])

    assert [e.header.last_id for e in got] == list(range(101, 113))
    assert len(log.corrupt) == 1
    assert log.corrupt[0]["key"] == key
    assert "truncated" in log.corrupt[0]["error"]


async def test_duplicate_chunk_and_reuploaded_events_are_not_duplicated() -> None:
    store = MemoryStore()
    records = events(101, 110)
    key, data = chunk("binance", SYMBOL, "eu.c1", records)
    again = RawKey.from_recv("binance", "depth", SYMBOL, "eu", "c1", T0 + 10**9, 101, 110).key
    await store.put(key, data)
    await store.put(again, data)  # identical bytes under another key
    overlap = await put(store, "eu.c1", records[5:])  # the same events resealed on re-upload

    log, got, _ = await load(store, [key, again, overlap])

    assert [e.header.last_id for e in got] == list(range(101, 111))
    assert log.sources["eu.c1"].events == 10
    assert log.corrupt == []


async def test_chunk_whose_header_disagrees_with_its_key_is_reported_and_skipped() -> None:
    store = MemoryStore()
    wrong = Header("binance", "depth", "ETHUSDT", "eu", "c1", host="h")
    mislabelled = await put(store, "eu.c1", events(101, 110), header=wrong)
    other = Header("binance", "depth", SYMBOL, "us", "c1", host="h")
    moved = await put(store, "eu.c1", events(111, 115, t0=T0 + 10**9), header=other)

    log, got, _ = await load(store, [mislabelled, moved])

    assert got == []
    assert [c["key"] for c in log.corrupt] == [mislabelled, moved]
    assert "symbol" in log.corrupt[0]["error"]
    assert "region" in log.corrupt[1]["error"]


async def test_key_off_the_layout_is_reported_not_fatal() -> None:
    log, got, _ = await load(MemoryStore(), ["raw/binance/depth/BTCUSDT/nonsense.jsonl.zst"])

    assert got == []
    assert len(log.corrupt) == 1


async def test_chunks_either_side_of_midnight_load_in_order() -> None:
    store = MemoryStore()
    midnight = (T0 // NS_PER_DAY + 1) * NS_PER_DAY
    before = events(101, 105, t0=midnight - 5 * 10**6)
    after = events(106, 110, t0=midnight)
    late = await put(store, "eu.c1", after)
    early = await put(store, "eu.c1", before)

    log, got, _ = await load(store, [late, early])

    assert parse_raw_key(early).date != parse_raw_key(late).date
    for key, chunk_records in ((early, before), (late, after)):
        assert {r.t // NS_PER_DAY for r in chunk_records} == {
            (parse_raw_key(key).start_ns // NS_PER_DAY)
        }
    assert [e.header.last_id for e in got] == list(range(101, 111))
    assert log.sources["eu.c1"].gaps == 0


async def test_failed_and_non_snapshot_responses_are_ignored_not_corrupt() -> None:
    store = MemoryStore()
    records: list[DataRecord] = [
        snap(T0 - 3, b'{"code":-1003,"msg":"Too many requests"}', SYMBOL, status=429),
        snap(T0 - 2, b"<html>bad gateway</html>", SYMBOL, status=200),
        snap(T0 - 1, book_body(100), SYMBOL, status=418),
        *events(101, 103),
    ]
    key = await put(store, "eu.c1", records)

    log, got, loaded = await load(store, [key])

    assert loaded.snapshots == []
    assert len(got) == 3
    assert log.corrupt == []


async def test_holes_between_connections_count_as_the_sources_own_gaps() -> None:
    store = MemoryStore()
    first = await put(store, "eu.c1", events(101, 110, conn="c-1"))
    second = await put(store, "eu.c1", events(115, 120, conn="c-2", t0=T0 + 10**9))
    rotated = await put(store, "eu.c1", events(118, 125, conn="c-3", t0=T0 + 2 * 10**9))

    log, _, loaded = await load(store, [first, second, rotated])

    assert sorted(loaded.streams) == ["eu.c1/c-1", "eu.c1/c-2", "eu.c1/c-3"]
    assert log.sources["eu.c1"].gaps == 1  # 111..114; the c-2/c-3 overlap is no gap
    assert log.sources["eu.c1"].last_update_id == 125


# --- ProvenFrames: the regex proof made once for the copies the sources share ---------------


def combined(first: int, last: int, bids: str = '["100.5","1"]') -> bytes:
    """A frame in Binance's own combined layout (the one the regex proves)."""
    return (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
        b'"U":%d,"u":%d,"b":[%s],"a":[["200.5","2"]]}}' % (first, last, bids.encode())
    )


class CountedProofs:
    """spot_depth_header that keeps the frames it was given, in order."""

    def __init__(self) -> None:
        self.proved: list[bytes] = []

    def __call__(self, frame: bytes) -> DepthHeader | None:
        self.proved.append(frame)
        return spot_depth_header(frame)


def test_a_frame_proven_in_the_chunk_before_is_not_proven_again() -> None:
    counted = CountedProofs()
    proved = counted.proved
    proofs = ProvenFrames(counted)
    frame = combined(101, 105)
    proofs.next_chunk()
    first = proofs(frame)
    proofs.next_chunk()
    again = proofs(bytes(bytearray(frame)))  # the same bytes in another object (another source)
    assert first is not None
    assert again == first == spot_depth_header(frame)
    assert proved == [frame]
    # the same ids with other levels: other bytes, proven on their own
    other = combined(101, 105, '["100.5","9"]')
    assert proofs(other) == spot_depth_header(other)
    assert proved == [frame, other]


def test_proven_frames_hold_two_chunks_at_most() -> None:
    counted = CountedProofs()
    proved = counted.proved
    proofs = ProvenFrames(counted)
    frame = combined(7, 7)
    proofs.next_chunk()
    proofs(frame)
    proofs.next_chunk()
    proofs(frame)  # seen in the chunk before: kept for the next one
    proofs.next_chunk()
    proofs.next_chunk()  # a chunk without it: forgotten
    proofs(frame)
    assert proved == [frame, frame]


def test_a_frame_the_layout_refuses_is_never_remembered() -> None:
    counted = CountedProofs()
    proved = counted.proved
    proofs = ProvenFrames(counted)
    spaced = combined(5, 6).replace(b'"U":', b'"U": ')  # JSON, not Binance's layout
    for _ in range(2):
        proofs.next_chunk()
        assert proofs(spaced) is None  # left to the reader's orjson check
    assert proved == [spaced, spaced]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.just(None),  # the next chunk starts
            st.tuples(st.integers(1, 4), st.integers(0, 2), st.booleans()),
        ),
        max_size=40,
    )
)
def test_proven_frames_answer_what_the_proof_answers(
    steps: list[tuple[int, int, bool] | None],
) -> None:
    proofs = ProvenFrames(spot_depth_header)
    for step in steps:
        if step is None:
            proofs.next_chunk()
            continue
        first, qty, spaced = step
        frame = combined(first, first + 1, f'["100.5","{qty}"]')
        if spaced:
            frame = frame.replace(b',"a":', b', "a":')
        assert proofs(bytes(bytearray(frame))) == spot_depth_header(frame)


async def test_identical_frames_of_three_sources_read_as_each_source_recorded_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = CountedProofs()
    monkeypatch.setattr(merger.load, "spot_depth_header", counted)  # what ChunkReader uses
    proved = counted.proved
    store = MemoryStore()
    frames = [combined(i, i) for i in range(101, 111)]
    keys = []
    for n, source in enumerate(("eu.c1", "us.c1", "ap.c1")):
        records: list[DataRecord] = [
            Msg(T0 + i * 10**6 + n, f"c-{n}", f) for i, f in enumerate(frames)
        ]
        keys.append(await put(store, source, records))
    log, read, _ = await load(store, keys)
    assert not log.corrupt
    assert len(read) == 30
    assert sorted(proved) == sorted(frames)  # one source's copies proven, the others' known
    for event in read:
        assert event.header == parse_depth_header(event.frame, Market.SPOT)
        assert event.source in {"eu.c1", "us.c1", "ap.c1"}
        assert event.recv_ns % 10**6 == ("eu.c1", "us.c1", "ap.c1").index(event.source)
