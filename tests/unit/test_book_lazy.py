"""A book that sorts its prices only on demand (``OrderBook(lazy_order=True)``, the merger's).

Ground truth: an exact replay into a dict per side keyed by ``Decimal``. The best levels
and crossing are checked after every change (they come from a heap that keeps removed
prices until they reach its top), the whole sides at the end.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.binance import DepthSnapshot
from booktape.book import OrderBook, Side, Window
from tests.unit.book_kinds import Change, model_sides

# Ordinary prices, and prices of 31-33 significant digits: a float cannot hold them and a
# Decimal's unary minus would round them (28 digits), so they test the exact keys too.
PRICES = [f"{n}.5" for n in range(95, 106)] + [
    "100.0000000000000000000000000001",
    "100.0000000000000000000000000002",
    "99.99999999999999999999999999999",
]


def best(levels: dict[Decimal, tuple[str, str]], side: Side) -> tuple[str, str] | None:
    if not levels:
        return None
    return levels[max(levels) if side is Side.BID else min(levels)]


def apply(book: OrderBook, side: Side, price: str, qty: str) -> None:
    level = [(price, qty)]
    book.apply_levels(level if side is Side.BID else [], level if side is Side.ASK else [])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Side.BID, Side.ASK]),
            st.sampled_from(PRICES[:11]) | st.sampled_from(PRICES),
            st.sampled_from(["0", "0.000", "1", "2.5"]),
        ),
        max_size=300,
    )
)
def test_best_levels_and_crossing_after_every_change(changes: list[Change]) -> None:
    book = OrderBook(lazy_order=True)
    for at in range(len(changes)):
        side, price, qty = changes[at]
        apply(book, side, price, qty)
        sides = model_sides(changes[: at + 1])
        bid, ask = best(sides[Side.BID], Side.BID), best(sides[Side.ASK], Side.ASK)
        assert (book.best_bid(), book.best_ask()) == (bid, ask)
        crossed = bid is not None and ask is not None and Decimal(bid[0]) >= Decimal(ask[0])
        assert book.is_crossed() == crossed
    sides = model_sides(changes)
    for side in (Side.BID, Side.ASK):
        expected = sorted(sides[side].items(), reverse=side is Side.BID)
        assert book.levels(side) == [level for _, level in expected]
    assert book.depth() == (len(sides[Side.BID]), len(sides[Side.ASK]))


def test_many_removals_keep_the_best_right() -> None:
    """Removed prices pile up in the heap (and are swept out); the best stays right."""
    book = OrderBook(lazy_order=True)
    for round_ in range(30):
        prices = [f"{1000 + round_ * 50 + i}.25" for i in range(50)]
        book.apply_levels([(p, "1") for p in prices], [(f"{9000 - i}.5", "2") for i in range(5)])
        assert book.best_bid() == (prices[-1], "1")
        book.apply_levels([(p, "0") for p in reversed(prices[1:])], [])
        assert book.best_bid() == (prices[0], "1")  # the lowest of this round's survives
        assert book.depth() == (round_ + 1, 5)
    assert book.best_bid() == ("2450.25", "1")
    assert book.levels(Side.BID) == [(f"{1000 + r * 50}.25", "1") for r in reversed(range(30))]


def test_snapshot_audit_and_prune_reorder_the_sides() -> None:
    """Levels read in order after updates, an audit's comparison, and a prune."""
    book = OrderBook(lazy_order=True)
    book.load_snapshot(DepthSnapshot(10, (("101.5", "1"), ("100.5", "1")), (("102.5", "3"),)))
    book.apply_levels([("103.5", "2"), ("101.5", "0"), ("99.5", "4")], [("102.5", "0")])
    assert book.is_crossed() is False
    assert book.best_bid() == ("103.5", "2")
    assert book.best_ask() is None
    assert book.levels(Side.BID) == [("103.5", "2"), ("100.5", "1"), ("99.5", "4")]
    snap = DepthSnapshot(20, (("103.5", "2"), ("100.5", "1")), (("102.0", "1"),))
    comparison = book.compare(snap)
    assert [(m.side, m.price, m.ours, m.theirs) for m in comparison.mismatches] == [
        (Side.ASK, "102.0", None, "1")
    ]
    assert book.prune_outside(Window.of(snap)) == 1  # 99.5: an orphan
    assert book.levels(Side.BID) == [("103.5", "2"), ("100.5", "1")]
    assert book.best_bid() == ("103.5", "2")
    book.apply_levels([("103.5", "0")], [])
    assert book.best_bid() == ("100.5", "1")
