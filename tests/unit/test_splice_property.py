"""The splice property: redundant sources rebuild the true book wherever any one covers.

One true update stream is cut into batches by several sources, each with its own random
boundaries, a late start, an early end and random holes. Walking them with the splice rule
must reproduce the true book after every applied event, and a gap may only be declared
where no source has an event with ``prev <= cur < u``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.binance import DepthEvent, DepthHeader, splices
from booktape.book import OrderBook
from booktape.splice import Splicer
from tests.truestream import (
    START,
    Update,
    batches,
    merged,
    snapshot_of,
    state_of,
    truth,
    updates,
)


def _batch(updates: list[Update], first: int, last: int) -> DepthEvent:
    levels = merged(updates, first, last)
    bids = tuple((p, q) for (s, p), q in levels.items() if s == "bid")
    asks = tuple((p, q) for (s, p), q in levels.items() if s == "ask")
    return DepthEvent(DepthHeader("SIM", first, last, first - 1, 0, None), bids, asks)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), updates=updates(120))
def test_splicing_rebuilds_the_true_book_wherever_a_source_covers(
    data: st.DataObject, updates: list[Update]
) -> None:
    total = len(updates)
    initial = {("bid", "5"): "1", ("ask", "30"): "2"}
    sources = data.draw(st.lists(batches(total), min_size=1, max_size=4))
    events = [[_batch(updates, first, last) for first, last in src] for src in sources]
    splicer = Splicer([[(e.header.prev_id, e.header.last_id) for e in src] for src in events])
    book = OrderBook()
    book.load_snapshot(snapshot_of(initial, START))
    gaps = 0

    while True:
        assert book.update_id is not None
        cur = book.update_id
        pick = splicer.pick(cur)
        if pick is None:
            # A gap is real only if no source has any event that splices onto cur.
            assert not any(
                splices(cur, e.header.prev_id, e.header.last_id) for src in events for e in src
            )
            resume = splicer.resume_after(cur)
            if resume is None:
                break
            gaps += 1
            anchor = events[resume.source][resume.index].header.prev_id
            book.load_snapshot(snapshot_of(truth(initial, updates, anchor), anchor))
            continue
        splicer.take(pick)
        event = events[pick.source][pick.index]
        book.apply(event)
        assert state_of(book) == truth(initial, updates, event.header.last_id)

    covered_to = max((src[-1].header.last_id for src in events if src), default=START)
    assert book.update_id == max(covered_to, START)
    assert state_of(book) == truth(initial, updates, book.update_id)


def test_primary_is_kept_while_continuous_and_holes_are_filled_from_others() -> None:
    primary = [(1000, 1005), (1005, 1010), (1020, 1030)]  # hole 1011..1020
    backup = [(1000, 1003), (1003, 1012), (1012, 1025), (1025, 1030)]
    splicer = Splicer([primary, backup], priority=[0, 1])
    cur, taken = 1000, []

    while (pick := splicer.pick(cur)) is not None:
        cur = splicer.take(pick)[1]
        taken.append(pick.source)

    # 1010 -> backup 1012 -> backup 1025 -> back on the primary, whose (1020, 1030) splices
    assert taken == [0, 0, 1, 1, 0]
    assert cur == 1030


def test_real_gap_points_at_where_recording_resumes() -> None:
    splicer = Splicer([[(1000, 1005), (1010, 1020)], [(1008, 1012)]])

    first = splicer.pick(1000)
    assert first is not None
    assert splicer.take(first) == (1000, 1005)
    assert splicer.pick(1005) is None
    resume = splicer.resume_after(1005)

    assert resume is not None
    assert resume.source == 1
