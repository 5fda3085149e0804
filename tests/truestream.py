"""One true stream of level updates, and random holey batches of it, for property tests.

Update ``START + n`` is ``updates[n - 1]``: the true book at id ``i`` is the initial book
with updates ``START + 1 .. i`` applied (:func:`truth`). A source records the stream as
(``U``, ``u``) batches with its own boundaries, a late start, an early end and holes
(:func:`batches`). Used by the splice property (tests/unit) and the stitcher property
(tests/merger), which check the code against this truth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import strategies as st

from booktape.binance import DepthSnapshot
from booktape.book import OrderBook, Side

START = 1_000
State = dict[tuple[str, str], str]  # (side, price) -> qty


@dataclass(frozen=True)
class Update:
    side: str
    price: str
    qty: str


def updates(max_size: int) -> st.SearchStrategy[list[Update]]:
    """1..max_size updates over 40 prices a side, a third of them removals."""
    return st.lists(
        st.builds(
            Update,
            side=st.sampled_from(["bid", "ask"]),
            price=st.integers(1, 40).map(str),
            qty=st.sampled_from(["0", "0", "1", "2", "3.5"]),
        ),
        min_size=1,
        max_size=max_size,
    )


@st.composite
def batches(draw: st.DrawFn, total: int) -> list[tuple[int, int]]:
    """One recording's (U, u) batches of ids START+1..START+total: its own boundaries, a
    late start, an early end, holes."""
    cuts = draw(st.sets(st.integers(START + 1, START + total), max_size=total))
    bounds = sorted({START + 1, *cuts, START + total + 1})
    every = [(a, b - 1) for a, b in itertools.pairwise(bounds)]
    begin = draw(st.integers(0, len(every) - 1))
    end = draw(st.integers(begin + 1, len(every)))
    holes = draw(st.sets(st.integers(0, len(every) - 1), max_size=len(every)))
    return [b for i, b in enumerate(every[begin:end], begin) if i not in holes]


def merged(updates: list[Update], first: int, last: int) -> State:
    """Updates ``first..last`` as one event's level changes (the last per level wins)."""
    levels: State = {}
    for update in updates[first - START - 1 : last - START]:
        levels[(update.side, update.price)] = update.qty
    return levels


def truth(initial: State, updates: list[Update], upto: int) -> State:
    """The true book at id ``upto``."""
    book = dict(initial)
    for update in updates[: upto - START]:
        if update.qty == "0":
            book.pop((update.side, update.price), None)
        else:
            book[(update.side, update.price)] = update.qty
    return book


def snapshot_of(state: State, last_update_id: int) -> DepthSnapshot:
    bids = sorted(((p, q) for (s, p), q in state.items() if s == "bid"), key=lambda x: -int(x[0]))
    asks = sorted(((p, q) for (s, p), q in state.items() if s == "ask"), key=lambda x: int(x[0]))
    return DepthSnapshot(last_update_id, tuple(bids), tuple(asks))


def state_of(book: OrderBook) -> State:
    return {(side.value, p): q for side in Side for p, q in book.levels(side)}
