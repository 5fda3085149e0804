"""Coinbase REST rules as pure functions over bytes and values (no I/O).

What the collector, the merger and the simulator need to know about Coinbase lives here:

- the Exchange API book body ``GET /products/{id}/book?level=1|2|3``::

      {"bids": [[price, size, num_orders | order_id], ...], "asks": [...],
       "sequence": 13051505638, "auction_mode": false, "auction": null,
       "time": "2024-01-01T00:00:00.123456Z"}

  Levels 1 and 2 are aggregated: ``[price, size, num_orders]`` (``size`` is the sum of
  the orders at ``price``; ``num_orders`` an integer). Level 3 is one entry per order:
  ``[price, size, order_id]`` (order ids are UUID strings). Prices and sizes are decimal
  strings and stay exchange strings here; ``time`` is kept as sent (old bodies lack it);
- the v2 price point body ``GET /v2/prices/{BASE}-{QUOTE}/{buy|sell|spot}``::

      {"data": {"amount": "42000.01", "base": "BTC", "currency": "USD"}}

- error bodies ``{"message": "..."}`` (404, 429, ...);
- the level-2 aggregation of a level-3 book (sizes summed per price, orders counted);
- the wall-clock grid: slot ``k`` is at ``k * interval_ns`` ns since the epoch (UTC), for
  any interval that divides a day, so every day starts on a slot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, NamedTuple

import orjson

from booktape.errors import ConfigError, FrameError

REST_BASE: Final = "https://api.exchange.coinbase.com"
PRICES_BASE: Final = "https://api.coinbase.com"
PRICE_KINDS: Final = ("buy", "sell", "spot")
LEVELS: Final = (1, 2, 3)
REQUESTS_PER_SECOND: Final = 10  # public Exchange API limit per IP
BURST: Final = 15
DAY_NS: Final = 86_400 * 1_000_000_000

PriceKind = Literal["buy", "sell", "spot"]
_PRODUCT_RE: Final = re.compile(r"[A-Z0-9]{1,16}-[A-Z0-9]{1,16}")
_CURRENCY_RE: Final = re.compile(r"[A-Z0-9]{1,16}")
_INTERVAL_RE: Final = re.compile(r"(\d+)(ms|s|m|h)?")
_UNIT_NS: Final = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


class AggregatedEntry(NamedTuple):
    """One level-1/2 entry: a price level."""

    price: str
    size: str  # sum of the order sizes at this price
    num_orders: int


class OrderEntry(NamedTuple):
    """One level-3 entry: a single resting order."""

    price: str
    size: str
    order_id: str  # UUID string


@dataclass(frozen=True, slots=True)
class L2Book:
    """An aggregated book body (level 1 or 2). Bids best first (descending), asks ascending."""

    sequence: int
    time: str | None  # as sent, e.g. "2024-01-01T00:00:00.123456Z"; None when absent
    level: int
    bids: tuple[AggregatedEntry, ...]
    asks: tuple[AggregatedEntry, ...]


@dataclass(frozen=True, slots=True)
class L3Book:
    """A level-3 book body: every order, in the exchange's order."""

    sequence: int
    time: str | None
    bids: tuple[OrderEntry, ...]
    asks: tuple[OrderEntry, ...]

    @property
    def level(self) -> int:
        return 3


@dataclass(frozen=True, slots=True)
class PricePoint:
    """A v2 price point: ``amount`` of ``currency`` for one unit of ``base``."""

    amount: str
    base: str
    currency: str


# -- names -------------------------------------------------------------------------------


def validate_product(product: str) -> str:
    """A product id such as ``BTC-USD``; anything else is a :class:`ConfigError`."""
    if not _PRODUCT_RE.fullmatch(product):
        raise ConfigError(f"invalid Coinbase product {product!r}: expected e.g. BTC-USD")
    return product


def validate_currency(currency: str) -> str:
    """A currency code such as ``BTC``; anything else is a :class:`ConfigError`."""
    if not _CURRENCY_RE.fullmatch(currency):
        raise ConfigError(f"invalid currency {currency!r}: expected e.g. BTC")
    return currency


