"""booktape.coinbase: book and price bodies, level-2 aggregation, the grid arithmetic.

The real level-3 snapshot is the one at the start of
../shared/data/real/coinbase-l3/replay_coinbase_2.in (BTC-USD, sequence 760636963),
written there as ``open`` messages; the test rebuilds the REST body from them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from booktape.coinbase import (
    DAY_NS,
    aggregate_l2,
    book_path,
    error_message,
    is_crossed,
    parse_book,
    parse_interval,
    parse_l2_book,
    parse_l3_book,
    parse_price,
    price_path,
    slot_at_or_after,
    slot_at_or_before,
    slots_between,
    validate_product,
)
from booktape.errors import ConfigError, FrameError

SEC = 10**9


def real_l3_body(real_data: Path) -> tuple[bytes, list[dict[str, object]]]:
    """The REST level-3 body the recorded snapshot came from, and its open messages."""
    opens: list[dict[str, object]] = []
    with (real_data / "coinbase-l3" / "replay_coinbase_2.in").open("rb") as handle:
        for raw in handle:
            message = orjson.loads(raw.split(b" ", 2)[2])
            if message.get("sequence") != 760636963:
                break
            opens.append(message)
    bids = [[m["price"], m["remaining_size"], m["order_id"]] for m in opens if m["side"] == "buy"]
    asks = [[m["price"], m["remaining_size"], m["order_id"]] for m in opens if m["side"] == "sell"]
    return orjson.dumps({"sequence": 760636963, "bids": bids, "asks": asks}), opens


def test_real_level3_snapshot_parses_into_the_recorded_book(real_data: Path) -> None:
    body, opens = real_l3_body(real_data)
    book = parse_l3_book(body)
    assert book.sequence == 760636963
    assert (len(book.bids), len(book.asks)) == (3055, 4054)
    assert len(opens) == 7109
    by_id = {str(m["order_id"]): m for m in opens}
    for entry in (*book.bids, *book.asks):
        message = by_id[entry.order_id]
        assert (entry.price, entry.size) == (message["price"], message["remaining_size"])
    assert not is_crossed(book)


def test_real_level3_aggregates_to_a_consistent_level2(real_data: Path) -> None:
    body, opens = real_l3_body(real_data)
    l2 = aggregate_l2(parse_l3_book(body))
    for side, entries in (("buy", l2.bids), ("sell", l2.asks)):
        sizes: defaultdict[Decimal, Decimal] = defaultdict(Decimal)
        counts: Counter[Decimal] = Counter()
        for message in opens:
            if message["side"] == side:
                sizes[Decimal(str(message["price"]))] += Decimal(str(message["remaining_size"]))
                counts[Decimal(str(message["price"]))] += 1
        prices = [Decimal(e.price) for e in entries]
        assert prices == sorted(sizes, reverse=side == "buy")  # one level a price, best first
        for entry in entries:
            assert Decimal(entry.size) == sizes[Decimal(entry.price)]
            assert entry.num_orders == counts[Decimal(entry.price)]
        assert sum(e.num_orders for e in entries) == sum(counts.values())
    assert (l2.sequence, l2.level) == (760636963, 2)
    assert Decimal(l2.bids[0].price) < Decimal(l2.asks[0].price)


def test_level2_and_level1_bodies_as_the_exchange_sends_them() -> None:
    body = (
        b'{"bids":[["29999.99","1.50000000",3],["29999.98","0.1",1]],'
        b'"asks":[["30000.01","2.00000000",2]],"sequence":13051505638,'
        b'"auction_mode":false,"auction":null,"time":"2024-01-01T00:00:00.123456Z"}'
    )
    book = parse_l2_book(body)
    assert book.sequence == 13051505638
    assert book.time == "2024-01-01T00:00:00.123456Z"
    assert book.bids[0] == ("29999.99", "1.50000000", 3)
    assert book.asks[0].num_orders == 2
    level1 = parse_book(body, 1)
    assert level1.level == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"bids":[],"asks":[]}',
        b'{"sequence":-1,"bids":[],"asks":[]}',
        b'{"sequence":1,"bids":{},"asks":[]}',
        b'{"sequence":1,"bids":[["1.0","x","abc"]],"asks":[]}',
        b'{"sequence":1,"bids":[["1.0","1.0"]],"asks":[]}',
        b'{"sequence":1,"bids":[["1.0","1.0",""]],"asks":[]}',
        b'{"sequence":1,"bids":[[1.0,"1.0","abc"]],"asks":[]}',
    ],
)
def test_malformed_level3_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(FrameError):
        parse_l3_book(body)


def test_level2_entry_needs_an_order_count() -> None:
    with pytest.raises(FrameError, match="num_orders"):
        parse_l2_book(b'{"sequence":1,"bids":[["1.0","1.0","uuid"]],"asks":[]}')


def test_price_points_and_error_bodies() -> None:
    point = parse_price(b'{"data":{"amount":"42000.01","base":"BTC","currency":"USD"}}')
    assert (point.amount, point.base, point.currency) == ("42000.01", "BTC", "USD")
    with pytest.raises(FrameError):
        parse_price(b'{"errors":[{"id":"not_found","message":"Not found"}]}')
    assert error_message(b'{"message":"Public rate limit exceeded"}') == (
        "Public rate limit exceeded"
    )
    assert error_message(b"<html>502</html>") is None


def test_paths_and_names() -> None:
    assert book_path("BTC-USD", 3) == "/products/BTC-USD/book?level=3"
    assert price_path("ETH", "USD", "spot") == "/v2/prices/ETH-USD/spot"
    with pytest.raises(ConfigError):
        book_path("BTC-USD", 4)
    with pytest.raises(ConfigError):
        validate_product("btc_usd")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("60s", 60 * SEC),
        ("60", 60 * SEC),
        ("500ms", SEC // 2),
        ("5m", 300 * SEC),
        ("1h", 3600 * SEC),
    ],
)
def test_intervals_that_divide_a_day(text: str, ns: int) -> None:
    assert parse_interval(text) == ns


@pytest.mark.parametrize("text", ["7s", "0s", "13m", "abc", "25h"])
def test_intervals_that_do_not_divide_a_day_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_interval(text)


def test_grid_slots_are_on_the_utc_grid() -> None:
    midnight = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z
    t = midnight + 61 * SEC + 5
    assert slot_at_or_after(t, 60 * SEC) == midnight + 120 * SEC
    assert slot_at_or_before(t, 60 * SEC) == midnight + 60 * SEC
    assert slot_at_or_after(midnight, 60 * SEC) == midnight
    slots = list(slots_between(midnight - 1, midnight + DAY_NS, 60 * SEC))
    assert len(slots) == 1440
    assert slots[0] == midnight
