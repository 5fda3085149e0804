"""The fast path for a depth frame in Binance's own layout: header and JSON proof at once.

A ``msg`` record embeds the frame verbatim as a JSON value, so the frame must be proven to
be JSON (else it becomes a ``bad`` record). ``orjson.loads`` proves it by building every
level as Python objects (~3.7 µs for a 1.6 kB frame), after a regex has read the header
(~2 µs). :func:`spot_depth` does both with one anchored regular expression (~2.6 µs) that
matches, in full, the one layout Binance sends on a combined spot stream:

    {"stream":"<name>","data":{"e":"depthUpdate","E":<n>,"s":"<sym>","U":<n>,"u":<n>,
     "b":[["<p>","<q>"],...],"a":[["<p>","<q>"],...]}}

Every string is printable ASCII without ``"`` or ``\\`` (prices and quantities: digits and
``.`` only), every number an integer of at most 19 digits without a leading zero, no
whitespace: each piece is a JSON token, so whatever matches is JSON, and has no line break.
Anything else -- another layout, spaces, escapes, futures fields, ``U > u``, an id over
2^63-1, a longer number (``int()`` raises past 4,300 digits) -- gives None and the
caller takes the general path (:func:`booktape.binance.classify_frame`,
:func:`~booktape.binance.parse_depth_header` and :func:`booktape.codec.encode_msg`, which
validates with orjson). What it reads is what :func:`~booktape.binance.parse_depth_header`
reads from the same frame (``pu`` = ``U`` - 1).

Used where frames are many: the collector on receipt (:func:`spot_depth`), the merger when
it reads recorded ``msg`` lines back (:func:`spot_depth_header`, given to
:func:`booktape.objects.read_object_parts` as its prover).

``booktape/_fastframe.c`` does the same in one forward pass, ~6x faster (the regex engine
steps through each level's pattern); it is built with the package when a C compiler is
there (setup.py) and then used (:data:`ACCELERATED`). The regex is the reference: the tests
hold the two to the same answer on real frames, their mutants and generated frames.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from booktape.binance import DepthHeader
from booktape.cext import c_function
from booktape.keys import MAX_ID

_STR: Final = rb"([ !#-\[\]-~]*+)"  # a JSON string body: printable ASCII, no quote, no backslash
_INT: Final = rb"(0|[1-9][0-9]{0,18}+)"  # a JSON non-negative integer of at most 19 digits
_LEVEL: Final = rb'\["[0-9.]*+","[0-9.]*+"\]'
_LEVELS: Final = rb"(?:" + _LEVEL + rb"(?:," + _LEVEL + rb")*+)?+"
_FRAME: Final = re.compile(
    rb'\{"stream":"' + _STR + rb'","data":\{"e":"depthUpdate","E":' + _INT
    + rb',"s":"' + _STR + rb'","U":' + _INT + rb',"u":' + _INT
    + rb',"b":\[' + _LEVELS + rb'\],"a":\[' + _LEVELS + rb"\]\}\}"
)  # fmt: skip
_DEPTH_WITHIN: Final = 200  # classify_frame looks for "e":"depthUpdate" in the first 200 bytes


def _py_fields(frame: bytes) -> tuple[bytes, int, bytes, int, int] | None:
    """``(stream, E, symbol, U, u)`` of a frame in the layout, proven to be JSON, or None."""
    match = _FRAME.fullmatch(frame)
    if match is None or match.start(2) - 5 > _DEPTH_WITHIN:
        return None
    stream, event_time, symbol, first_text, last_text = match.groups()
    first, last = int(first_text), int(last_text)
    if first > last or last > MAX_ID:
        return None  # refused further on (parse_depth_header, the chunk key): the general path
    return stream, int(event_time), symbol, first, last


def _py_spot_depth(frame: bytes) -> tuple[str, int, int, int] | None:
    """``(symbol, U, u, E)`` of a combined spot depth frame proven to be JSON without a line
    break, or None (not proven: take the general path)."""
    fields = _py_fields(frame)
    if fields is None:
        return None
    _, event_time, symbol, first, last = fields
    return symbol.decode("ascii"), first, last, event_time


Fields = Callable[[bytes], "tuple[bytes, int, bytes, int, int] | None"]
SpotDepth = Callable[[bytes], "tuple[str, int, int, int] | None"]


_C_FIELDS: Final[Fields | None] = c_function("_fastframe", "fields")
_C_SPOT_DEPTH: Final[SpotDepth | None] = c_function("_fastframe", "spot_depth")
ACCELERATED: Final = _C_FIELDS is not None  # the C pass is in use (else the regex)
_fields: Final[Fields] = _C_FIELDS or _py_fields
spot_depth: Final[SpotDepth] = _C_SPOT_DEPTH or _py_spot_depth


def spot_depth_header(frame: bytes) -> DepthHeader | None:
    """The :class:`~booktape.binance.DepthHeader` of a combined spot depth frame proven to
    be JSON (equal to :func:`~booktape.binance.parse_depth_header`'s), or None."""
    fields = _fields(frame)
    if fields is None:
        return None
    stream, event_time, symbol, first, last = fields
    return DepthHeader(
        symbol.decode("ascii"), first, last, first - 1, event_time, stream.decode("ascii")
    )
