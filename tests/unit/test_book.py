"""The order book: exact decimals, snapshots, audit windows, orphans, crossing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.binance import DepthEvent, DepthHeader, DepthSnapshot
from booktape.book import OrderBook, Side, Window
from booktape.errors import BookError
from tests.unit.book_kinds import on_both_book_kinds  # noqa: F401 -- autouse: both book kinds


def event(first: int, last: int, bids=(), asks=()) -> DepthEvent:  # type: ignore[no-untyped-def]
    return DepthEvent(DepthHeader("X", first, last, first - 1, 0, None), tuple(bids), tuple(asks))


def snapshot(last: int, bids=(), asks=()) -> DepthSnapshot:  # type: ignore[no-untyped-def]
    return DepthSnapshot(last, tuple(bids), tuple(asks))


def test_apply_sets_absolute_quantities_and_zero_removes() -> None:
    book = OrderBook()
    book.load_snapshot(snapshot(10, [("100.00", "1.0"), ("99.00", "2.0")], [("101.00", "3.0")]))

    book.apply(
        event(11, 12, bids=[("100.00", "0.00000000"), ("99.50", "5")], asks=[("101.00", "4.5")])
    )

    assert book.update_id == 12
    assert book.levels(Side.BID) == [("99.50", "5"), ("99.00", "2.0")]
    assert book.best_ask() == ("101.00", "4.5")


def test_exchange_strings_come_back_unchanged_and_decimal_keys_merge() -> None:
    book = OrderBook()
    book.apply_levels([("0.01000000", "1.00000000")], [])
    book.apply_levels([("0.01", "2.50000000")], [])

    assert book.levels(Side.BID) == [("0.01", "2.50000000")]
    assert book.depth() == (1, 0)


def test_removing_an_absent_level_is_harmless() -> None:
    book = OrderBook()
    book.apply_levels([("5", "0")], [("6", "0")])

    assert book.depth() == (0, 0)


@pytest.mark.parametrize("qty", ["abc", "-1", "NaN", "Infinity"])
def test_malformed_levels_raise_book_error(qty: str) -> None:
    with pytest.raises(BookError):
        OrderBook().apply_levels([("1", qty)], [])


def test_top_n_is_best_first() -> None:
    book = OrderBook()
    book.apply_levels(
        [(str(p), "1") for p in range(90, 100)], [(str(p), "1") for p in range(100, 110)]
    )

    bids, asks = book.top(3)

    assert [p for p, _ in bids] == ["99", "98", "97"]
    assert [p for p, _ in asks] == ["100", "101", "102"]


def test_crossed_book_is_detected() -> None:
    book = OrderBook()
    book.apply_levels([("100", "1")], [("101", "1")])
    assert not book.is_crossed()

    book.apply_levels([("101", "1")], [])

    assert book.is_crossed()  # locked counts: bid == ask


def test_compare_only_within_the_snapshot_window() -> None:
    book = OrderBook()
    book.apply_levels(
        [("100", "1"), ("99", "1"), ("50", "9")], [("101", "1"), ("102", "1"), ("200", "9")]
    )
    snap = snapshot(5, [("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")])

    result = book.compare(snap, limit=2)

    assert result.matched  # the deep levels 50 and 200 are outside the window
    assert result.checked == 4


def test_compare_reports_missing_extra_and_different_levels() -> None:
    book = OrderBook()
    book.apply_levels([("100", "1"), ("99.5", "7")], [("101", "2")])
    snap = snapshot(5, [("100", "1.5"), ("99", "1")], [("101", "2.0")])

    result = book.compare(snap, limit=2)

    found = {(m.side, m.price, m.ours, m.theirs) for m in result.mismatches}
    assert found == {
        (Side.BID, "100", "1", "1.5"),
        (Side.BID, "99.5", "7", None),
        (Side.BID, "99", None, "1"),
    }


def test_compare_excludes_the_levels_of_the_straddling_event() -> None:
    book = OrderBook()
    book.load_snapshot(snapshot(10, [("100", "1")], [("101", "1")]))
    # The snapshot's lastUpdateId 12 falls inside the next event (11..15): its level
    # 100 is half applied in the snapshot.
    straddler = event(11, 15, bids=[("100", "3")])
    snap = snapshot(12, [("100", "2")], [("101", "1")])

    assert not book.compare(snap).matched
    result = book.compare(snap, straddling=straddler)

    assert result.matched
    assert result.excluded == 1


def test_prune_outside_drops_orphans_beyond_the_window() -> None:
    book = OrderBook()
    book.apply_levels([("100", "1"), ("90", "1"), ("10", "1")], [("101", "1"), ("500", "1")])
    window = Window.of(snapshot(1, [("100", "1"), ("90", "1")], [("101", "1")]))

    removed = book.prune_outside(window)

    assert removed == 2
    assert book.levels(Side.BID) == [("100", "1"), ("90", "1")]
    assert book.levels(Side.ASK) == [("101", "1")]


def test_window_of_a_short_side_covers_the_whole_side() -> None:
    window = Window.of(snapshot(1, [("100", "1")], [("101", "1")]), limit=1000)

    assert window.covers(Side.BID, __import__("decimal").Decimal("1"))


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Side.BID, Side.ASK]),
            st.integers(1, 50),
            st.sampled_from(["0", "1", "2.5", "0.000"]),
        ),
        max_size=200,
    )
)
def test_book_equals_a_dict_model(changes: list[tuple[Side, int, str]]) -> None:
    book = OrderBook()
    model: dict[tuple[Side, int], str] = {}

    for side, price, qty in changes:
        if side is Side.BID:
            book.apply_levels([(str(price), qty)], [])
        else:
            book.apply_levels([], [(str(price), qty)])
        if float(qty) == 0:
            model.pop((side, price), None)
        else:
            model[(side, price)] = qty

    for side, reverse in ((Side.BID, True), (Side.ASK, False)):
        expected = sorted(((p, q) for (s, p), q in model.items() if s is side), reverse=reverse)
        assert book.levels(side) == [(str(p), q) for p, q in expected]


def test_compare_is_limited_to_what_the_book_knows_and_heal_learns_the_rest() -> None:
    book = OrderBook()
    # Anchored on a 2-level snapshot: the book knows bids >= 99 and asks <= 102 only.
    book.load_snapshot(
        snapshot(10, [("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")]), limit=2
    )
    book.apply(event(11, 11, bids=[("100", "0")]))  # the price falls: the window moves down
    later = snapshot(11, [("99", "1"), ("98", "4")], [("101", "1"), ("102", "1")])

    before = book.compare(later, limit=2)
    changed = book.heal(later, limit=2)
    after = book.compare(later, limit=2)

    assert before.matched  # 98 was never known to the book: not a mismatch
    assert before.checked == 3
    assert changed == 1
    assert book.levels(Side.BID) == [("99", "1"), ("98", "4")]
    assert after.checked == 4
    assert after.matched


def test_heal_never_overrides_known_levels() -> None:
    book = OrderBook()
    book.load_snapshot(snapshot(10, [("100", "1"), ("99", "1")], [("101", "1")]), limit=2)
    wrong = snapshot(12, [("100", "7"), ("98", "2")], [("101", "1")])

    book.heal(wrong, limit=2)

    assert book.levels(Side.BID) == [("100", "1"), ("99", "1"), ("98", "2")]
    assert not book.compare(wrong, limit=2).matched
