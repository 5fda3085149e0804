"""The speed-ups of the hot paths give the same answers as the slow, general code.

Ground truth: the recorded frames' own JSON (decoded with orjson) and plain Decimal
arithmetic, never the code under test.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from booktape.binance import Market, parse_depth_header
from booktape.book import OrderBook
from booktape.errors import BookError, FrameError
from simulator.recordings import load_recording


@pytest.fixture(scope="module")
def frames(real_data: Path) -> list[bytes]:
    recording = load_recording([real_data / "hftbacktest/spot/btcusdt_20240808.gz"])
    inner = [f.frame for f in recording.depth_frames("BTCUSDT")]
    wrapped = [b'{"stream":"btcusdt@depth@100ms","data":' + f + b"}" for f in inner]
    return inner + wrapped


def test_header_of_every_real_frame_matches_its_json(frames: list[bytes]) -> None:
    for frame in frames:
        doc = orjson.loads(frame)
        data = doc.get("data", doc)

        header = parse_depth_header(frame)

        assert (header.symbol, header.first_id, header.last_id, header.event_time) == (
            data["s"], data["U"], data["u"], data["E"]
        )  # fmt: skip
        assert header.prev_id == data["U"] - 1
        assert header.stream == doc.get("stream")


def test_other_layouts_read_the_same_fields(frames: list[bytes]) -> None:
    frame = frames[0]
    spaced = frame.replace(b'":', b'" : ').replace(b",", b" , ")  # no longer Binance's layout

    assert parse_depth_header(b"  " + spaced) == parse_depth_header(frame)


def test_a_long_stream_name_hides_the_event_type_as_before() -> None:
    frame = (
        b'{"stream":"' + b"x" * 200 + b'","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT",'
        b'"U":5,"u":6,"b":[],"a":[]}}'
    )
    with pytest.raises(FrameError, match="not a depthUpdate"):
        parse_depth_header(frame)


def test_first_id_above_last_id_is_refused() -> None:
    frame = b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":7,"u":6,"b":[],"a":[]}'
    with pytest.raises(FrameError, match="U 7 > u 6"):
        parse_depth_header(frame)


def test_futures_frames_still_need_pu() -> None:
    frame = b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":5,"u":6,"b":[],"a":[]}'
    with pytest.raises(FrameError, match="pu"):
        parse_depth_header(frame, Market.USDM)


def test_book_price_strings_of_one_value_are_one_level_after_caching() -> None:
    book = OrderBook()
    book.apply_levels([("0.0100", "1.0")], [])
    book.apply_levels([("0.01", "2.0")], [])  # same price, another string
    assert book.top(5) == ([("0.01", "2.0")], [])
    book.apply_levels([("0.010", "0E-8")], [])  # a zero written another way removes it
    assert book.top(5) == ([], [])


def test_book_refuses_bad_quantities_at_known_prices() -> None:
    book = OrderBook()
    book.apply_levels([], [("10.5", "1")])
    for bad in ("-1", "NaN", "x", "Infinity"):
        with pytest.raises(BookError):
            book.apply_levels([], [("10.5", bad)])
    assert book.top(1) == ([], [("10.5", "1")])


def test_book_matches_a_plain_decimal_replay(frames: list[bytes]) -> None:
    truth: tuple[dict[Decimal, str], dict[Decimal, str]] = ({}, {})
    book = OrderBook()
    for frame in frames[: len(frames) // 2]:
        data = orjson.loads(frame)
        book.apply_levels([tuple(x) for x in data["b"]], [tuple(x) for x in data["a"]])
        for side, levels in zip(truth, (data["b"], data["a"]), strict=True):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = qty

    bids, asks = book.top(10**6)
    assert [Decimal(p) for p, _ in bids] == sorted(truth[0], reverse=True)
    assert [Decimal(p) for p, _ in asks] == sorted(truth[1])
    assert all(truth[0][Decimal(p)] == q for p, q in bids)
    assert all(truth[1][Decimal(p)] == q for p, q in asks)
