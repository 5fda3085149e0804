"""Streaming a symbol-day chunk by chunk: same canonical stream as in memory, bounded memory."""

from __future__ import annotations

import dataclasses
import datetime as dt

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import merger.load
from booktape.binance import Market
from booktape.codec import DataRecord, Msg, Snap
from booktape.keys import RawKey, parse_raw_key
from merger.feed import Feed
from merger.load import ChunkReader, Loaded, SourceTracker, plan_sources
from merger.model import BookImage, GapLog, StreamEvent
from merger.stitch import stitch
from tests.merger.chunks import chunk, rotate
from tests.merger.test_stitch_property import recordings
from tests.truestream import State, updates

T0 = 1_723_161_600 * 10**9  # 2024-08-09 00:00 UTC


class DictFetcher:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.fetched: list[str] = []

    def get(self, key: str) -> bytes:
        self.fetched.append(key)
        return self.objects[key]

    def prefetch(self, key: str) -> None:
        assert key in self.objects


def as_chunks(loaded: Loaded, per_chunk: int) -> dict[str, bytes]:
    """Write each source's events and snapshots as raw chunks, in receive order.

    Receive times are the generator's (1 ms per id) times ten: connections' batches of the
    same ids then arrive up to a second apart, within the feed's catch-up.
    """
    by_source: dict[str, list[DataRecord]] = {}
    for name, events in loaded.streams.items():
        conn = name.split("/", 1)[1]
        for e in events:
            by_source.setdefault(e.source, []).append(Msg(T0 + e.recv_ns * 10, conn, e.frame))
    for n, s in enumerate(loaded.snapshots):  # each its own response time: distinct records
        body = orjson.dumps(
            {"lastUpdateId": s.snapshot.last_update_id, "bids": s.snapshot.bids,
             "asks": s.snapshot.asks}
        )  # fmt: skip
        request = "/api/v3/depth?symbol=SIM&limit=1000"
        t = T0 + s.recv_ns * 10 + n * 10**6  # keys name the millisecond: keep them apart
        by_source.setdefault(s.source, []).append(Snap(t, t - 1, "rest", request, body, {}))
    objects: dict[str, bytes] = {}
    for source, records in by_source.items():
        records.sort(key=lambda r: r.t)
        for part in rotate(records, per_chunk):
            key, data = chunk("binance", "SIM", source, part)
            objects[key] = data
    return objects


