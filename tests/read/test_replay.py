"""booktape.replay against the simulator's true book: across midnight, from mid-day, gaps."""

from __future__ import annotations

import itertools

import pytest

import booktape
from booktape.read import BookState, DayNotReadyError
from tests.read.conftest import GAP_EVENTS, MIDNIGHT, REANCHOR_AFTER, MergedStore
from tests.read.market import Truth

SYMBOL = "BTCUSDT"


def _top(truth: Truth, depth: int | None) -> tuple[int, list[object], list[object]]:
    if depth is None:
        return truth.update_id, list(truth.bids), list(truth.asks)
    return truth.update_id, list(truth.bids[:depth]), list(truth.asks[:depth])


def _seen(states: list[BookState]) -> list[tuple[int, list[object], list[object]]]:
    return [(s.update_id, list(s.bids), list(s.asks)) for s in states]


def test_replay_across_midnight_follows_the_true_book_without_a_reset(
    midnight: MergedStore,
) -> None:
    rec = midnight.rec
    states = list(booktape.replay(str(midnight.root), "binance", SYMBOL,
                                  "2024-05-01", "2024-05-03", depth=None))  # fmt: skip

    # the first snapshot follows event 1: from there every event's true book, in order
    assert _seen(states) == [_top(t, None) for t in rec.truths[1:]]
    assert [s.reset for s in states] == [True] + [False] * (len(states) - 1)
    assert any(s.local_ts < MIDNIGHT for s in states)
    assert any(s.local_ts >= MIDNIGHT for s in states)
    assert all(a.local_ts < b.local_ts for a, b in itertools.pairwise(states))
    after = next(s for s in states if s.local_ts >= MIDNIGHT)
    assert after.exchange_ts == (after.local_ts - 3_000_000) // 1_000_000  # the event's E


def test_replay_keeps_the_top_levels_asked_for(midnight: MergedStore) -> None:
    states = list(booktape.replay(str(midnight.root), "binance", SYMBOL,
                                  "2024-05-01", "2024-05-03", depth=5))  # fmt: skip

    assert _seen(states) == [_top(t, 5) for t in midnight.rec.truths[1:]]


def test_replay_from_inside_a_day_starts_with_the_exact_book(midnight: MergedStore) -> None:
    start = MIDNIGHT + 10_250_000_000  # 00:00:10.25
    end = MIDNIGHT + 20_000_000_000
    states = list(booktape.replay(str(midnight.root), "binance", SYMBOL, start, end, depth=10))

    expected = [t for t in midnight.rec.truths if start <= t.local_ts < end]
    assert len(expected) > 50
    assert _seen(states) == [_top(t, 10) for t in expected]


def test_an_unrecoverable_gap_shows_as_one_reset_onto_the_true_book(gapped: MergedStore) -> None:
    rec = gapped.rec
    states = list(booktape.replay(str(gapped.root), "binance", SYMBOL,
                                  "2024-06-01", "2024-06-02", depth=None))  # fmt: skip
    (gap,) = gapped.gaps(gapped.dates[0])["unrecoverable"]  # type: ignore[misc]

    resets = [s for s in states if s.reset]
    assert len(resets) == 2  # the day's first image, then the re-anchor
    assert resets[1].update_id == gap["to_update_id"] == rec.truths[REANCHOR_AFTER].update_id
    # every state is the true book of its update id: none is made up inside the gap
    truth_by_id = {t.update_id: t for t in rec.truths}
    assert _seen(states) == [_top(truth_by_id[s.update_id], None) for s in states]
    missing = {rec.truths[i].update_id for i in GAP_EVENTS}
    assert not missing & {s.update_id for s in states}
    before = [s for s in states if s.local_ts < resets[1].local_ts]
    assert before[-1].update_id == rec.truths[GAP_EVENTS[0] - 1].update_id


def test_a_day_that_is_not_merged_raises_or_is_skipped(midnight: MergedStore) -> None:
    with pytest.raises(DayNotReadyError, match="2024-05-03"):
        booktape.replay(str(midnight.root), "binance", SYMBOL, "2024-05-02", "2024-05-04")

    states = list(booktape.replay(str(midnight.root), "binance", SYMBOL,
                                  "2024-05-02", "2024-05-04", missing="skip"))  # fmt: skip
    assert states[-1].update_id == midnight.rec.truths[-1].update_id
