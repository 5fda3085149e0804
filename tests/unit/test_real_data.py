"""The real Binance recordings rebuild from snapshot plus diffs with no break.

Ground truth is what the exchange itself published alongside the diffs: the bookTicker
stream (best bid/ask with its update id), checked as ../shared/data/real/README.md defines.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from booktape.binance import (
    Market,
    is_continuous,
    parse_depth_header,
)
from booktape.book import OrderBook
from simulator.recordings import Recording, load_recording
from tests.realdata import rebuild, ticker_check


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
    crossed: list[int] = []

    def check(update_id: int, book: OrderBook) -> None:
        if book.is_crossed():
            crossed.append(update_id)

    book, steps = rebuild(spot, "BTCUSDT", check)

    assert crossed == []
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
