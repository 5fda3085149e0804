"""Binance diff-depth rules as pure functions over bytes and values (no I/O).

Everything the collector, the merger and the simulator need to know about Binance's
diff-depth streams lives here once:

- frames: raw ``/ws`` frames and combined ``/stream`` frames (``{"stream":..,"data":..}``);
- the cheap header extraction used on the hot path (symbol, ``U``, ``u``, ``pu``, ``E``)
  that never decodes the level lists;
- each event's previous id (spot ``U - 1``, futures ``pu``: USD-M and COIN-M ids are sparse);
- continuity within one connection (``prev == previous u``);
- the splice predicate ``prev <= cur < u`` that joins any event, from any connection or
  region, to a book at id ``cur`` (and a REST snapshot to a stream);
- snapshot freshness and the REST depth weights.

Wire keys are cryptic; each is commented where it is read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, NamedTuple

import orjson

from booktape.cext import c_function
from booktape.errors import FrameError


class Market(StrEnum):
    """A Binance market: spot, USD-M futures (``fapi``) or COIN-M futures (``dapi``)."""

    SPOT = "spot"
    USDM = "usdm"
    COINM = "coinm"

    @property
    def is_futures(self) -> bool:
        return self is not Market.SPOT


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """Where a market lives and what its REST depth endpoint allows."""

    exchange: str  # exchange name in object keys
    ws_base: str
    rest_base: str
    depth_path: str
    exchange_info_path: str
    max_depth_limit: int


SPECS: dict[Market, MarketSpec] = {
    Market.SPOT: MarketSpec(
        "binance",
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
        "/api/v3/depth",
        "/api/v3/exchangeInfo",
        5000,
    ),
    Market.USDM: MarketSpec(
        "binance-usdm",
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
        "/fapi/v1/depth",
        "/fapi/v1/exchangeInfo",
        1000,
    ),
    Market.COINM: MarketSpec(
        "binance-coinm",
        "wss://dstream.binance.com",
        "https://dapi.binance.com",
        "/dapi/v1/depth",
        "/dapi/v1/exchangeInfo",
        1000,
    ),
}

#: Request weight budget per IP and minute (spot and futures alike by default).
WEIGHT_LIMIT_PER_MINUTE = 6000
#: Header carrying the weight used in the current minute.
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: Streams per connection and incoming messages per second a connection may send.
MAX_STREAMS_PER_CONNECTION = 1024
MAX_INCOMING_PER_SECOND = 5


def depth_weight(market: Market, limit: int) -> int:
    """The request weight of ``GET depth?limit=limit`` on ``market``.

    Spot: 5/25/50/250 for limit <= 100/500/1000/5000. Futures: 2/5/10/20 for
    limit <= 50/100/500/1000. A limit outside the market's range raises ValueError.
    """
    if limit < 1 or limit > SPECS[market].max_depth_limit:
        raise ValueError(f"depth limit {limit} outside 1..{SPECS[market].max_depth_limit}")
    table = (
        ((100, 5), (500, 25), (1000, 50), (5000, 250))
        if market is Market.SPOT
        else ((50, 2), (100, 5), (500, 10), (1000, 20))
    )
    for bound, weight in table:
        if limit <= bound:
            return weight
    raise AssertionError("unreachable: limit checked above")  # pragma: no cover


def depth_stream(symbol: str, speed_ms: int = 100) -> str:
    """Stream name of a symbol's diff depth: ``btcusdt@depth`` (1000 ms) or ``@depth@100ms``.

    Futures also accept ``@depth@0ms`` (real-time) and ``@depth@500ms``.
    """
    base = f"{symbol.lower()}@depth"
    return base if speed_ms == 1000 else f"{base}@{speed_ms}ms"


def combined_path(streams: Sequence[str]) -> str:
    """The path of a combined-stream connection: ``/stream?streams=a/b/c``."""
    if not streams:
        raise ValueError("a combined stream needs at least one stream")
    if len(streams) > MAX_STREAMS_PER_CONNECTION:
        raise ValueError(f"{len(streams)} streams exceed {MAX_STREAMS_PER_CONNECTION}")
    return "/stream?streams=" + "/".join(streams)


def symbol_of_stream(stream: str) -> str:
    """The upper-case symbol of a stream name (``btcusdt@depth@100ms`` -> ``BTCUSDT``)."""
    return stream.split("@", 1)[0].upper()


# --- frames ---------------------------------------------------------------------------


class FrameKind(Enum):
    """What a websocket text frame is, decided without decoding the level lists."""

    DEPTH = "depth"  # a depthUpdate event, raw or combined
    REPLY = "reply"  # a reply to SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS: {"result":..,"id":..}
    ERROR = "error"  # an error frame: {"code":..,"msg":..} or {"error":{..},"id":..}
    SHUTDOWN = "shutdown"  # a serverShutdown event: the server goes away soon
    OTHER = "other"  # any other stream event (bookTicker, trade, ...)


class DepthHeader(NamedTuple):
    """The ids and names of one diff-depth event, read without decoding its levels.

    A named tuple, not a frozen dataclass: one is made for every frame a collector of
    futures streams receives and every frame the merger reads, and a frozen dataclass
    takes ~1 µs to make against ~0.3 µs.
    """

    symbol: str  # "s": the symbol, upper case
    first_id: int  # "U": first update id in the event
    last_id: int  # "u": final update id in the event
    prev_id: int  # spot: U - 1; futures: "pu", the final update id of the previous event
    event_time: int  # "E": event time, ms since the epoch
    stream: str | None  # the combined stream name, None for a raw /ws frame


_DEPTH = re.compile(rb'"e"\s*:\s*"depthUpdate"')
_SYMBOL = re.compile(rb'"s"\s*:\s*"([^"\\]*)"')
_FIRST = re.compile(rb'"U"\s*:\s*(\d+)')
_LAST = re.compile(rb'"u"\s*:\s*(\d+)')
_PREV = re.compile(rb'"pu"\s*:\s*(-?\d+)')
_TIME = re.compile(rb'"E"\s*:\s*(\d+)')
_STREAM = re.compile(rb'^\s*\{\s*"stream"\s*:\s*"([^"\\]*)"')
_SHUTDOWN = re.compile(rb'"e"\s*:\s*"serverShutdown"')
_REPLY = re.compile(rb'^\s*\{\s*"(?:result|id)"\s*:')
_ERROR = re.compile(rb'^\s*\{\s*"(?:error|code)"\s*:')
_LEVELS = re.compile(rb'"[ba]"\s*:\s*\[')


def classify_frame(frame: bytes) -> FrameKind:
    """Tell a depth event from replies, errors, shutdown notices and other events."""
    if _DEPTH.search(frame, 0, 200):
        return FrameKind.DEPTH
    if _SHUTDOWN.search(frame, 0, 200):
        return FrameKind.SHUTDOWN
    if _ERROR.match(frame):
        return FrameKind.ERROR
    if _REPLY.match(frame):
        return FrameKind.REPLY
    return FrameKind.OTHER


#: Digits of the longest number a depth header may hold: 2**63-1 has 19. A longer one is no
#: id or time of Binance's, and ``int()`` refuses one past 4,300 digits with a ValueError.
MAX_DIGITS: Final = 19


def _number(text: bytes, name: str) -> int:
    if len(text) > MAX_DIGITS + text.startswith(b"-"):
        raise FrameError(f"depth event whose {name} has {len(text)} characters")
    return int(text)


def _int(pattern: re.Pattern[bytes], frame: bytes, end: int, name: str) -> int:
    found = pattern.search(frame, 0, end)
    if found is None:
        raise FrameError(f"depth event without {name}: {frame[:120]!r}")
    return _number(found.group(1), name)


# Binance's own layout of a spot event, raw or combined: one match reads every field. Any
# other layout (futures, reordered keys, spaces) takes the general path below.
_SPOT_LAYOUT = re.compile(
    rb'(?:\{"stream":"([^"\\]*)","data":)?\{"e":"depthUpdate","E":(\d+),"s":"([^"\\]*)",'
    rb'"U":(\d+),"u":(\d+),"[ba]":\['
)


def parse_depth_header(frame: bytes, market: Market = Market.SPOT) -> DepthHeader:
    """Extract symbol, ``U``, ``u``, ``pu`` and ``E`` from a raw or combined depth frame.

    Only the bytes before the level lists are searched, so the cost does not grow with the
    number of levels. Raises :class:`FrameError` when a field is missing or inconsistent
    (``U > u``, futures without ``pu``). The frame is not otherwise validated: the
    collector stores it verbatim and the merger decodes it fully with :func:`decode_depth`.
    """
    fast = None if market.is_futures else _SPOT_LAYOUT.match(frame)
    if fast is not None and fast.start(2) - len(b',"E":') <= 200:  # as _DEPTH's search
        stream, event_time, symbol, first_text, last_text = fast.groups()
        first, last = _number(first_text, "U"), _number(last_text, "u")
        if first > last:
            raise FrameError(f"depth event with U {first} > u {last}")
        return DepthHeader(
            symbol=symbol.decode("ascii", "replace"),
            first_id=first,
            last_id=last,
            prev_id=first - 1,
            event_time=_number(event_time, "E"),
            stream=stream.decode("ascii", "replace") if stream is not None else None,
        )
    return _parse_depth_header(frame, market)


def _parse_depth_header(frame: bytes, market: Market) -> DepthHeader:
    """The general path: each field searched on its own, in any order and spacing."""
    if not _DEPTH.search(frame, 0, 200):
        raise FrameError(f"not a depthUpdate frame: {frame[:120]!r}")
    levels = _LEVELS.search(frame)
    end = levels.start() if levels else len(frame)
    stream_match = _STREAM.match(frame)
    stream = stream_match.group(1).decode("ascii", "replace") if stream_match else None
    symbol_match = _SYMBOL.search(frame, 0, end)
    if symbol_match is None:
        raise FrameError(f"depth event without s: {frame[:120]!r}")
    first = _int(_FIRST, frame, end, "U")
    last = _int(_LAST, frame, end, "u")
    if first > last:
        raise FrameError(f"depth event with U {first} > u {last}")
    prev = _int(_PREV, frame, end, "pu") if market.is_futures else first - 1
    return DepthHeader(
        symbol=symbol_match.group(1).decode("ascii", "replace"),
        first_id=first,
        last_id=last,
        prev_id=prev,
        event_time=_int(_TIME, frame, end, "E"),
        stream=stream,
    )


Level = tuple[str, str]  # (price, quantity) as the exchange's decimal strings


class DepthEvent(NamedTuple):
    """A fully decoded diff-depth event; prices and quantities stay exchange strings.

    A named tuple for the reason :class:`DepthHeader` is one (~0.15 µs to make against
    ~0.5 µs, once for every event the merger writes).
    """

    header: DepthHeader
    bids: tuple[Level, ...]  # "b": [[price, qty]], qty is the new absolute amount, 0 removes
    asks: tuple[Level, ...]  # "a": idem


def _levels(raw: object, what: str) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise FrameError(f"{what} is not a list")
    out: list[Level] = []
    for entry in raw:
        if (
            not isinstance(entry, list)
            or len(entry) < 2
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], str)
        ):
            raise FrameError(f"malformed {what} level {entry!r}")
        out.append((entry[0], entry[1]))
    return tuple(out)


# booktape/_fastframe.c's depth_levels: for a combined spot frame in Binance's own layout
# (booktape.fastframe) it proves the frame and returns its level lists as orjson and
# _levels would, ~6x faster; any other frame gets None and takes orjson
_C_LEVELS: Final[Callable[[bytes], tuple[tuple[Level, ...], tuple[Level, ...]] | None] | None] = (
    c_function("_fastframe", "depth_levels")
)


def decode_depth(
    frame: bytes, market: Market = Market.SPOT, header: DepthHeader | None = None
) -> DepthEvent:
    """Decode a depth frame completely (merger, book rebuild, tests).

    ``header``: the frame's :func:`parse_depth_header`, when the caller has it already.
    """
    if header is None:
        header = parse_depth_header(frame, market)
    if _C_LEVELS is not None and not market.is_futures:
        levels = _C_LEVELS(frame)  # a combined spot frame in Binance's own layout
        if levels is not None:
            return DepthEvent(header, *levels)
    try:
        doc = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"depth frame is not valid JSON: {exc}") from exc
    data = doc.get("data", doc) if isinstance(doc, dict) else None
    if not isinstance(data, dict):
        raise FrameError("depth frame is not a JSON object")
    return DepthEvent(header, _levels(data.get("b"), "bid"), _levels(data.get("a"), "ask"))


# --- REST snapshots -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A REST depth snapshot: the book as of ``last_update_id``."""

    last_update_id: int  # "lastUpdateId"
    bids: tuple[Level, ...]  # best first
    asks: tuple[Level, ...]  # best first
    event_time: int | None = None  # "E" (futures only), ms


