"""The real Binance recordings rebuild from snapshot plus diffs with no break.

Ground truth is what the exchange itself published alongside the diffs: the bookTicker
stream (best bid/ask with its update id), checked as ../shared/data/real/README.md defines.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from pathlib import Path

import pytest

from booktape.binance import (
    Market,
    decode_depth,
    decode_snapshot,
    first_splice_index,
    is_continuous,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook
from simulator.recordings import Recording, book_ticker, load_recording


def rebuild(recording: Recording, symbol: str) -> tuple[OrderBook, list[tuple[int, OrderBook]]]:
    """Join the first snapshot to the diffs and apply them all; return the book per step."""
    frames = recording.depth_frames(symbol)
    headers = [parse_depth_header(f.frame, recording.market) for f in frames]
    snapshot = decode_snapshot(next(s for s in recording.snapshots if s.symbol == symbol).body)
    start = first_splice_index(snapshot.last_update_id, headers)
    assert start is not None, "the snapshot must join the stream"
    book = OrderBook()
    book.load_snapshot(snapshot)
    steps: list[tuple[int, OrderBook]] = []
    for frame, header in zip(frames[start:], headers[start:], strict=True):
        assert book.update_id is not None
        assert splices(book.update_id, header.prev_id, header.last_id), (
            f"break at u={header.last_id}: book at {book.update_id}, prev {header.prev_id}"
        )
        book.apply(decode_depth(frame.frame, recording.market))
        steps.append((header.last_id, book))
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


@pytest.fixture(scope="module")
def spot(real_data: Path) -> Recording:
    return load_recording(
        [
            real_data / "hftbacktest/spot/btcusdt_20240808.gz",
            real_data / "hftbacktest/spot/btcusdt_20240809.gz",
        ]
    )


def test_spot_diffs_are_contiguous_across_both_files(spot: Recording) -> None:
    headers = [parse_depth_header(f.frame) for f in spot.depth_frames("BTCUSDT")]

    pairs = itertools.pairwise(headers)
    breaks = [b.first_id for a, b in pairs if not is_continuous(a.last_id, b.prev_id)]

    assert len(headers) == 3451 + 3044
    assert breaks == []


def test_spot_rebuild_matches_recorded_book_ticker(spot: Recording) -> None:
    checks, matches, misses = ticker_check(spot, "BTCUSDT")

    assert (checks, matches) == (6493, 6491)
    assert misses == [50093478174, 50093480542]


def test_spot_rebuild_never_crosses(spot: Recording) -> None:
    book, steps = rebuild(spot, "BTCUSDT")

    assert len(steps) == 6493
    assert not book.is_crossed()
    bids, asks = book.top(1)
    assert bids[0][0] < asks[0][0]


def test_usdm_futures_chain_by_pu_with_sparse_ids(real_data: Path) -> None:
    recording = load_recording([real_data / "hftbacktest/usdm/btcusdt_20240808.gz"])
    headers = [parse_depth_header(f.frame, Market.USDM) for f in recording.depth_frames("BTCUSDT")]
    sparse = sum(1 for a, b in itertools.pairwise(headers) if b.first_id != a.last_id + 1)

    book, steps = rebuild(recording, "BTCUSDT")

    assert recording.market is Market.USDM
    assert len(headers) == 6551
    assert sparse > len(headers) // 2  # futures ids are sparse: U != previous u + 1 is normal
    assert all(is_continuous(a.last_id, b.prev_id) for a, b in itertools.pairwise(headers))
    assert book.update_id == headers[-1].last_id
    assert len(steps) == 6551 - 4  # four diffs are older than the snapshot


@pytest.mark.parametrize(
    ("files", "market"),
    [
        (("BINANCE.ws.1.0", "BINANCE.http.0.0"), Market.SPOT),
        (("BINANCE_FUTURES.ws.1.0", "BINANCE_FUTURES.http.0.0"), Market.USDM),
    ],
)
def test_cryptofeed_samples_rebuild_every_symbol(
    real_data: Path, files: tuple[str, str], market: Market
) -> None:
    recording = load_recording([real_data / "cryptofeed" / name for name in files])

    symbols = recording.symbols()
    books = {symbol: rebuild(recording, symbol)[0] for symbol in symbols}

    assert recording.market is market
    assert len(symbols) == 4
    for symbol, book in books.items():
        assert (
            book.update_id
            == parse_depth_header(recording.depth_frames(symbol)[-1].frame, market).last_id
        )
        assert not book.is_crossed(), symbol
