"""The stitcher's decisions on small, hand-made recordings (ids and books known by hand)."""

from __future__ import annotations

import orjson

from booktape.binance import DepthHeader, DepthSnapshot, Market
from merger.load import Loaded
from merger.model import BookImage, GapLog, SourceSnapshot, StreamEvent
from merger.stitch import stitch, stream_order

Level = tuple[str, str]


def ev(source: str, first: int, last: int, bids: list[list[str]] | None = None,
       asks: list[list[str]] | None = None, conn: str = "k1", frame: bytes | None = None,
       ) -> StreamEvent:  # fmt: skip
    doc = {"e": "depthUpdate", "E": last, "s": "X", "U": first, "u": last,
           "b": bids or [["10", str(last)]], "a": asks or [["20", "1"]]}  # fmt: skip
    header = DepthHeader("X", first, last, first - 1, last, None)
    raw = frame if frame is not None else orjson.dumps(doc)
    return StreamEvent(source, f"{source}/{conn}", last * 1000, header, raw, b"")


def run(first: int, last: int, source: str, conn: str = "k1") -> list[StreamEvent]:
    return [ev(source, i, i, conn=conn) for i in range(first, last + 1)]


def snap(last_id: int, bids: list[Level] | None = None, source: str = "eu.c1") -> SourceSnapshot:
    body = DepthSnapshot(last_id, tuple(bids or [("10", str(last_id))]), (("20", "1"),))
    return SourceSnapshot(source, f"key-{last_id}", last_id * 1000 + 1, body, b"", None)


def loaded(*streams: list[StreamEvent], snapshots: list[SourceSnapshot]) -> Loaded:
    named = {s[0].stream: s for s in streams}
    return Loaded(named, sorted(snapshots, key=lambda s: s.snapshot.last_update_id), set())


def ids(items: list[BookImage | StreamEvent]) -> list[object]:
    return [
        (i.reason, i.last_update_id) if isinstance(i, BookImage) else (i.source, i.header.last_id)
        for i in items
    ]


def test_primary_region_is_kept_and_its_hole_filled_from_the_standby() -> None:
    eu = run(101, 105, "eu.c1") + run(109, 112, "eu.c1")
    us = run(101, 112, "us.c1")
    log = GapLog()

    items = list(stitch(loaded(eu, us, snapshots=[snap(100)]), market=Market.SPOT, log=log,
                        primary="eu"))  # fmt: skip

    assert ids(items)[0] == ("start", 100)
    assert [i.source for i in items[1:] if isinstance(i, StreamEvent)] == (
        ["eu.c1"] * 5 + ["us.c1"] * 3 + ["eu.c1"] * 4
    )
    assert log.filled == {"eu.c1": 9, "us.c1": 3}
    assert log.events == 12
    assert log.unrecoverable == []


def test_without_primary_streams_are_preferred_by_name() -> None:
    assert stream_order(["us.c1/a", "eu.c2/b", "eu.c1/z"], None) == [
        "eu.c1/z", "eu.c2/b", "us.c1/a"
    ]  # fmt: skip
    assert stream_order(["eu.c1/a", "us.c1/a"], "us") == ["us.c1/a", "eu.c1/a"]


def test_unrecoverable_gap_reanchors_on_the_next_usable_snapshot() -> None:
    eu = run(101, 105, "eu.c1") + run(111, 115, "eu.c1")  # 106..110 lost everywhere
    snaps = [snap(100), snap(103), snap(107), snap(112)]  # 107: no event continues it
    log = GapLog()

    stitcher = stitch(loaded(eu, snapshots=snaps), market=Market.SPOT, log=log)
    items = list(stitcher)

    assert ids(items) == [("start", 100)] + [("eu.c1", i) for i in range(101, 106)] + [
        ("reanchor", 112)] + [("eu.c1", i) for i in range(113, 116)]  # fmt: skip
    (gap,) = log.unrecoverable
    assert (gap.from_update_id, gap.to_update_id) == (106, 112)
    assert (gap.from_ts, gap.to_ts) == (105_000, 112_001)
    assert gap.reanchored_on == {"key": "key-112", "lastUpdateId": 112}
    assert log.unusable_before_anchor == 2  # 111 and 112 were recorded but are in the image
    assert (log.audit.checked, log.audit.matched) == (1, 1)  # at 103
    assert stitcher.closing is not None
    assert stitcher.closing.last_update_id == 115
    assert stitcher.closing.bids == (("10", "115"),)