def summary(items: list[object]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for item in items:
        if isinstance(item, BookImage):
            out.append(("image", item.reason, item.last_update_id, item.bids, item.asks))
        else:
            assert isinstance(item, StreamEvent)
            out.append(("event", item.header.prev_id, item.header.last_id, item.frame))
    return out


@settings(max_examples=120, deadline=None)
@given(data=st.data(), updates=updates(100))
def test_streamed_day_gives_the_stream_the_whole_day_in_memory_gives(
    data: st.DataObject, updates: list[object]
) -> None:
    initial: State = {("bid", "5"): "1", ("ask", "30"): "2"}
    loaded = data.draw(recordings(updates, initial))  # type: ignore[arg-type]
    objects = as_chunks(loaded, data.draw(st.integers(1, 6)))
    primary = data.draw(st.sampled_from([None, "r0", "r1"]))
    lookahead = data.draw(st.integers(0, 2))
    mem_log = GapLog()
    in_memory = list(stitch(loaded, market=Market.SPOT, log=mem_log, primary=primary))
    log = GapLog()
    reader = ChunkReader(Market.SPOT, log)
    feed = Feed(plan_sources(list(objects), log), reader, DictFetcher(objects),
                lookahead=lookahead, catch_up_ns=2 * 10**9)  # fmt: skip

    streamed = list(stitch(feed, market=Market.SPOT, log=log, primary=primary))

    assert summary(streamed) == summary(in_memory)

    def audit_of(log: GapLog) -> tuple[object, ...]:
        a = log.audit
        return a.checked, a.matched, a.mismatched, [(u, ok) for _, u, ok in a.points]

    assert (log.events, log.filled, audit_of(log), log.crossed_books) == (
        mem_log.events, mem_log.filled, audit_of(mem_log), mem_log.crossed_books
    )  # fmt: skip
    assert [(g.from_update_id, g.to_update_id) for g in log.unrecoverable] == [
        (g.from_update_id, g.to_update_id) for g in mem_log.unrecoverable
    ]
    assert log.unusable_before_anchor == mem_log.unusable_before_anchor
    assert log.corrupt == []


def depth_frame(first: int, last: int) -> bytes:
    return orjson.dumps(
        {"e": "depthUpdate", "E": last, "s": "SIM", "U": first, "u": last,
         "b": [[str(100 + last % 50), str(last % 5)]], "a": [[str(200 + last % 50), "1"]]}
    )  # fmt: skip


def long_day(events: int, per_chunk: int, sources: int = 3) -> dict[str, bytes]:
    """``sources`` sources recording the same ids, one event per 100 ms, chunks rotating."""
    body = orjson.dumps({"lastUpdateId": 1000, "bids": [["1", "1"]], "asks": [["999", "1"]]})
    objects: dict[str, bytes] = {}
    for n in range(sources):
        records: list[DataRecord] = [
            Snap(T0, T0 - 1, "rest", "/api/v3/depth?symbol=SIM&limit=1000", body, {})
        ]
        records += [
            Msg(T0 + i * 10**8 + n * 10**6, "c", depth_frame(1001 + i, 1001 + i))
            for i in range(events)
        ]
        for part in rotate(records, per_chunk):
            key, data = chunk("binance", "SIM", f"r{n}.c1", part)
            objects[key] = data
    return objects


def peak_queued(objects: dict[str, bytes]) -> tuple[int, int]:
    """(most events queued at once while stitching, events stitched)."""
    log = GapLog()
    feed = Feed(plan_sources(list(objects), log), ChunkReader(Market.SPOT, log),
                DictFetcher(objects))  # fmt: skip
    peak = 0
    for _ in stitch(feed, market=Market.SPOT, log=log, primary="r0"):
        peak = max(peak, sum(len(q) for q in feed.streams.values()))
    assert log.unrecoverable == []
    return peak, log.events


def test_memory_is_bounded_by_a_few_chunks_not_by_the_day() -> None:
    short_peak, short_events = peak_queued(long_day(2_000, per_chunk=200))
    long_peak, long_events = peak_queued(long_day(20_000, per_chunk=200))

    assert (short_events, long_events) == (2_000, 20_000)
    assert long_peak == short_peak  # ten times the day, the same memory
    assert long_peak <= 3 * 3 * 200  # three sources, a few chunks each


def test_a_copy_read_long_after_its_chunk_repeats_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the reader remembers the digests of recent chunks only; a copy of a chunk under a
    # key far from it (here: after the day's last chunk) is read again, and changes
    # nothing: its events are dropped as given already, its snapshot is behind the book
    monkeypatch.setattr(merger.load, "RECENT_CHUNKS", 2)
    objects = long_day(1_000, per_chunk=100, sources=2)
    first = min(k for k in objects if "/r0.c1/" in k)
    late = RawKey.from_recv("binance", "depth", "SIM", "r0", "c1", T0 + 3_600 * 10**9, 1, 2)
    copied = {**objects, late.key: objects[first]}

    def merged(objects: dict[str, bytes]) -> tuple[object, ...]:
        log = GapLog()
        feed = Feed(plan_sources(list(objects), log), ChunkReader(Market.SPOT, log),
                    DictFetcher(objects))  # fmt: skip
        items = summary(list(stitch(feed, market=Market.SPOT, log=log, primary="r0")))
        sources = {name: dataclasses.astuple(stats) for name, stats in log.sources.items()}
        audit = (log.audit.checked, log.audit.matched, log.audit.mismatched)
        return items, sources, audit, log.events, log.corrupt

    once, twice = merged(objects), merged(copied)
    assert twice == once
    assert once[3] == 1_000  # type: ignore[index]


def test_chunks_are_read_only_as_far_as_the_book_has_come() -> None:
    objects = long_day(1_000, per_chunk=100, sources=1)
    log = GapLog()
    fetcher = DictFetcher(objects)
    feed = Feed(plan_sources(list(objects), log), ChunkReader(Market.SPOT, log), fetcher)
    items = iter(stitch(feed, market=Market.SPOT, log=log))

    for _ in range(50):
        next(items)

    assert 1 <= len(fetcher.fetched) <= 3  # the first chunk and the look-ahead, of 11
    rest = list(items)
    assert len(rest) == 1_001 - 50
    assert len(fetcher.fetched) == len(objects)


def test_source_tracker_counts_own_gaps_and_waits_for_a_lagging_connection() -> None:
    tracker = SourceTracker()
    second = 10**9
    for u in range(101, 111):
        tracker.add(u - 1, u, u, u * second // 100)
    tracker.add(114, 115, 120, 2 * second)  # ahead of a hole: 111..114 missing for now
    tracker.add(110, 111, 116, 3 * second)  # the rotating connection fills it in time
    tracker.add(130, 131, 131, 4 * second)  # a real hole: 121..130
    tracker.add(131, 132, 132, 200 * second)  # nothing filled it within the horizon

    stats = tracker.stats()

    assert (stats.events, stats.first_update_id, stats.last_update_id) == (14, 101, 132)
    assert stats.gaps == 1


def test_reader_reports_bad_keys_and_keeps_key_order_per_source() -> None:
    log = GapLog()
    objects = long_day(30, per_chunk=10, sources=2)
    keys = [*sorted(objects, reverse=True), "raw/binance/depth/SIM/2024-08-09/bad"]

    plan = plan_sources(keys, log)

    assert list(plan) == ["r0.c1", "r1.c1"]
    for chunks in plan.values():
        assert [k for k, _ in chunks] == sorted(k for k, _ in chunks)
        assert all(parse_raw_key(k).date == dt.date(2024, 8, 9) for k, _ in chunks)
    assert [c["key"] for c in log.corrupt] == ["raw/binance/depth/SIM/2024-08-09/bad"]