def book_path(product: str, level: int) -> str:
    """The request path and query of a book snapshot, e.g. ``/products/BTC-USD/book?level=3``."""
    if level not in LEVELS:
        raise ConfigError(f"invalid book level {level!r}: one of 1, 2, 3")
    return f"/products/{product}/book?level={level}"


def price_path(currency: str, quote: str, kind: str) -> str:
    """The request path of a price point, e.g. ``/v2/prices/BTC-USD/buy``."""
    if kind not in PRICE_KINDS:
        raise ConfigError(f"invalid price kind {kind!r}: one of buy, sell, spot")
    return f"/v2/prices/{currency}-{quote}/{kind}"


# -- bodies ------------------------------------------------------------------------------


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"{what}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise FrameError(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _decimal_string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise FrameError(f"{what} must be a decimal string, not {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise FrameError(f"{what} is not a decimal: {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise FrameError(f"{what} must be finite and not negative: {value!r}")
    return value


def parse_aggregated_entry(entry: object) -> AggregatedEntry:
    """``[price, size, num_orders]`` -> :class:`AggregatedEntry` (``num_orders`` int or digits)."""
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        raise FrameError(f"level-2 entry must be [price, size, num_orders], not {entry!r}")
    price = _decimal_string(entry[0], "price")
    size = _decimal_string(entry[1], "size")
    count = entry[2]
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if type(count) is not int or count < 0:
        raise FrameError(f"num_orders must be a non-negative integer, not {entry[2]!r}")
    return AggregatedEntry(price, size, count)


def parse_order_entry(entry: object) -> OrderEntry:
    """``[price, size, order_id]`` -> :class:`OrderEntry`."""
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        raise FrameError(f"level-3 entry must be [price, size, order_id], not {entry!r}")
    order_id = entry[2]
    if not isinstance(order_id, str) or not order_id:
        raise FrameError(f"order_id must be a non-empty string, not {order_id!r}")
    price = _decimal_string(entry[0], "price")
    return OrderEntry(price, _decimal_string(entry[1], "size"), order_id)


def _book_head(obj: dict[str, Any]) -> tuple[int, str | None, list[Any], list[Any]]:
    sequence = obj.get("sequence")
    if type(sequence) is not int or sequence < 0:
        raise FrameError(f"book: sequence must be a non-negative integer, not {sequence!r}")
    time = obj.get("time")
    if time is not None and not isinstance(time, str):
        raise FrameError(f"book: time must be a string, not {time!r}")
    bids, asks = obj.get("bids"), obj.get("asks")
    if not isinstance(bids, list) or not isinstance(asks, list):
        raise FrameError("book: bids and asks must be lists")
    return sequence, time, bids, asks


def book_sequence(body: bytes) -> int:
    """The ``sequence`` of a book body (any level) without parsing the entries' values."""
    return _book_head(_load_object(body, "book"))[0]


def parse_l2_book(body: bytes, level: int = 2) -> L2Book:
    """Parse a level-1 or level-2 book body. Raises :class:`FrameError` on a malformed one."""
    if level not in (1, 2):
        raise FrameError(f"parse_l2_book: level must be 1 or 2, not {level!r}")
    sequence, time, bids, asks = _book_head(_load_object(body, "book"))
    return L2Book(
        sequence,
        time,
        level,
        tuple(parse_aggregated_entry(e) for e in bids),
        tuple(parse_aggregated_entry(e) for e in asks),
    )


def parse_l3_book(body: bytes) -> L3Book:
    """Parse a level-3 book body. Raises :class:`FrameError` on a malformed one."""
    sequence, time, bids, asks = _book_head(_load_object(body, "book"))
    return L3Book(
        sequence,
        time,
        tuple(parse_order_entry(e) for e in bids),
        tuple(parse_order_entry(e) for e in asks),
    )


def parse_book(body: bytes, level: int) -> L2Book | L3Book:
    """Parse a book body of the requested ``level`` (the body itself does not say it)."""
    return parse_l3_book(body) if level == 3 else parse_l2_book(body, level)


def parse_price(body: bytes) -> PricePoint:
    """Parse a v2 price point body ``{"data":{"amount":..,"base":..,"currency":..}}``."""
    obj = _load_object(body, "price")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise FrameError(f"price: missing data object in {obj!r}")
    base, currency = data.get("base"), data.get("currency")
    if not isinstance(base, str) or not isinstance(currency, str):
        raise FrameError(f"price: base and currency must be strings in {data!r}")
    return PricePoint(_decimal_string(data.get("amount"), "amount"), base, currency)


def error_message(body: bytes) -> str | None:
    """The ``message`` of an error body ``{"message": "..."}``; None if it is not one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    message = obj.get("message") if isinstance(obj, dict) else None
    return message if isinstance(message, str) else None


# -- aggregation and checks --------------------------------------------------------------


def aggregate_side(orders: Sequence[OrderEntry], *, bids: bool) -> tuple[AggregatedEntry, ...]:
    """Level-2 entries of one side: sizes summed per price (as decimals), orders counted.

    Prices are compared as decimals; a level keeps the price string of its first order.
    The result is best first: descending for bids, ascending for asks.
    """
    totals: dict[Decimal, tuple[str, Decimal, int]] = {}
    for order in orders:
        key = Decimal(order.price)
        text, total, count = totals.get(key, (order.price, Decimal(0), 0))
        totals[key] = (text, total + Decimal(order.size), count + 1)
    keys = sorted(totals, reverse=bids)
    return tuple(
        AggregatedEntry(text, format(total, "f"), count)
        for text, total, count in (totals[k] for k in keys)
    )


def aggregate_l2(book: L3Book) -> L2Book:
    """The level-2 book a level-3 book implies (same sequence and time)."""
    return L2Book(
        book.sequence,
        book.time,
        2,
        aggregate_side(book.bids, bids=True),
        aggregate_side(book.asks, bids=False),
    )


def is_crossed(book: L2Book | L3Book) -> bool:
    """True when the best bid is at or above the best ask."""
    if not book.bids or not book.asks:
        return False
    best_bid = max(Decimal(e.price) for e in book.bids)
    best_ask = min(Decimal(e.price) for e in book.asks)
    return best_bid >= best_ask


# -- the wall-clock grid -----------------------------------------------------------------


def parse_interval(text: str) -> int:
    """``"60s"``, ``"500ms"``, ``"5m"``, ``"1h"`` or plain seconds -> nanoseconds.

    The interval must divide a day (so every UTC day starts on a slot); otherwise
    :class:`ConfigError`.
    """
    match = _INTERVAL_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"invalid interval {text!r}: expected e.g. 60s, 500ms, 5m, 1h")
    interval_ns = int(match.group(1)) * _UNIT_NS[match.group(2) or "s"]
    return check_interval(interval_ns)


def check_interval(interval_ns: int) -> int:
    """Return ``interval_ns`` if it is positive and divides a day, else :class:`ConfigError`."""
    if interval_ns <= 0 or DAY_NS % interval_ns:
        raise ConfigError(f"interval of {interval_ns} ns must be positive and divide a day")
    return interval_ns


def slot_at_or_after(t_ns: int, interval_ns: int) -> int:
    """The first grid slot (ns since the epoch) at or after ``t_ns``."""
    return -(-t_ns // interval_ns) * interval_ns


def slot_at_or_before(t_ns: int, interval_ns: int) -> int:
    """The last grid slot (ns since the epoch) at or before ``t_ns``."""
    return t_ns // interval_ns * interval_ns


def slots_between(start_ns: int, end_ns: int, interval_ns: int) -> Iterator[int]:
    """Every grid slot ``s`` with ``start_ns <= s < end_ns``, in order."""
    return iter(range(slot_at_or_after(start_ns, interval_ns), end_ns, interval_ns))
