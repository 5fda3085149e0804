"""The splice property: redundant sources rebuild the true book wherever any one covers.

One true update stream is cut into batches by several sources, each with its own random
boundaries, a late start, an early end and random holes. Walking them with the splice rule
must reproduce the true book after every applied event, and a gap may only be declared
where no source has an event with ``prev <= cur < u``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.binance import DepthEvent, DepthHeader, DepthSnapshot, splices
from booktape.book import OrderBook, Side
from booktape.splice import Splicer

START = 1_000


@dataclass(frozen=True)
class Update:
    side: str
    price: str
    qty: str


def _truth(
    initial: dict[tuple[str, str], str], updates: list[Update], upto: int
) -> dict[tuple[str, str], str]:
    book = dict(initial)
    for update in updates[: upto - START]:
        if update.qty == "0":
            book.pop((update.side, update.price), None)
        else:
            book[(update.side, update.price)] = update.qty
    return book


def _snapshot(state: dict[tuple[str, str], str], last_update_id: int) -> DepthSnapshot:
    bids = tuple(
        sorted(
            ((p, q) for (s, p), q in state.items() if s == "bid"), key=lambda level: -int(level[0])
        )
    )
    asks = tuple(
        sorted(
            ((p, q) for (s, p), q in state.items() if s == "ask"), key=lambda level: int(level[0])
        )
    )
    return DepthSnapshot(last_update_id, bids, asks)


def _book_state(book: OrderBook) -> dict[tuple[str, str], str]:
    return {(side.value, p): q for side in Side for p, q in book.levels(side)}


def _batch(updates: list[Update], first: int, last: int) -> DepthEvent:
    merged: dict[tuple[str, str], str] = {}
    for update in updates[first - START - 1 : last - START]:
        merged[(update.side, update.price)] = update.qty
    bids = tuple((p, q) for (s, p), q in merged.items() if s == "bid")
    asks = tuple((p, q) for (s, p), q in merged.items() if s == "ask")
    return DepthEvent(DepthHeader("SIM", first, last, first - 1, 0, None), bids, asks)


updates_strategy = st.lists(
    st.builds(
        Update,
        side=st.sampled_from(["bid", "ask"]),
        price=st.integers(1, 40).map(str),
        qty=st.sampled_from(["0", "0", "1", "2", "3.5"]),
    ),
    min_size=1,
    max_size=120,
)


@st.composite
def sources_strategy(draw: st.DrawFn, total: int) -> list[list[tuple[int, int]]]:
    """Each source: (first, last) batches over ids START+1..START+total, with holes."""
    sources = []
    for _ in range(draw(st.integers(1, 4))):
        cuts = sorted(draw(st.sets(st.integers(START + 1, START + total), max_size=total)))
        bounds = sorted({START + 1, *cuts, START + total + 1})
        batches = [(a, b - 1) for a, b in itertools.pairwise(bounds)]
        begin = draw(st.integers(0, len(batches) - 1))
        end = draw(st.integers(begin + 1, len(batches)))
        holes = draw(st.sets(st.integers(0, len(batches) - 1), max_size=len(batches)))
        sources.append([b for i, b in enumerate(batches[begin:end], begin) if i not in holes])
    return sources


@settings(max_examples=300, deadline=None)
@given(data=st.data(), updates=updates_strategy)
def test_splicing_rebuilds_the_true_book_wherever_a_source_covers(
    data: st.DataObject, updates: list[Update]
) -> None:
    total = len(updates)
    initial = {("bid", "5"): "1", ("ask", "30"): "2"}
    sources = data.draw(sources_strategy(total))
    events = [[_batch(updates, first, last) for first, last in src] for src in sources]
    splicer = Splicer([[(e.header.prev_id, e.header.last_id) for e in src] for src in events])
    book = OrderBook()
    book.load_snapshot(_snapshot(initial, START))
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
            book.load_snapshot(_snapshot(_truth(initial, updates, anchor), anchor))
            continue
        splicer.take(pick)
        event = events[pick.source][pick.index]
        book.apply(event)
        assert _book_state(book) == _truth(initial, updates, event.header.last_id)

    covered_to = max((src[-1].header.last_id for src in events if src), default=START)
    assert book.update_id == max(covered_to, START)
    assert _book_state(book) == _truth(initial, updates, book.update_id)


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