def decode_snapshot(body: bytes) -> DepthSnapshot:
    """Decode a ``/api/v3/depth`` (or ``/fapi``, ``/dapi``) response body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"depth snapshot is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("lastUpdateId"), int):
        raise FrameError(f"depth snapshot without lastUpdateId: {body[:120]!r}")
    event_time = doc.get("E")
    return DepthSnapshot(
        last_update_id=doc["lastUpdateId"],
        bids=_levels(doc.get("bids"), "bid"),
        asks=_levels(doc.get("asks"), "ask"),
        event_time=event_time if isinstance(event_time, int) else None,
    )


# --- continuity and splicing ----------------------------------------------------------


def is_continuous(previous_last_id: int, prev_id: int) -> bool:
    """Whether an event follows the previous one on the same connection."""
    return prev_id == previous_last_id


def splices(cur: int, prev_id: int, last_id: int) -> bool:
    """The splice rule: from a book at ``cur``, an event with ``prev <= cur < u`` applies.

    An event carries absolute amounts as of its ``u``, so it can be applied whichever
    connection or region recorded it. The same rule joins a snapshot (``cur`` =
    ``lastUpdateId``) to a stream; an event with ``u <= cur`` is already in the book.
    """
    return prev_id <= cur < last_id


def is_stale(cur: int, last_id: int) -> bool:
    """An event whose ids are all at or before ``cur`` is already in the book."""
    return last_id <= cur


def snapshot_is_fresh(last_update_id: int, first_buffered_prev: int) -> bool:
    """A snapshot can be joined to a buffer only if it is not older than its first event.

    With ``lastUpdateId < prev`` of the first buffered event, the updates between the two
    are in neither: take another snapshot.
    """
    return last_update_id >= first_buffered_prev


def first_splice_index(last_update_id: int, headers: Sequence[DepthHeader]) -> int | None:
    """Index of the first buffered event that joins a snapshot, or None.

    Events with ``u <= lastUpdateId`` are skipped (already in the snapshot); the first
    remaining event must satisfy the splice rule, otherwise the buffer does not join.
    """
    for index, header in enumerate(headers):
        if is_stale(last_update_id, header.last_id):
            continue
        return index if splices(last_update_id, header.prev_id, header.last_id) else None
    return None


# --- collector helpers ----------------------------------------------------------------

_STREAM_SYMBOL = re.compile(rb'"stream"\s*:\s*"([A-Za-z0-9_.\-]+)@')
_LAST_UPDATE_ID = re.compile(rb'"lastUpdateId"\s*:\s*(\d+)')


def stream_symbol(frame: bytes) -> str | None:
    """The upper-case symbol named by a combined frame's ``"stream":"<sym>@..."``, or None.

    Used to attribute a frame that is not a valid depth event (truncated, not JSON) to its
    symbol when its stream name can still be read.
    """
    found = _STREAM_SYMBOL.search(frame, 0, 200)
    return found.group(1).decode("ascii").upper() if found else None


def snapshot_last_update_id(body: bytes) -> int | None:
    """The ``lastUpdateId`` of a REST depth body, read without decoding the levels.

    None when the body has none (an error body such as ``{"code":-1121,...}``).
    """
    found = _LAST_UPDATE_ID.search(body, 0, 200)
    return int(found.group(1)) if found else None


def exchange_info_weight(market: Market) -> int:
    """The request weight of ``GET exchangeInfo`` (spot 20, futures 1)."""
    return 20 if market is Market.SPOT else 1


def trading_symbols(body: bytes) -> list[str]:
    """The symbols with status ``TRADING`` in an exchangeInfo body, sorted.

    Raises :class:`FrameError` when the body is not an exchangeInfo document.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"exchangeInfo is not valid JSON: {exc}") from exc
    entries = doc.get("symbols") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise FrameError(f"exchangeInfo without a symbols list: {body[:120]!r}")
    names = {
        entry["symbol"]
        for entry in entries
        if isinstance(entry, dict)
        and entry.get("status") == "TRADING"  # futures also list PENDING_TRADING, SETTLING
        and isinstance(entry.get("symbol"), str)
    }
    return sorted(names)


def covers_handover(old_last_id: int, new_first_prev: int) -> bool:
    """Whether a new connection's continuous run, starting at ``new_first_prev``, joins an
    old connection's run that has reached ``old_last_id`` without a gap.

    The union of both recordings is continuous once the new run starts at or before the
    last id the old one recorded (the overlap is dropped by the merger's splice rule).
    """
    return new_first_prev <= old_last_id
