"""The market model and depth batching, stepped without wall-clock waiting."""

from __future__ import annotations

import itertools
import statistics
from decimal import Decimal

import orjson
import pytest

from booktape.binance import (
    DepthSnapshot,
    decode_depth,
    decode_snapshot,
    first_splice_index,
    is_continuous,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook, Side
from simulator.market import ASK, BID, MarketModel, SymbolModel
from simulator.streams import DepthBatcher, DepthStream, is_valid_stream_name, parse_depth_stream
from simulator.symbols import default_spec
from simulator.wire import LevelFormatter, depth_body

START_MS = 1_723_161_255_000
STREAM = DepthStream("btcusdt@depth@100ms", "BTCUSDT", 100)

# Real BTCUSDT spot @depth@100ms (DESIGN.md, ../shared/data/real, 650 s).
REAL = {
    "events_per_s": 10.0,
    "changes_mean": 46.0,
    "changes_median": 22.0,
    "removal_share": 0.48,
    "ids_per_event": 70.0,
    "bytes_per_frame": 1600.0,
}


def _model(seed: int = 7) -> tuple[MarketModel, SymbolModel, LevelFormatter]:
    market = MarketModel([default_spec("BTCUSDT")], seed=seed, start_ms=START_MS)
    symbol = market.symbols["BTCUSDT"]
    return market, symbol, LevelFormatter(symbol.spec.tick_e8, symbol.spec.lot_e8)


def _run(
    market: MarketModel,
    batcher: DepthBatcher,
    seconds: float,
    step_ms: int = 100,
    start: int = START_MS,
) -> list[bytes]:
    frames = []
    for k in range(1, int(seconds * 1000 / step_ms) + 1):
        now = start + k * step_ms
        market.advance_to(now)
        frame = batcher.build(now)
        if frame is not None:
            frames.append(frame)
    return frames


def test_a_minute_of_market_looks_like_real_btcusdt() -> None:
    market, symbol, fmt = _model()
    frames = _run(market, DepthBatcher(symbol, fmt, STREAM, combined_frames=True), 60)
    events = [orjson.loads(f)["data"] for f in frames]
    changes = [len(e["b"]) + len(e["a"]) for e in events]
    removals = sum(q == "0.00000000" for e in events for _, q in e["b"] + e["a"])
    measured = {
        "events_per_s": len(events) / 60,
        "changes_mean": statistics.mean(changes),
        "changes_median": statistics.median(changes),
        "removal_share": removals / sum(changes),
        "ids_per_event": statistics.mean(e["u"] - e["U"] + 1 for e in events),
        "bytes_per_frame": statistics.mean(len(f) for f in frames),
    }
    for name, real in REAL.items():
        assert real / 2 <= measured[name] <= real * 2, (name, measured[name], real)


def test_the_book_is_thousands_of_levels_deep_with_a_tight_spread() -> None:
    market, symbol, _ = _model()
    market.advance_to(START_MS + 30_000)
    bids, asks = symbol.depth()
    assert bids > 3000
    assert asks > 3000
    best_bid, best_ask = symbol.best(BID), symbol.best(ASK)
    assert best_bid is not None
    assert best_ask is not None
    assert best_bid < best_ask
    deepest = symbol.levels(BID)[-1][0]
    assert best_bid - deepest > 1_000_000  # more than 10000 USD below the touch


def test_the_same_seed_gives_the_same_market() -> None:
    frames = []
    for _ in range(2):
        market, symbol, fmt = _model(seed=3)
        frames.append(_run(market, DepthBatcher(symbol, fmt, STREAM, False), 5))
    assert frames[0] == frames[1]
    other_market, other_symbol, other_fmt = _model(seed=4)
    assert _run(other_market, DepthBatcher(other_symbol, other_fmt, STREAM, False), 5) != frames[0]


def test_frames_have_binance_shape_and_parse_with_the_collector_code() -> None:
    market, symbol, fmt = _model()
    raw = _run(market, DepthBatcher(symbol, fmt, STREAM, combined_frames=False), 2)
    wrapped = _run(
        market, DepthBatcher(symbol, fmt, STREAM, combined_frames=True), 2, start=START_MS + 2000
    )
    frame = raw[0]
    assert frame.startswith(b'{"e":"depthUpdate","E":')
    assert b" " not in frame
    doc = orjson.loads(frame)
    assert list(doc) == ["e", "E", "s", "U", "u", "b", "a"]
    price, qty = (doc["b"] or doc["a"])[0]
    assert len(price.split(".")[1]) == 8
    assert len(qty.split(".")[1]) == 8
    assert [Decimal(p) for p, _ in doc["b"]] == sorted(
        (Decimal(p) for p, _ in doc["b"]), reverse=True
    )
    assert [Decimal(p) for p, _ in doc["a"]] == sorted(Decimal(p) for p, _ in doc["a"])
    header = parse_depth_header(frame)
    assert (header.symbol, header.first_id, header.last_id) == ("BTCUSDT", doc["U"], doc["u"])
    assert wrapped[0].startswith(b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"')
    assert parse_depth_header(wrapped[0]).stream == "btcusdt@depth@100ms"
    assert decode_depth(wrapped[0]).header.symbol == "BTCUSDT"
    headers = [parse_depth_header(f) for f in raw + wrapped]
    for before, after in itertools.pairwise(headers):
        assert is_continuous(before.last_id, after.prev_id)


def _truth_book(symbol: SymbolModel, fmt: LevelFormatter) -> DepthSnapshot:
    return decode_snapshot(
        depth_body(fmt, symbol.update_id, symbol.levels(BID), symbol.levels(ASK))
    )


def test_snapshot_plus_stream_rebuilds_the_truth_at_every_event() -> None:
    market, symbol, fmt = _model()
    batcher = DepthBatcher(symbol, fmt, STREAM, combined_frames=False)
    early = _run(market, batcher, 0.3)
    snapshot = decode_snapshot(
        depth_body(fmt, symbol.update_id, symbol.levels(BID, 1000), symbol.levels(ASK, 1000))
    )
    book = OrderBook()
    book.load_snapshot(snapshot)
    buffered = early + _run(market, batcher, 0.3, start=START_MS + 300)
    start = first_splice_index(snapshot.last_update_id, [parse_depth_header(f) for f in buffered])
    assert start is not None
    for frame in buffered[start:]:
        book.apply(decode_depth(frame))
    floor = Decimal(snapshot.bids[-1][0])
    ceiling = Decimal(snapshot.asks[-1][0])
    for k in range(1, 100):
        now = START_MS + 600 + k * 100
        market.advance_to(now)
        built = batcher.build(now)
        if built is None:
            continue
        event = decode_depth(built)
        assert book.update_id is not None
        assert splices(book.update_id, event.header.prev_id, event.header.last_id)
        book.apply(event)
        truth = _truth_book(symbol, fmt)
        assert book.update_id == truth.last_update_id
        assert book.best_bid() == truth.bids[0]
        assert book.best_ask() == truth.asks[0]
        inside_bids = [lv for lv in truth.bids if Decimal(lv[0]) >= floor]
        inside_asks = [lv for lv in truth.asks if Decimal(lv[0]) <= ceiling]
        assert [lv for lv in book.levels(Side.BID) if Decimal(lv[0]) >= floor] == inside_bids
        assert [lv for lv in book.levels(Side.ASK) if Decimal(lv[0]) <= ceiling] == inside_asks


def test_two_phases_give_different_boundaries_and_the_same_book() -> None:
    market, symbol, fmt = _model()
    first = DepthBatcher(symbol, fmt, STREAM, False)
    second = DepthBatcher(symbol, fmt, STREAM, False)
    books = [OrderBook(), OrderBook()]
    initial = decode_snapshot(
        depth_body(fmt, symbol.update_id, symbol.levels(BID), symbol.levels(ASK))
    )
    bounds: list[set[int]] = [set(), set()]
    for book in books:
        book.load_snapshot(initial)
    for k in range(1, 200):
        now = START_MS + k * 50
        market.advance_to(now)
        # the first connection's windows end on even 50 ms steps, the second's on odd ones
        batcher, index = (first, 0) if k % 2 == 0 else (second, 1)
        frame = batcher.build(now)
        if frame is not None:
            event = decode_depth(frame)
            bounds[index].add(event.header.last_id)
            books[index].apply(event)
    market.advance_to(START_MS + 20_000)
    for index, batcher in enumerate((first, second)):
        frame = batcher.build(START_MS + 20_000)
        assert frame is not None
        books[index].apply(decode_depth(frame))
    assert bounds[0]
    assert bounds[1]
    assert bounds[0] != bounds[1]
    assert len(bounds[0] & bounds[1]) < len(bounds[0]) / 2  # equal only after quiet windows
    assert books[0].levels(Side.BID) == books[1].levels(Side.BID)
    assert books[0].levels(Side.ASK) == books[1].levels(Side.ASK)
    assert books[0].update_id == books[1].update_id == symbol.update_id


def test_an_empty_window_sends_nothing_and_a_skip_breaks_continuity() -> None:
    market, symbol, fmt = _model()
    batcher = DepthBatcher(symbol, fmt, STREAM, False)
    assert batcher.build(START_MS) is None  # nothing changed since subscribing
    first = _run(market, batcher, 0.5)
    batcher.pending_skip = 3
    after = _run(market, batcher, 0.5, start=START_MS + 500)
    before_u = parse_depth_header(first[-1]).last_id
    jumped = parse_depth_header(after[0])
    assert jumped.first_id == before_u + 1 + 3
    assert not is_continuous(before_u, jumped.prev_id)


def test_a_subscriber_left_behind_by_the_log_is_refused() -> None:
    market = MarketModel([default_spec("BTCUSDT")], seed=1, start_ms=START_MS, log_capacity=1000)
    symbol = market.symbols["BTCUSDT"]
    batcher = DepthBatcher(
        symbol, LevelFormatter(symbol.spec.tick_e8, symbol.spec.lot_e8), STREAM, False
    )
    market.advance_to(START_MS + 60_000)
    with pytest.raises(Exception, match="left the log"):
        batcher.build(START_MS + 60_000)


def test_stream_names_follow_binance_acceptance() -> None:
    assert is_valid_stream_name("btcusdt@depth@100ms")
    assert is_valid_stream_name("nosuchcoin@naoExisteStream")
    assert not is_valid_stream_name("@@@lixo###")
    assert not is_valid_stream_name("btcusdt")
    assert parse_depth_stream("btcusdt@depth") == DepthStream("btcusdt@depth", "BTCUSDT", 1000)
    assert parse_depth_stream("BTCUSDT@depth@100ms") is None
    assert parse_depth_stream("btcusdt@bookTicker") is None


def test_other_symbols_get_sensible_specs() -> None:
    assert default_spec("ETHUSDT").tick_size == "0.01000000"
    spec = default_spec("DOGEBTC")
    assert (spec.base_asset, spec.quote_asset) == ("DOGE", "BTC")
    market = MarketModel([spec], seed=1, start_ms=START_MS)
    market.advance_to(START_MS + 2000)
    assert market.symbols["DOGEBTC"].update_id > 0
