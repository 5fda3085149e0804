"""What the simulator writes on the wire, byte for byte as Binance spot does (pure).

Decimal strings have 8 decimals (``"61737.63000000"``, ``"0.00000000"``); JSON is compact
(no spaces) with Binance's key order. Error shapes:

- REST: ``{"code":-1121,"msg":"Invalid symbol."}`` with the HTTP status Binance uses.
- WebSocket streams, a bad request: ``{"error":{"code":2,"msg":"..."},"id":1}`` — the
  nested shape the servers really send (the docs' table shows the inner object); the
  ``"id"`` is left out when the request's id could not be read (invalid JSON).
- ``{"e":"serverShutdown","E":ms}``: the event as it appears in the spot WebSocket API's
  ``event`` wrapper; market-data connections get the bare event (raw and combined alike).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from simulator.symbols import E8


def fmt_e8(value: int) -> str:
    """An amount in 1e-8 units as Binance's 8-decimal string."""
    whole, frac = divmod(value, E8)
    return f"{whole}.{frac:08d}"


class LevelFormatter:
    """Renders (ticks, lots) of one symbol as ``["price","qty"]`` JSON, caching prices."""

    __slots__ = ("_cache", "_lot_e8", "_tick_e8")

    def __init__(self, tick_e8: int, lot_e8: int) -> None:
        self._tick_e8 = tick_e8
        self._lot_e8 = lot_e8
        self._cache: dict[int, str] = {}

    def price(self, ticks: int) -> str:
        text = self._cache.get(ticks)
        if text is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            text = self._cache[ticks] = fmt_e8(ticks * self._tick_e8)
        return text

    def qty(self, lots: int) -> str:
        return fmt_e8(lots * self._lot_e8)

    def levels_json(self, levels: Iterable[tuple[int, int]]) -> str:
        price, qty = self.price, self.qty
        return ",".join(f'["{price(t)}","{qty(q)}"]' for t, q in levels)

    def levels_list(self, levels: Iterable[tuple[int, int]]) -> list[list[str]]:
        return [[self.price(t), self.qty(q)] for t, q in levels]


def depth_event(
    fmt: LevelFormatter,
    *,
    symbol: str,
    event_ms: int,
    first_id: int,
    last_id: int,
    bids: Sequence[tuple[int, int]],
    asks: Sequence[tuple[int, int]],
) -> bytes:
    """``{"e":"depthUpdate","E":..,"s":..,"U":..,"u":..,"b":[..],"a":[..]}``."""
    return (
        f'{{"e":"depthUpdate","E":{event_ms},"s":"{symbol}","U":{first_id},"u":{last_id},'
        f'"b":[{fmt.levels_json(bids)}],"a":[{fmt.levels_json(asks)}]}}'
    ).encode()


def combined(stream: str, payload: bytes) -> bytes:
    """A combined-stream frame: ``{"stream":"<name>","data":<payload>}``, payload verbatim."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def depth_body(
    fmt: LevelFormatter,
    last_update_id: int,
    bids: Sequence[tuple[int, int]],
    asks: Sequence[tuple[int, int]],
) -> bytes:
    """A ``/api/v3/depth`` response body, best levels first."""
    return (
        f'{{"lastUpdateId":{last_update_id},"bids":[{fmt.levels_json(bids)}],'
        f'"asks":[{fmt.levels_json(asks)}]}}'
    ).encode()


def book_ticker(
    fmt: LevelFormatter,
    symbol: str,
    update_id: int,
    bid: tuple[int, int],
    ask: tuple[int, int],
) -> bytes:
    """``{"u":..,"s":..,"b":..,"B":..,"a":..,"A":..}`` (the bookTicker payload)."""
    return (
        f'{{"u":{update_id},"s":"{symbol}","b":"{fmt.price(bid[0])}","B":"{fmt.qty(bid[1])}",'
        f'"a":"{fmt.price(ask[0])}","A":"{fmt.qty(ask[1])}"}}'
    ).encode()


# --- WebSocket control messages ---------------------------------------------------------

RequestId = int | str | None


def ws_result(result: object, request_id: RequestId) -> bytes:
    """A reply: ``{"result":null,"id":1}`` or ``{"result":["btcusdt@depth"],"id":3}``."""
    return orjson.dumps({"result": result, "id": request_id})


def ws_error(code: int, msg: str, request_id: RequestId = None, *, with_id: bool = True) -> bytes:
    """An error frame: ``{"error":{"code":2,"msg":"..."},"id":1}``."""
    doc: dict[str, object] = {"error": {"code": code, "msg": msg}}
    if with_id:
        doc["id"] = request_id
    return orjson.dumps(doc)


def server_shutdown(event_ms: int) -> bytes:
    return f'{{"e":"serverShutdown","E":{event_ms}}}'.encode()


WS_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
INVALID_STREAM = "Invalid request: invalid stream"
BAD_ID = "Invalid request: request ID must be an unsigned integer"
TOO_MANY_PARAMS = "Invalid request: too many parameters"
PROPERTY_NOT_STRING = "Invalid request: property name must be a string"


def unknown_method(method: str, column: int) -> str:
    expected = ", ".join(f"`{m}`" for m in WS_METHODS)
    return (
        f"Invalid request: unknown variant `{method}`, expected one of {expected} "
        f"at line 1 column {column}"
    )


def missing_method(column: int) -> str:
    return f"Invalid request: missing field `method` at line 1 column {column}"


def invalid_json(column: int) -> str:
    return f"Invalid JSON: expected value at line 1 column {column}"


# --- REST errors --------------------------------------------------------------------------


def rest_error(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})


INVALID_SYMBOL = rest_error(-1121, "Invalid symbol.")
MISSING_SYMBOL = rest_error(
    -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
)


def illegal_limit(maximum: int) -> bytes:
    return rest_error(
        -1100, f"Illegal characters found in parameter 'limit'; legal range is '1..{maximum}'."
    )


INTERNAL_ERROR = rest_error(
    -1001, "Internal error; unable to process your request. Please try again."
)
ILLEGAL_SYMBOL = rest_error(
    -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
)
UNKNOWN_PATH = rest_error(-1000, "An unknown error occurred while processing the request.")


def too_much_weight(limit: int, window_s: float) -> bytes:
    interval = "1 MINUTE" if window_s == 60 else f"{window_s:g} SECOND"
    return rest_error(
        -1003,
        f"Too much request weight used; current limit is {limit} request weight per "
        f"{interval}. Please use WebSocket Streams for live updates to avoid polling the API.",
    )


def ip_banned(until_ms: int) -> bytes:
    return rest_error(
        -1003,
        f"Way too much request weight used; IP banned until {until_ms}. Please use "
        "WebSocket Streams for live updates to avoid bans.",
    )


def too_many_connections(limit: int, window_s: float) -> bytes:
    """The body refusing a WebSocket upgrade past the connection-attempt limit (HTTP 429)."""
    interval = "5 MINUTE" if window_s == 300 else f"{window_s:g} SECOND"
    return rest_error(
        -1003,
        f"Too many connection attempts; current limit is {limit} connection attempts per "
        f"{interval}. Please reuse connections and back off before reconnecting.",
    )
