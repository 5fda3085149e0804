"""The book's sort keys: exact floats for ordinary prices, decimals once a price needs them.

Ground truth: a plain replay into a dict per side keyed by ``Decimal`` (exact), sorted.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.binance import DepthSnapshot
from booktape.book import OrderBook, Side, Window
from tests.unit.book_kinds import (
    Change,
    model_sides,
    on_both_book_kinds,  # noqa: F401 -- autouse: both book kinds
)


def model_levels(changes: list[Change]) -> dict[Side, list[tuple[str, str]]]:
    """Each side best first, by an exact Decimal replay; the latest spelling of a price wins."""
    sides = model_sides(changes)
    return {
        side: [levels[p] for p in sorted(levels, reverse=side is Side.BID)]
        for side, levels in sides.items()
    }


def replay(changes: list[Change]) -> OrderBook:
    book = OrderBook()
    for side, price, qty in changes:
        level = [(price, qty)]
        book.apply_levels(level if side is Side.BID else [], level if side is Side.ASK else [])
    return book


# Prices a float holds exactly, written several ways, and neighbours a float cannot tell
# apart from them (17 significant digits).
PRICES = [
    "0.1",
    "0.10",
    "0.100000000000000000",
    "0.10000000000000001",
    "0.09999999999999999",
    "0.2",
    "1E-1",
    "100.5",
    "100.50000000",
    "100.50000000000001",
    "99999999.99999999",
    "99999999.999999991",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Side.BID, Side.ASK]),
            st.sampled_from(PRICES),
            st.sampled_from(["0", "0.00000000", "0E-8", "1", "2.5", "3.00000000"]),
        ),
        max_size=60,
    )
)
def test_book_equals_an_exact_decimal_replay(changes: list[Change]) -> None:
    book = replay(changes)
    expected = model_levels(changes)

    assert book.levels(Side.BID) == expected[Side.BID]
    assert book.levels(Side.ASK) == expected[Side.ASK]
    bids, asks = expected[Side.BID], expected[Side.ASK]
    crossed = bool(bids and asks and Decimal(bids[0][0]) >= Decimal(asks[0][0]))
    assert book.is_crossed() == crossed


def test_prices_a_float_cannot_tell_apart_stay_two_levels_in_order() -> None:
    assert float("0.10000000000000001") == float("0.1")  # why the book switches to decimals
    book = replay(
        [
            (Side.BID, "0.1", "1"),
            (Side.BID, "0.2", "1"),
            (Side.BID, "0.10000000000000001", "2"),
            (Side.ASK, "0.3", "1"),
        ]
    )

    assert book.levels(Side.BID) == [("0.2", "1"), ("0.10000000000000001", "2"), ("0.1", "1")]
    assert book.depth() == (3, 1)


def test_a_long_spelling_of_a_known_price_is_the_same_level() -> None:
    book = replay([(Side.ASK, "61602.01000000", "1"), (Side.ASK, "61602.0100000000000000", "2")])

    assert book.levels(Side.ASK) == [("61602.0100000000000000", "2")]
    book.apply_levels([], [("61602.01", "0.00000000")])
    assert book.depth() == (0, 0)


def test_crossing_is_exact_when_one_side_holds_decimal_keys() -> None:
    book = replay([(Side.BID, "0.10000000000000001", "1"), (Side.ASK, "0.1", "1")])
    assert book.is_crossed()  # 0.10000000000000001 > 0.1, though their floats are equal

    book = replay([(Side.BID, "0.1", "1"), (Side.ASK, "0.10000000000000001", "1")])
    assert not book.is_crossed()


def test_windows_and_audits_are_exact_with_decimal_keys() -> None:
    snap = DepthSnapshot(
        5,
        (("0.2", "1"), ("0.10000000000000001", "1"), ("0.1", "1")),
        (("0.3", "1"),),
    )
    window = Window.of(snap, limit=3)
    assert window.bid_floor == Decimal("0.1")  # the lowest of two prices with one float

    book = OrderBook()
    book.apply_levels([("0.2", "1"), ("0.10000000000000001", "1"), ("0.09", "7")], [("0.3", "1")])
    result = book.compare(snap, limit=3)

    found = {(m.side, m.price, m.ours, m.theirs) for m in result.mismatches}
    assert found == {(Side.BID, "0.1", None, "1")}  # 0.09 lies outside the window
    assert book.prune_outside(window) == 1
    assert [p for p, _ in book.levels(Side.BID)] == ["0.2", "0.10000000000000001"]
