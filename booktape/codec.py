"""The raw record format, version 1: zstd-compressed JSON lines, byte-exact frames.

An object is one zstd frame (with a content checksum; concatenated frames are read as one
stream) of UTF-8 JSON lines, each ending with ``\\n``, one record a line in receive order.
Every line is a JSON object whose first key ``"k"`` says its kind::

    {"k":"hdr","v":1,"exchange":E,"channel":C,"symbol":S,"region":R,"collector":ID,
     "host":H,"booktape":VERSION, ...extra}                         first line, exactly once
    {"k":"msg","t":RECV_NS,"c":CONN,"m":FRAME}                      a websocket text frame
    {"k":"msg","t":RECV_NS,"c":CONN,"b64":"..."}                   idem, frame holds \\n or \\r
    {"k":"snap","t":RESP_NS,"q":REQ_NS,"c":CONN,"r":PATH_QUERY, ...extra, "m":BODY}
    {"k":"snap",...,"b64":"..."}                                    body not spliceable
    {"k":"conn","t":NS,"c":CONN,"ev":"open|subscribe|close|rotate|break|miss","info":{...}}
                                       (miss: a Coinbase grid slot not taken, info slot+reason)
    {"k":"bad","t":RECV_NS,"c":CONN,"b64":"..."[,"bin":true]}      frame that is not JSON

- ``t``/``q`` are integer nanoseconds since the epoch (local clock), ``0 <= t < 2**63``.
- ``CONN`` (connection id) is 1-128 ASCII characters of ``[A-Za-z0-9_.:-]``.
- ``m`` is SPLICED: the received bytes are copied into the line, never parsed and re-dumped,
  and always come last, so a reader recovers them exactly as the slice between the first
  ``"m":`` and the final ``}``. Only a frame that is valid JSON (as orjson reads it: UTF-8, no
  BOM, no NaN) and holds no ``\\n``/``\\r`` byte is spliced; any other frame is kept exactly,
  base64-encoded (standard alphabet, padded) in ``b64``. A text frame that is not valid JSON
  becomes a ``bad`` record; ``"bin":true`` marks a binary websocket frame.
- ``snap`` extra fields are JSON scalars with lower-case ``[a-z0-9_]`` keys, e.g. ``status``
  (HTTP status) or ``slot`` (ns of a Coinbase grid slot). A ``snap`` body kept as ``b64`` may
  be anything the server sent (an error page).
- The header's ``extra`` keys (lower-case ``[a-z0-9_]``) hold any JSON values.

Reading (:mod:`booktape.objects`). A TRUNCATED object -- the zstd stream ends inside a
frame, or the last line has no newline (a crash after a flush) -- yields every whole record
before the cut and reports ``truncated``. A CORRUPT object raises
:class:`~booktape.errors.CorruptObjectError` naming the object and the line: bytes that are
not zstd, a damaged block or checksum, trailing bytes that are not a zstd frame, a line that
is not valid JSON or not a known record, a header missing, repeated, or of an unknown
version. Rule for a cut before the header: an object without a whole header line (empty, or
cut inside the header) is CORRUPT, since it holds no record and cannot be attributed; once
the header is whole, any cut is a truncation. Damage cannot pass as a complete object with
other records: the content checksum is checked at the end of the frame (damage that makes
the stream look cut short reads as truncated)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import orjson

from booktape import __version__
from booktape.errors import BooktapeError, CodecError
from booktape.keys import validate_channel, validate_name

FORMAT_VERSION: Final = 1
CONN_EVENTS: Final = frozenset({"open", "subscribe", "close", "rotate", "break", "miss"})
MAX_NS: Final = 2**63 - 1

Scalar = str | int | float | bool | None

_CONN_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_FIELD_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEADER_FIELDS: Final = ("exchange", "channel", "symbol", "region", "collector", "host", "booktape")
_MSG_HEAD: Final = b'{"k":"msg","t":'
_BAD_HEAD: Final = b'{"k":"bad","t":'
_SPLICE: Final = b'"m":'


@dataclass(frozen=True, slots=True)
class Header:
    """First line of every object: what was recorded, where, by which booktape."""

    exchange: str
    channel: str
    symbol: str
    region: str
    collector: str
    host: str
    booktape: str = __version__
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_channel(self.exchange, self.channel)
        validate_name("symbol", self.symbol)
        validate_name("region", self.region)
        validate_name("collector", self.collector)
        if not isinstance(self.host, str) or not isinstance(self.booktape, str):
            raise CodecError("header host and booktape version must be strings")
        _check_fields("header", self.extra, reserved=("k", "v", *_HEADER_FIELDS))


@dataclass(frozen=True, slots=True)
class Msg:
    t: int  # receive time, ns since the epoch
    c: str  # connection id
    raw: bytes  # the frame exactly as received (valid JSON)


@dataclass(frozen=True, slots=True)
class Snap:
    t: int  # response time, ns
    q: int  # request time, ns
    c: str  # connection (HTTP session) id
    r: str  # request path and query, e.g. /api/v3/depth?symbol=BTCUSDT&limit=1000
    raw: bytes  # the body exactly as received (JSON unless the server sent otherwise)
    extra: Mapping[str, Scalar] = field(default_factory=dict)  # e.g. status, slot


@dataclass(frozen=True, slots=True)
class Conn:
    t: int
    c: str
    ev: str  # one of CONN_EVENTS
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bad:
    t: int
    c: str
    raw: bytes  # the frame exactly as received: not JSON, not UTF-8, or binary
    binary: bool = False  # arrived as a binary websocket frame


DataRecord = Msg | Snap | Conn | Bad
Record = Header | DataRecord


def _check_fields(what: str, fields: Mapping[str, Any], reserved: tuple[str, ...]) -> None:
    for name in fields:
        if not isinstance(name, str) or _FIELD_RE.fullmatch(name) is None or name in reserved:
            raise CodecError(f"invalid {what} field name {name!r}")


def _ns(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_NS:
        raise CodecError(f"invalid {name} {value!r}: expected integer ns in 0..2**63-1")
    return value


@lru_cache(maxsize=1024)
def _conn_field(conn: str) -> bytes:
    if not isinstance(conn, str) or _CONN_RE.fullmatch(conn) is None:
        raise CodecError(f"invalid connection id {conn!r}: use [A-Za-z0-9_.:-], 1-128 chars")
    return b',"c":"' + conn.encode() + b'"'


def _spliceable(frame: bytes) -> bool | None:
    """True: splice it; False: valid JSON holding a line break; None: not JSON."""
    try:
        orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return b"\n" not in frame and b"\r" not in frame


def _b64(frame: bytes) -> bytes:
    return b',"b64":"' + base64.b64encode(frame) + b'"'


def encode_header(header: Header) -> bytes:
    """The header line (header first, then its extra fields)."""
    fields = {"k": "hdr", "v": FORMAT_VERSION}
    fields.update((name, getattr(header, name)) for name in _HEADER_FIELDS)
    fields.update(header.extra)
    return _dumps(fields) + b"\n"


def encode_msg(t_ns: int, conn: str, frame: bytes) -> bytes:
    """One ``msg`` line for a websocket text frame (a ``bad`` line if it is not JSON)."""
    if type(frame) is not bytes:
        raise CodecError(f"frame must be bytes, not {type(frame).__name__}")
    head = b"%d%s" % (_ns("receive time", t_ns), _conn_field(conn))
    ok = _spliceable(frame)
    if ok is None:
        return b"".join((_BAD_HEAD, head, _b64(frame), b"}\n"))
    return _msg_line(head, frame, spliced=ok)


def msg_prefix(t_ns: int, conn: str) -> bytes:
    """The start of a ``msg`` line, up to its frame: ``msg_prefix(t, c) + frame + b"}\\n"``
    is what :func:`encode_msg` gives for a frame already proven to be JSON without a line
    break (the collector's fast path, :mod:`booktape.fastframe`), at a fraction of it."""
    return b'%s%d%s,"m":' % (_MSG_HEAD, _ns("receive time", t_ns), _conn_field(conn))


def own_line(t_ns: int, conn: str, frame: bytes) -> bytes:
    """The ``msg`` line (with its newline) that :func:`own_msg` reads back as
    ``(t_ns, conn, frame)``: the encoder's own layout, rebuilt byte for byte."""
    return b"".join((msg_prefix(t_ns, conn), frame, b"}\n"))


def _msg_line(head: bytes, frame: bytes, *, spliced: bool) -> bytes:
    """A ``msg`` line for a JSON frame: spliced verbatim, or base64 when it holds a line break."""
    if spliced:
        return b"".join((_MSG_HEAD, head, b',"m":', frame, b"}\n"))
    return b"".join((_MSG_HEAD, head, _b64(frame), b"}\n"))


def encode_read_msg(record: Msg) -> bytes:
    """The line of a ``msg`` record read back from an object (``Msg.raw`` is known to be
    JSON, so it is not parsed again): what :func:`encode_msg` gives, at a fraction of it."""
    head = b"%d%s" % (record.t, _conn_field(record.c))
    raw = record.raw
    return _msg_line(head, raw, spliced=b"\n" not in raw and b"\r" not in raw)


def encode_bad(t_ns: int, conn: str, frame: bytes, *, binary: bool = False) -> bytes:
    """One ``bad`` line: a frame kept byte for byte but not as JSON."""
    head = b"%d%s" % (_ns("receive time", t_ns), _conn_field(conn))
    return b"".join((_BAD_HEAD, head, _b64(bytes(frame)), b',"bin":true}\n' if binary else b"}\n"))


def encode_snap(
    t_ns: int,
    q_ns: int,
    conn: str,
    request: str,
    body: bytes,
    *,
    extra: Mapping[str, Scalar] | None = None,
) -> bytes:
    """One ``snap`` line: a REST response body with its request and times."""
    _check_fields("snap", extra or {}, reserved=("k", "t", "q", "c", "r", "m", "b64"))
    if not isinstance(request, str):
        raise CodecError(f"request must be a string, not {type(request).__name__}")
    fields: dict[str, Any] = {
        "k": "snap",
        "t": _ns("response time", t_ns),
        "q": _ns("request time", q_ns),
        "c": conn,
        "r": request,
    }
    _conn_field(conn)
    for name, value in (extra or {}).items():
        if not _is_scalar(value):
            raise CodecError(f"snap field {name!r} must be a JSON scalar, not {value!r}")
        fields[name] = value
    head = _dumps(fields)[:-1]
    body = bytes(body)
    if _spliceable(body):
        return b"".join((head, b',"m":', body, b"}\n"))
    return b"".join((head, _b64(body), b"}\n"))


def encode_conn(t_ns: int, conn: str, ev: str, info: Mapping[str, Any] | None = None) -> bytes:
    """One ``conn`` line: a connection lifecycle event."""
    if ev not in CONN_EVENTS:
        raise CodecError(f"invalid connection event {ev!r}: one of {sorted(CONN_EVENTS)}")
    head = b"%d%s" % (_ns("time", t_ns), _conn_field(conn))
    return b'{"k":"conn","t":%s,"ev":"%s","info":%s}\n' % (head, ev.encode(), _dumps(info or {}))


def encode_record(record: Record) -> bytes:
    """Encode a record; ``encode_record(decode_line(line)) == line`` for encoded lines."""
    match record:
        case Header():
            return encode_header(record)
        case Msg(t, c, raw):
            return encode_msg(t, c, raw)
        case Snap(t, q, c, r, raw, extra):
            return encode_snap(t, q, c, r, raw, extra=extra)
        case Conn(t, c, ev, info):
            return encode_conn(t, c, ev, info)
        case Bad(t, c, raw, binary):
            return encode_bad(t, c, raw, binary=binary)
    raise CodecError(f"not a record: {record!r}")


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise CodecError(f"cannot encode {value!r} as JSON: {exc}") from exc


def loads_json(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"{what} is not valid JSON: {exc}") from exc


def _unb64(value: object) -> bytes:
    if not isinstance(value, str):
        raise CodecError("b64 must be a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecError(f"invalid b64: {exc}") from exc


_FIELDS: Final = {  # kind -> (required fields, allowed fields besides snap extras)
    "msg": ({"k", "t", "c"}, {"m", "b64"}),
    "bad": ({"k", "t", "c", "b64"}, {"bin"}),
    "snap": ({"k", "t", "q", "c", "r"}, {"m", "b64"}),
    "conn": ({"k", "t", "c", "ev", "info"}, set()),
}


# A msg line in encode_msg's own layout ("t" without leading zeros, as JSON has it).
_MSG_LINE: Final = re.compile(
    rb'\{"k":"msg","t":(0|[1-9][0-9]{0,18}),"c":"([A-Za-z0-9_.:-]{1,128})","m":'
)


def own_msg(line: bytes) -> tuple[int, str, bytes] | None:
    """``(t, c, frame)`` of a msg line (without its newline) in encode_msg's own layout:
    what the general path would conclude, without parsing the head as JSON; else None.
    The frame is not checked here."""
    fast = _MSG_LINE.match(line)
    if fast is None or not line.endswith(b"}") or (t := int(fast.group(1))) > MAX_NS:
        return None
    return t, fast.group(2).decode("ascii"), line[fast.end() : -1]


def decode_line(line: bytes) -> Record:
    """Decode one line (with or without its final newline); raises CodecError."""
    line = line[:-1] if line.endswith(b"\n") else line
    own = own_msg(line)
    if own is not None:
        loads_json(own[2], "spliced frame")
        return Msg(*own)
    return _decode_general(line)


def _decode_general(line: bytes) -> Record:
    raw: bytes | None = None
    if line.startswith((b'{"k":"msg",', b'{"k":"snap",')) and (at := line.find(_SPLICE)) > 0:
        # "m" comes last: parse the head with a stand-in value, then the frame on its own.
        if not line.endswith(b"}"):
            raise CodecError("spliced record does not end with '}'")
        obj = loads_json(line[:at] + b'"m":null}', "record")
        raw = line[at + len(_SPLICE) : -1]
        loads_json(raw, "spliced frame")
    else:
        obj = loads_json(line, "line")
    kind = obj.get("k") if isinstance(obj, dict) else None
    if kind == "hdr":
        return _decode_header(obj)
    if kind not in _FIELDS:
        raise CodecError(f"unknown record kind {kind!r}")
    required, allowed = _FIELDS[kind]
    if missing := required - obj.keys():
        raise CodecError(f"{kind} record lacks {sorted(missing)}")
    extra = {n: v for n, v in obj.items() if n not in required and n not in allowed}
    if extra and (kind != "snap" or not all(_is_scalar(v) for v in extra.values())):
        raise CodecError(f"{kind} record has unexpected fields {sorted(extra)}")
    _check_fields(kind, extra, reserved=())
    t, c = _ns("t", obj["t"]), obj["c"]
    if not isinstance(c, str) or _CONN_RE.fullmatch(c) is None:
        raise CodecError(f"{kind} record has an invalid connection id {c!r}")
    if kind == "conn":
        if obj["ev"] not in CONN_EVENTS or not isinstance(obj["info"], dict):
            raise CodecError(f"conn record with unknown event {obj['ev']!r} or bad info")
        return Conn(t, c, obj["ev"], obj["info"])
    if raw is None:
        if "m" in obj:
            raise CodecError(f"{kind} record: 'm' is not spliced last as written")
        raw = _unb64(obj.get("b64"))
    elif "b64" in obj:
        raise CodecError(f"{kind} record has both 'm' and 'b64'")
    if kind == "msg":
        return Msg(t, c, raw)
    if kind == "bad":
        if type(binary := obj.get("bin", False)) is not bool:
            raise CodecError(f"bad record: 'bin' must be true or false, not {binary!r}")
        return Bad(t, c, raw, binary)
    if not isinstance(obj["r"], str):
        raise CodecError("snap record: 'r' must be a string")
    return Snap(t, _ns("q", obj["q"]), c, obj["r"], raw, extra)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _decode_header(obj: dict[str, Any]) -> Header:
    if obj.get("v") != FORMAT_VERSION or type(obj.get("v")) is not int:
        raise CodecError(
            f"unsupported format version {obj.get('v')!r} (this reader knows {FORMAT_VERSION})"
        )
    extra = {n: v for n, v in obj.items() if n not in ("k", "v", *_HEADER_FIELDS)}
    try:
        return Header(**{name: obj[name] for name in _HEADER_FIELDS}, extra=extra)
    except KeyError as exc:
        raise CodecError(f"header lacks field {exc}") from exc
    except BooktapeError as exc:
        raise CodecError(f"invalid header: {exc}") from exc
