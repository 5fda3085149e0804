"""Book apply: level updates/s of booktape's book, a sortedcontainers book and a C book.

The same recorded stream for all three: the real BTCUSDT spot REST snapshot and the
``@depth@100ms`` diffs recorded after it (hftbacktest), decoded once beforehand (not timed)
and replayed several times over. Each book starts from the snapshot and applies every
level as exchange strings, converting as it needs (booktape keys levels by exact floats --
``Decimal`` where a float would not be exact -- and keeps the original strings; the others
take floats):

- ``booktape.book.OrderBook.apply_levels`` (ours);
- a ``sortedcontainers.SortedDict`` per side with float keys;
- ``order_book.OrderBook`` (the ``order-book`` C extension from PyPI, cryptofeed's book).

``ratio`` = ours / the C extension (level updates/s, best of ``--repeat``). After the run,
all three must show the same best bid and best ask, and ours must equal a plain dict
replay of the same updates (the correctness guard).

    python -m bench.book [--passes 20] [--repeat 3] [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import cast

import order_book
from sortedcontainers import SortedDict

from bench.common import emit, machine, parser, recorded_depth
from booktape.binance import Level, decode_depth, decode_snapshot
from booktape.book import OrderBook

Update = tuple[Sequence[Level], Sequence[Level]]


def recorded_updates() -> tuple[list[Level], list[Level], list[Update]]:
    """The snapshot's bids and asks, and each later event's (bids, asks)."""
    frames, body = recorded_depth()
    snapshot = decode_snapshot(body)
    events = [decode_depth(f) for f in frames]
    after = [e for e in events if e.header.last_id > snapshot.last_update_id]
    return list(snapshot.bids), list(snapshot.asks), [(e.bids, e.asks) for e in after]


def run_ours(bids: list[Level], asks: list[Level], updates: list[Update], passes: int) -> object:
    book = OrderBook()
    book.apply_levels(bids, asks)
    apply = book.apply_levels
    for _ in range(passes):
        for b, a in updates:
            apply(b, a)
    return book


def run_sorted(bids: list[Level], asks: list[Level], updates: list[Update], passes: int) -> object:
    sides: tuple[SortedDict[float, float], SortedDict[float, float]] = (SortedDict(), SortedDict())

    def apply(side: SortedDict[float, float], levels: Sequence[Level]) -> None:
        for price, qty in levels:
            q = float(qty)
            if q == 0:
                side.pop(float(price), None)
            else:
                side[float(price)] = q

    apply(sides[0], bids)
    apply(sides[1], asks)
    for _ in range(passes):
        for b, a in updates:
            apply(sides[0], b)
            apply(sides[1], a)
    return sides


def run_c(bids: list[Level], asks: list[Level], updates: list[Update], passes: int) -> object:
    book = order_book.OrderBook()

    def apply(side: object, levels: Sequence[Level]) -> None:
        for price, qty in levels:
            q = float(qty)
            if q == 0:
                with contextlib.suppress(KeyError):
                    del side[float(price)]  # type: ignore[attr-defined]
            else:
                side[float(price)] = q  # type: ignore[index]

    apply(book.bids, bids)
    apply(book.asks, asks)
    for _ in range(passes):
        for b, a in updates:
            apply(book.bids, b)
            apply(book.asks, a)
    return book


def tops(ours: object, sorted_book: object, c_book: object) -> list[tuple[float, float]]:
    assert isinstance(ours, OrderBook)
    best_bid, best_ask = ours.best_bid(), ours.best_ask()
    assert best_bid is not None
    assert best_ask is not None
    sb, sa = cast("tuple[SortedDict[float, float], SortedDict[float, float]]", sorted_book)
    return [
        (float(best_bid[0]), float(best_ask[0])),
        (sb.peekitem(-1)[0], sa.peekitem(0)[0]),
        (c_book.bids.index(0)[0], c_book.asks.index(0)[0]),  # type: ignore[attr-defined]
    ]


def reference(bids: list[Level], asks: list[Level], updates: list[Update]) -> tuple[str, str]:
    """Best bid and ask by a plain dict replay (no sorting structure at all)."""
    sides: tuple[dict[Decimal, str], dict[Decimal, str]] = ({}, {})
    for b, a in [(bids, asks), *updates]:
        for side, levels in zip(sides, (b, a), strict=True):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = price
    return sides[0][max(sides[0])], sides[1][min(sides[1])]


def timed(
    run: Callable[[list[Level], list[Level], list[Update], int], object],
    data: tuple[list[Level], list[Level], list[Update]],
    passes: int,
) -> tuple[float, object]:
    start = time.perf_counter()
    book = run(*data, passes)
    return time.perf_counter() - start, book


def main(argv: list[str] | None = None) -> int:
    p = parser("book", __doc__)
    p.add_argument("--passes", type=int, default=20, help="replays of the recorded stream")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per book (best kept)")
    args = p.parse_args(argv)
    passes, repeat = (3, 2) if args.quick else (args.passes, args.repeat)
    data = recorded_updates()
    bids, asks, updates = data
    levels = (len(bids) + len(asks)) + passes * sum(len(b) + len(a) for b, a in updates)
    best: dict[str, float] = {}
    books: dict[str, object] = {}
    for _ in range(repeat):  # interleaved, so that a burst of other load hits all three
        for name, run in (("ours", run_ours), ("sortedcontainers", run_sorted), ("c", run_c)):
            seconds, books[name] = timed(run, data, passes)
            best[name] = max(best.get(name, 0.0), levels / seconds)
    top = tops(books["ours"], books["sortedcontainers"], books["c"])
    if len(set(top)) != 1:
        raise SystemExit(f"the books disagree on the top of book: {top}")
    ours_book = books["ours"]
    assert isinstance(ours_book, OrderBook)
    expected = reference(bids, asks, updates)
    got = (ours_book.best_bid(), ours_book.best_ask())
    if (got[0] or ("",))[0] != expected[0] or (got[1] or ("",))[0] != expected[1]:
        raise SystemExit(f"top of book {got} differs from a plain replay {expected}")
    figures: dict[str, object] = {
        "machine": machine(),
        "events": len(updates) * passes,
        "level_updates": levels,
        "ours_levels_per_s": round(best["ours"]),
        "sortedcontainers_levels_per_s": round(best["sortedcontainers"]),
        "c_levels_per_s": round(best["c"]),
        "top_of_book": f"{expected[0]} / {expected[1]}",
        "ratio_vs_sortedcontainers": round(best["ours"] / best["sortedcontainers"], 3),
        "ratio": round(best["ours"] / best["c"], 3),
    }
    emit("book", figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
