"""Shared checks on real recordings: rebuild from snapshot plus diffs, bookTicker agreement.

The bookTicker check is the one ../shared/data/real/README.md defines: after each diff with
final id ``u``, the book's best bid and ask (price and quantity) must equal the latest
recorded bookTicker whose ``u`` is at or before that id.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from booktape.binance import (
    decode_depth,
    decode_snapshot,
    first_splice_index,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook
from simulator.recordings import Recording, book_ticker


def rebuild(
    recording: Recording, symbol: str, on_step: Callable[[int, OrderBook], None] | None = None
) -> tuple[OrderBook, list[int]]:
    """Join the first snapshot to the diffs and apply them all; return the book and the ``u``
    of each diff applied. ``on_step(u, book)`` sees the book after each diff (and once after
    the snapshot, with its ``lastUpdateId``)."""
    frames = recording.depth_frames(symbol)
    headers = [parse_depth_header(f.frame, recording.market) for f in frames]
    snapshot = decode_snapshot(next(s for s in recording.snapshots if s.symbol == symbol).body)
    start = first_splice_index(snapshot.last_update_id, headers)
    assert start is not None, "the snapshot must join the stream"
    book = OrderBook()
    book.load_snapshot(snapshot)
    if on_step is not None:
        on_step(snapshot.last_update_id, book)
    steps: list[int] = []
    for frame, header in zip(frames[start:], headers[start:], strict=True):
        assert book.update_id is not None
        assert splices(book.update_id, header.prev_id, header.last_id), (
            f"break at u={header.last_id}: book at {book.update_id}, prev {header.prev_id}"
        )
        book.apply(decode_depth(frame.frame, recording.market))
        steps.append(header.last_id)
        if on_step is not None:
            on_step(header.last_id, book)
    return book, steps


def ticker_check(recording: Recording, symbol: str) -> tuple[int, int, list[int]]:
    """Compare the book after each diff with the latest bookTicker at or before its id."""
    tickers = sorted(
        book_ticker(f.frame)
        for f in recording.frames
        if f.symbol == symbol and f.stream.endswith("@bookTicker")
    )
    ids = [t[0] for t in tickers]
    frames = recording.depth_frames(symbol)
    headers = [parse_depth_header(f.frame, recording.market) for f in frames]
    snapshot = decode_snapshot(next(s for s in recording.snapshots if s.symbol == symbol).body)
    start = first_splice_index(snapshot.last_update_id, headers)
    assert start is not None
    book = OrderBook()
    book.load_snapshot(snapshot)
    checks = matches = 0
    misses: list[int] = []
    for frame, header in zip(frames[start:], headers[start:], strict=True):
        book.apply(decode_depth(frame.frame, recording.market))
        at = bisect_right(ids, header.last_id) - 1
        if at < 0:
            continue
        _, bid, bid_qty, ask, ask_qty = tickers[at]
        checks += 1
        if book.best_bid() == (bid, bid_qty) and book.best_ask() == (ask, ask_qty):
            matches += 1
        else:
            misses.append(header.last_id)
    return checks, matches, misses
