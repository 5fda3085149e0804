"""Binance frame parsing, continuity, splicing and snapshot rules (no sockets)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from booktape.binance import (
    FrameKind,
    Market,
    classify_frame,
    combined_path,
    covers_handover,
    decode_depth,
    decode_snapshot,
    depth_stream,
    depth_weight,
    exchange_info_weight,
    first_splice_index,
    is_continuous,
    parse_depth_header,
    snapshot_is_fresh,
    snapshot_last_update_id,
    splices,
    stream_symbol,
    trading_symbols,
)
from booktape.errors import FrameError

# Real frames from ../shared/data/real (hftbacktest spot and USD-M recordings).
SPOT = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT",'
    b'"U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],'
    b'"a":[["61837.64000000","1.54698000"]]}}'
)
FUTURES = (
    b'{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5123107832006,'
    b'"u":5123107837557,"pu":5123107831937,"b":[["58710.20","0.014"]],"a":[]}'
)


def test_combined_spot_frame_header() -> None:
    header = parse_depth_header(SPOT)

    assert header.symbol == "BTCUSDT"
    assert (header.first_id, header.last_id, header.prev_id) == (
        50093239189,
        50093239202,
        50093239188,
    )
    assert header.event_time == 1723161255208
    assert header.stream == "btcusdt@depth@100ms"


def test_raw_futures_frame_previous_id_is_pu() -> None:
    header = parse_depth_header(FUTURES, Market.USDM)

    assert header.prev_id == 5123107831937  # sparse: not U - 1
    assert header.stream is None


def test_futures_frame_without_pu_is_malformed() -> None:
    with pytest.raises(FrameError, match="pu"):
        parse_depth_header(SPOT, Market.USDM)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"e":"depthUpdate","E":1,"s":"X","u":5,"b":[],"a":[]}',  # no U
        b'{"e":"depthUpdate","E":1,"s":"X","U":6,"u":5,"b":[],"a":[]}',  # U > u
        b'{"e":"depthUpdate","E":1,"U":1,"u":5,"b":[],"a":[]}',  # no symbol
        b'{"e":"trade","E":1}',  # not a depth event
        b"",
    ],
)
def test_malformed_frames_raise_frame_error(frame: bytes) -> None:
    with pytest.raises(FrameError):
        parse_depth_header(frame)


_LONG = b"1" * 5_000  # past int()'s 4,300 digits: a ValueError if converted


@pytest.mark.parametrize(
    ("market", "fields"),
    [
        (Market.SPOT, b'"E":%s,"s":"X","U":1,"u":2' % _LONG),
        (Market.SPOT, b'"E":1,"s":"X","U":%s,"u":%s' % (_LONG, _LONG)),
        (Market.SPOT, b'"E":1,"s":"X","U":1,"u":12345678901234567890'),  # 20 digits
        (Market.USDM, b'"E":%s,"s":"X","U":1,"u":2,"pu":0' % _LONG),
        (Market.USDM, b'"E":1,"s":"X","U":1,"u":2,"pu":-%s' % _LONG),
    ],
)
def test_numbers_longer_than_any_id_raise_frame_error(market: Market, fields: bytes) -> None:
    frame = b'{"stream":"x@depth","data":{"e":"depthUpdate",' + fields + b',"b":[],"a":[]}}'
    with pytest.raises(FrameError, match="characters"):
        parse_depth_header(frame, market)


def test_ids_inside_level_lists_are_never_read() -> None:
    # The header fields are read only before the level lists.
    frame = b'{"e":"depthUpdate","E":1,"s":"X","b":[["1","2"]],"U":3,"u":4,"a":[]}'

    with pytest.raises(FrameError):
        parse_depth_header(frame)


def test_decode_depth_keeps_exchange_strings() -> None:
    event = decode_depth(SPOT)

    assert event.bids == (("61737.63000000", "0.00000000"),)
    assert event.asks == (("61837.64000000", "1.54698000"),)


def test_decode_depth_rejects_bad_json_and_bad_levels() -> None:
    with pytest.raises(FrameError):
        decode_depth(SPOT[:-5])
    with pytest.raises(FrameError, match="level"):
        decode_depth(b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[[1,2]],"a":[]}')


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (SPOT, FrameKind.DEPTH),
        (b'{"result":null,"id":1}', FrameKind.REPLY),
        (b'{"id":3,"result":["btcusdt@depth"]}', FrameKind.REPLY),
        (b'{"error":{"code":2,"msg":"Invalid request"},"id":null}', FrameKind.ERROR),
        (b'{"code":0,"msg":"Unknown property","id":1}', FrameKind.ERROR),
        (b'{"e":"serverShutdown","E":1}', FrameKind.SHUTDOWN),
        (b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT"}}', FrameKind.OTHER),
    ],
)
def test_classify_frame(frame: bytes, kind: FrameKind) -> None:
    assert classify_frame(frame) is kind


def test_continuity_and_splice_rule() -> None:
    assert is_continuous(100, 100)
    assert not is_continuous(100, 101)
    assert splices(cur=100, prev_id=100, last_id=105)  # the next event
    assert splices(cur=103, prev_id=100, last_id=105)  # overlaps: absolute values as of u
    assert not splices(cur=105, prev_id=100, last_id=105)  # already applied
    assert not splices(cur=99, prev_id=100, last_id=105)  # a hole before it


@given(cur=st.integers(0, 10**12), first=st.integers(1, 10**12), width=st.integers(0, 10**4))
def test_spot_splice_rule_is_u_le_cur_plus_one_le_u(cur: int, first: int, width: int) -> None:
    last = first + width
    assert splices(cur, first - 1, last) == (first <= cur + 1 <= last)


def test_snapshot_joins_at_the_first_event_that_splices() -> None:
    events = [
        orjson.dumps({"e": "depthUpdate", "E": 1, "s": "X", "U": u0, "u": u1, "b": [], "a": []})
        for u0, u1 in [(10, 12), (13, 20), (21, 30)]
    ]
    headers = [parse_depth_header(e) for e in events]

    assert first_splice_index(12, headers) == 1
    assert first_splice_index(15, headers) == 1  # straddles: 13 <= 16 <= 20
    assert first_splice_index(30, headers) is None  # newer than everything buffered
    assert first_splice_index(5, headers) is None  # too old: ids 6..9 are in neither


def test_snapshot_freshness() -> None:
    assert snapshot_is_fresh(last_update_id=10, first_buffered_prev=10)
    assert not snapshot_is_fresh(last_update_id=9, first_buffered_prev=10)


def test_decode_snapshot() -> None:
    snap = decode_snapshot(b'{"lastUpdateId":7,"bids":[["1.0","2"]],"asks":[]}')

    assert (snap.last_update_id, snap.bids, snap.asks) == (7, (("1.0", "2"),), ())
    with pytest.raises(FrameError):
        decode_snapshot(b'{"code":-1121,"msg":"Invalid symbol."}')


@pytest.mark.parametrize(
    ("market", "limit", "weight"),
    [
        (Market.SPOT, 100, 5),
        (Market.SPOT, 101, 25),
        (Market.SPOT, 1000, 50),
        (Market.SPOT, 5000, 250),
        (Market.USDM, 50, 2),
        (Market.USDM, 100, 5),
        (Market.COINM, 500, 10),
        (Market.USDM, 1000, 20),
    ],
)
def test_depth_weights(market: Market, limit: int, weight: int) -> None:
    assert depth_weight(market, limit) == weight


def test_depth_limits_outside_market_range_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        depth_weight(Market.USDM, 5000)


def test_stream_names_and_paths() -> None:
    assert depth_stream("BTCUSDT") == "btcusdt@depth@100ms"
    assert depth_stream("BTCUSDT", 1000) == "btcusdt@depth"
    assert combined_path(["a@depth", "b@depth"]) == "/stream?streams=a@depth/b@depth"
    with pytest.raises(ValueError, match="exceed"):
        combined_path(["x"] * 1025)


# --- collector helpers ----------------------------------------------------------------


def test_stream_symbol_reads_a_damaged_combined_frame() -> None:
    assert stream_symbol(SPOT[: len(SPOT) // 2]) == "BTCUSDT"
    assert stream_symbol(FUTURES) is None  # a raw frame names no stream
    assert stream_symbol(b"\x00garbage") is None


def test_snapshot_last_update_id_without_decoding_levels() -> None:
    assert snapshot_last_update_id(b'{"lastUpdateId":1027024,"bids":[["4.0","431.0"]]}') == 1027024
    futures = b'{"lastUpdateId":5123107837557,"E":1723161256299,"T":1723161256298,"bids":[]}'
    assert snapshot_last_update_id(futures) == 5123107837557
    assert snapshot_last_update_id(b'{"code":-1121,"msg":"Invalid symbol."}') is None


def test_exchange_info_weight() -> None:
    assert exchange_info_weight(Market.SPOT) == 20
    assert exchange_info_weight(Market.USDM) == 1


def test_trading_symbols_keeps_only_trading() -> None:
    body = orjson.dumps(
        {
            "symbols": [
                {"symbol": "ETHUSDT", "status": "TRADING"},
                {"symbol": "BTCUSDT", "status": "TRADING"},
                {"symbol": "LUNAUSDT", "status": "BREAK"},
                {"symbol": "NEWUSDT", "status": "PENDING_TRADING"},
            ]
        }
    )
    assert trading_symbols(body) == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(FrameError, match="symbols"):
        trading_symbols(b'{"code":-1000}')
    with pytest.raises(FrameError, match="JSON"):
        trading_symbols(b"<html>")


def test_covers_handover() -> None:
    assert covers_handover(old_last_id=100, new_first_prev=100)  # exactly joined
    assert covers_handover(old_last_id=120, new_first_prev=100)  # overlapping
    assert not covers_handover(old_last_id=99, new_first_prev=100)  # the old is behind
