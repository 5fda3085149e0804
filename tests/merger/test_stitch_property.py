"""The stitcher against one true update stream recorded by random, holey sources.

Ground truth is the true stream itself: after every canonical event, replaying the stitched
output (its book images and events, nothing else) must give the true book at that event's
``u``; every id no source recorded must lie inside a reported gap or before the first
anchor; every reported gap must hold truly missing ids; and the audit against true
snapshots never finds a mismatch.
"""

from __future__ import annotations

import orjson
from hypothesis import given, settings, target
from hypothesis import strategies as st

from booktape.binance import DepthHeader, DepthSnapshot, Market, decode_depth
from booktape.book import OrderBook
from merger.load import Loaded
from merger.model import BookImage, GapLog, SourceSnapshot, StreamEvent
from merger.stitch import stitch
from tests.truestream import (
    START,
    State,
    Update,
    batches,
    merged,
    snapshot_of,
    state_of,
    truth,
    updates,
)


def ns(update_id: int) -> int:
    return update_id * 1_000_000


def event(source: str, stream: str, updates: list[Update], first: int, last: int) -> StreamEvent:
    levels = merged(updates, first, last)
    doc = {
        "e": "depthUpdate",
        "E": last,
        "s": "SIM",
        "U": first,
        "u": last,
        "b": [[p, q] for (s, p), q in levels.items() if s == "bid"],
        "a": [[p, q] for (s, p), q in levels.items() if s == "ask"],
    }
    frame = orjson.dumps(doc)
    header = DepthHeader("SIM", first, last, first - 1, last, None)
    return StreamEvent(source, f"{source}/{stream}", ns(last), header, frame, b"")


@st.composite
def recordings(draw: st.DrawFn, updates: list[Update], initial: State) -> Loaded:
    total = len(updates)
    streams: dict[str, list[StreamEvent]] = {}
    sources = [f"r{n}.c1" for n in range(draw(st.integers(1, 4)))]
    # Sometimes every source is down over the same ids (an outage all regions share).
    down = draw(st.none() | st.tuples(st.integers(0, total), st.integers(0, total // 3)))
    for source in sources:
        for conn in range(draw(st.integers(1, 2))):
            streams[f"{source}/k{conn}"] = [
                event(source, f"k{conn}", updates, first, last)
                for first, last in draw(batches(total))
                if down is None or last < START + down[0] or first > START + sum(down)
            ]
    snap_ids = draw(st.lists(st.integers(START, START + total), max_size=10))
    if draw(st.booleans()):
        snap_ids.append(START)
    if down is not None:  # a snapshot soon after the outage makes a re-anchor likely
        snap_ids.append(min(START + total, START + sum(down) + draw(st.integers(0, 3))))
    snapshots = [
        SourceSnapshot(
            source=draw(st.sampled_from(sources)),
            key=f"key-{n}",
            recv_ns=ns(last_id) + 1,
            snapshot=snapshot_of(truth(initial, updates, last_id), last_id),
            line=b"",
            limit=None,
        )
        for n, last_id in enumerate(snap_ids)
    ]
    snapshots.sort(key=lambda s: (s.snapshot.last_update_id, s.recv_ns, s.key))
    return Loaded(streams, snapshots, set(sources))


def continues(loaded: Loaded, cur: int) -> bool:
    return any(
        e.header.prev_id <= cur < e.header.last_id for es in loaded.streams.values() for e in es
    )


@settings(max_examples=250, deadline=None)
@given(data=st.data(), updates=updates(100))
def test_stitched_output_replays_to_the_true_book_and_reports_exactly_the_uncovered_ids(
    data: st.DataObject, updates: list[Update]
) -> None:
    initial: State = {("bid", "5"): "1", ("ask", "30"): "2"}
    loaded = data.draw(recordings(updates, initial))
    primary = data.draw(st.sampled_from([None, "r0", "r1"]))
    log = GapLog()

    stitcher = stitch(loaded, market=Market.SPOT, log=log, primary=primary)
    items = list(stitcher)
    target(float(len(log.unrecoverable)), label="unrecoverable gaps")

    covered = {
        i for es in loaded.streams.values() for e in es
        for i in range(e.header.first_id, e.header.last_id + 1)
    }  # fmt: skip
    usable = [s.snapshot.last_update_id for s in loaded.snapshots]
    first_anchor = next((u for u in usable if continues(loaded, u)), None)
    if first_anchor is None:
        assert items == []
        assert stitcher.closing is None
        return
    first = items[0]
    assert isinstance(first, BookImage)
    assert (first.reason, first.last_update_id) == ("start", first_anchor)

    book = OrderBook()
    previous_was_image = False
    stretches: list[tuple[int, int]] = []  # (book id before, u) of every applied event
    for item in items:
        if isinstance(item, BookImage):
            assert not previous_was_image, "two book images follow each other"
            book.load_snapshot(DepthSnapshot(item.last_update_id, item.bids, item.asks))
            previous_was_image = True
        else:
            assert book.update_id is not None
            assert item.header.prev_id <= book.update_id < item.header.last_id
            stretches.append((book.update_id, item.header.last_id))
            book.apply(decode_depth(item.frame))
            previous_was_image = False
        assert book.update_id is not None
        assert state_of(book) == truth(initial, updates, book.update_id)

    end = book.update_id
    assert end is not None
    assert stitcher.closing is not None
    assert stitcher.closing.last_update_id == end
    assert log.events == sum(isinstance(i, StreamEvent) for i in items)
    assert sum(log.filled.values()) == log.events
    for gap in log.unrecoverable:
        assert gap.from_update_id not in covered  # the first id of each gap truly is missing
        assert gap.from_update_id <= gap.to_update_id
        assert not continues(loaded, gap.from_update_id - 1)
    for missing in set(range(first_anchor + 1, end + 1)) - covered:
        assert any(g.from_update_id <= missing <= g.to_update_id for g in log.unrecoverable)
    # The day ends only where nothing continues and no later snapshot lets it go on.
    assert not continues(loaded, end)
    assert not any(u > end and continues(loaded, u) for u in usable)
    anchors = {i.key for i in items if isinstance(i, BookImage)}
    rests = {end} | {g.from_update_id - 1 for g in log.unrecoverable}  # no event follows
    audited = [
        s for s in loaded.snapshots
        if s.key not in anchors
        and (any(a <= s.snapshot.last_update_id < b for a, b in stretches)
             or s.snapshot.last_update_id in rests)
    ]  # fmt: skip
    assert log.audit.checked == len(audited)
    assert log.audit.mismatched == 0
    assert log.audit.matched == log.audit.checked
    early = any(e.header.last_id <= first_anchor for es in loaded.streams.values() for e in es)
    assert log.unusable_before_anchor > 0 or not early  # counted, not dropped silently