def test_day_ends_where_no_snapshot_lets_it_go_on_and_the_rest_is_counted() -> None:
    eu = run(101, 103, "eu.c1") + run(106, 109, "eu.c1")
    log = GapLog()

    stitcher = stitch(loaded(eu, snapshots=[snap(100)]), market=Market.SPOT, log=log)
    items = list(stitcher)

    assert ids(items)[-1] == ("eu.c1", 103)
    assert log.unrecoverable == []
    assert log.unusable_before_anchor == 4
    assert stitcher.closing is not None
    assert stitcher.closing.last_update_id == 103


def test_events_before_the_first_usable_snapshot_are_counted_as_unusable() -> None:
    eu = run(95, 110, "eu.c1")
    log = GapLog()

    items = list(stitch(loaded(eu, snapshots=[snap(90), snap(100)]), market=Market.SPOT, log=log))

    assert ids(items)[0] == ("start", 100)  # 90: no event continues it
    assert log.unusable_before_anchor == 6  # 95..100
    assert log.events == 10


def test_previous_days_close_starts_the_day_when_the_recording_continues_from_it() -> None:
    close = BookImage(99_000, 100, (("10", "100"),), (("20", "1"),), "closing", "closing")
    eu = run(101, 105, "eu.c1")

    log = GapLog()
    items = list(stitch(loaded(eu, snapshots=[snap(102)]), market=Market.SPOT, log=log,
                        start=close))  # fmt: skip
    assert ids(items)[0] == ("previous_day", 100)
    assert (log.events, log.unusable_before_anchor, log.audit.checked) == (5, 0, 1)

    later = BookImage(99_000, 90, (("10", "90"),), (("20", "1"),), "closing", "closing")
    items = list(stitch(loaded(eu, snapshots=[snap(102)]), market=Market.SPOT, log=GapLog(),
                        start=later))  # fmt: skip
    assert ids(items)[0] == ("start", 102)  # 91..100 missing: the close does not continue


def test_images_never_follow_each_other_when_the_first_event_cannot_be_decoded() -> None:
    broken = ev("eu.c1", 101, 101, frame=b'{"e":"depthUpdate","E":1,"s":"X","U":101,"u":101,'
                b'"b":"oops","a":[]}')  # fmt: skip
    eu = [broken, *run(102, 104, "eu.c1")]
    log = GapLog()

    items = list(stitch(loaded(eu, snapshots=[snap(100), snap(102)]), market=Market.SPOT,
                        log=log))  # fmt: skip

    assert ids(items) == [("reanchor", 102), ("eu.c1", 103), ("eu.c1", 104)]
    assert log.corrupt[0]["key"] == "eu.c1/k1"
    assert len(log.unrecoverable) == 1


def test_audit_finds_a_wrong_book_and_ignores_the_straddling_events_levels() -> None:
    eu = [ev("eu.c1", 101, 105, bids=[["10", "5"], ["11", "1"]]), ev("eu.c1", 106, 110)]
    straddled = snap(103, bids=[("10", "103"), ("11", "9")])  # 101..105 straddles 103
    wrong = snap(107, bids=[("10", "999"), ("11", "7")], source="us.c1")  # 107 in 106..110
    log = GapLog()

    list(stitch(loaded(eu, snapshots=[snap(100), straddled]), market=Market.SPOT, log=log))
    assert (log.audit.checked, log.audit.matched, log.audit.mismatched) == (1, 1, 0)

    log = GapLog()
    list(stitch(loaded(eu, snapshots=[snap(100), wrong]), market=Market.SPOT, log=log))
    assert (log.audit.checked, log.audit.mismatched) == (1, 1)
    first = log.audit.first_mismatch
    assert first is not None
    assert (first["update_id"], first["key"], first["source"]) == (107, "key-107", "us.c1")
    assert first["levels"] == [{"side": "bid", "price": "11", "ours": "1", "theirs": "7"}]


def test_crossed_books_are_counted_not_fixed() -> None:
    eu = [ev("eu.c1", 101, 101, bids=[["25", "1"]]), ev("eu.c1", 102, 102, bids=[["25", "0"]])]
    log = GapLog()

    items = list(stitch(loaded(eu, snapshots=[snap(100)]), market=Market.SPOT, log=log))

    assert log.crossed_books == 1
    assert len(items) == 3


def test_audit_prunes_orphan_levels_outside_the_snapshot_window() -> None:
    # The anchor knows a far bid at 50 that the exchange later dropped without telling us
    # (it left the window the exchange keeps); the next snapshot's window ends above it.
    anchor = SourceSnapshot("eu.c1", "k-anchor", 1, DepthSnapshot(
        100, (("99", "1"), ("98", "1"), ("50", "7")), (("101", "1"),)), b"", None)  # fmt: skip
    audit = SourceSnapshot("eu.c1", "k-audit", 3, DepthSnapshot(
        101, (("99", "2"), ("98", "1")), (("101", "1"),)), b"", None)  # fmt: skip
    eu = [ev("eu.c1", 101, 101, bids=[["99", "2"]], asks=[["101", "1"]]),
          ev("eu.c1", 102, 102, bids=[["97", "1"]], asks=[["101", "1"]])]  # fmt: skip
    log = GapLog()

    stitcher = stitch(loaded(eu, snapshots=[anchor, audit]), market=Market.SPOT, log=log)
    list(stitcher)

    assert (log.audit.checked, log.audit.matched) == (1, 1)
    assert stitcher.closing is not None
    assert [p for p, _ in stitcher.closing.bids] == ["99", "98", "97"]  # 50 pruned


def test_a_pruned_level_a_later_wider_snapshot_shows_is_learned_not_a_mismatch() -> None:
    anchor = SourceSnapshot("eu.c1", "k-anchor", 1, DepthSnapshot(
        100, (("99", "1"), ("98", "1"), ("50", "7")), (("101", "1"),)), b"", None)  # fmt: skip
    narrow = SourceSnapshot("eu.c1", "k-narrow", 3, DepthSnapshot(
        101, (("99", "2"), ("98", "1")), (("101", "1"),)), b"", None)  # fmt: skip
    wide_bids = (("99", "2"), ("98", "1"), ("97", "1"), ("50", "7"))
    wide = SourceSnapshot("eu.c1", "k-wide", 5, DepthSnapshot(102, wide_bids, (("101", "1"),)),
                          b"", None)  # fmt: skip
    eu = [ev("eu.c1", 101, 101, bids=[["99", "2"]], asks=[["101", "1"]]),
          ev("eu.c1", 102, 102, bids=[["97", "1"]], asks=[["101", "1"]]),
          ev("eu.c1", 103, 103, bids=[["96", "1"]], asks=[["101", "1"]])]  # fmt: skip
    log = GapLog()

    stitcher = stitch(loaded(eu, snapshots=[anchor, narrow, wide]), market=Market.SPOT, log=log)
    list(stitcher)

    assert (log.audit.checked, log.audit.matched, log.audit.mismatched) == (2, 2, 0)
    assert stitcher.closing is not None
    assert [p for p, _ in stitcher.closing.bids] == ["99", "98", "97", "96", "50"]
