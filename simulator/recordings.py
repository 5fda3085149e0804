"""Readers of real recorded Binance data (the formats in ../shared/data/real).

Two public formats are read, both written by other open-source recorders:

- hftbacktest: gzip text, one message per line, ``<receive ns> <json>``; websocket
  messages are combined-stream frames, a REST depth snapshot is a bare
  ``{"lastUpdateId":...}`` line.
- cryptofeed ``sample_data``: ``*.ws.*`` files with a ``<url> <-> <time>`` connect line and
  ``<time>: <json>`` frames, and ``*.http.*`` files with ``<url> -> <time>: <json>`` REST
  responses; times are decimal seconds.

Payloads are returned byte for byte as recorded: the inner ``data`` of a combined frame is
sliced out of the line, never re-serialised. Times become integer nanoseconds without
going through floats.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from booktape.binance import Market
from booktape.errors import FrameError


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    recv_ns: int
    stream: str  # the combined stream name, e.g. "btcusdt@depth@100ms"
    symbol: str  # upper case
    frame: bytes  # the inner event (the combined frame's "data"), verbatim


@dataclass(frozen=True, slots=True)
class RecordedSnapshot:
    recv_ns: int
    symbol: str
    body: bytes  # the REST depth response body, verbatim


@dataclass(frozen=True, slots=True)
class Recording:
    market: Market
    frames: list[RecordedFrame]
    snapshots: list[RecordedSnapshot]

    def symbols(self) -> list[str]:
        return sorted({f.symbol for f in self.frames} | {s.symbol for s in self.snapshots})

    def depth_frames(self, symbol: str) -> list[RecordedFrame]:
        return [f for f in self.frames if f.symbol == symbol and "@depth" in f.stream]


_WRAPPED = re.compile(rb'^\{"stream":"([^"]+)","data":')


def unwrap_combined(frame: bytes) -> tuple[str, bytes]:
    """Split a combined frame into its stream name and its inner payload, byte-exact."""
    match = _WRAPPED.match(frame)
    if match is None or not frame.endswith(b"}"):
        raise FrameError(f"not a combined-stream frame: {frame[:80]!r}")
    return match.group(1).decode("ascii"), frame[match.end() : -1]


def _seconds_to_ns(text: str) -> int:
    return int(Decimal(text) * 1_000_000_000)


def _frame(recv_ns: int, line: bytes) -> RecordedFrame:
    stream, inner = unwrap_combined(line)
    return RecordedFrame(recv_ns, stream, stream.split("@", 1)[0].upper(), inner)


def _market_of(frames: Sequence[RecordedFrame], futures_hint: bool) -> Market:
    depth = next((f for f in frames if "@depth" in f.stream), None)
    futures = futures_hint or (depth is not None and b'"pu":' in depth.frame)
    if not futures:
        return Market.SPOT
    return Market.COINM if depth is not None and "_" in depth.symbol else Market.USDM


def _read_hftbacktest(path: Path) -> tuple[list[RecordedFrame], list[tuple[int, bytes]]]:
    frames: list[RecordedFrame] = []
    bare_snapshots: list[tuple[int, bytes]] = []
    with gzip.open(path, "rb") as handle:
        for number, raw_line in enumerate(handle, 1):
            line = raw_line.rstrip(b"\r\n")
            if not line:
                continue
            stamp, _, payload = line.partition(b" ")
            if not stamp.isdigit() or not payload:
                raise FrameError(f"{path}:{number}: not '<ns> <json>'")
            if payload.startswith(b'{"lastUpdateId"'):
                bare_snapshots.append((int(stamp), payload))
            else:
                frames.append(_frame(int(stamp), payload))
    return frames, bare_snapshots


_CONNECT = re.compile(r"^(\S+) <-> ([0-9.]+)$")
_HTTP = re.compile(r"^(\S+) -> ([0-9.]+): (.*)$", re.DOTALL)
_WS = re.compile(rb"^([0-9.]+): (.*)$", re.DOTALL)


def _read_cryptofeed_ws(path: Path) -> list[RecordedFrame]:
    frames: list[RecordedFrame] = []
    for number, raw_line in enumerate(path.read_bytes().splitlines(), 1):
        if not raw_line or _CONNECT.match(raw_line.decode("utf-8", "replace")):
            continue
        match = _WS.match(raw_line)
        if match is None:
            raise FrameError(f"{path}:{number}: not '<time>: <json>'")
        frames.append(_frame(_seconds_to_ns(match.group(1).decode()), match.group(2)))
    return frames


def _read_cryptofeed_http(path: Path) -> list[RecordedSnapshot]:
    snapshots: list[RecordedSnapshot] = []
    for number, raw_line in enumerate(path.read_bytes().splitlines(), 1):
        if not raw_line:
            continue
        match = _HTTP.match(raw_line.decode("utf-8"))
        if match is None:
            raise FrameError(f"{path}:{number}: not '<url> -> <time>: <json>'")
        url, stamp, body = match.groups()
        symbols = parse_qs(urlsplit(url).query).get("symbol")
        if not symbols or "depth" not in url:
            continue
        snapshots.append(
            RecordedSnapshot(_seconds_to_ns(stamp), symbols[0].upper(), body.encode("utf-8"))
        )
    return snapshots


def _iter_paths(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"recording {path} does not exist")
        yield path


def load_recording(paths: Sequence[Path | str]) -> Recording:
    """Load one recording from its files (hftbacktest ``.gz`` or cryptofeed pairs).

    Several files are concatenated in time order (a stable sort on receive time), so a day
    split over two hftbacktest files or a cryptofeed ws/http pair reads as one recording.
    A bare hftbacktest snapshot is attributed to the recording's depth symbol.
    """
    frames: list[RecordedFrame] = []
    snapshots: list[RecordedSnapshot] = []
    bare: list[tuple[int, bytes]] = []
    futures_hint = False
    for path in _iter_paths([Path(p) for p in paths]):
        name = path.name
        if name.endswith(".gz"):
            got, got_bare = _read_hftbacktest(path)
            frames += got
            bare += got_bare
        elif ".ws." in name:
            frames += _read_cryptofeed_ws(path)
        elif ".http." in name:
            snapshots += _read_cryptofeed_http(path)
        else:
            raise FrameError(f"{path}: unknown recording format (want .gz, .ws.N, .http.N)")
        futures_hint = futures_hint or "FUTURES" in name or "usdm" in str(path).lower()
    if bare:
        depth_symbols = Counter(f.symbol for f in frames if "@depth" in f.stream)
        if len(depth_symbols) != 1:
            raise FrameError("a bare snapshot needs exactly one depth symbol in its recording")
        (symbol,) = depth_symbols
        snapshots += [RecordedSnapshot(ns, symbol, body) for ns, body in bare]
    frames.sort(key=lambda f: f.recv_ns)
    snapshots.sort(key=lambda s: s.recv_ns)
    return Recording(_market_of(frames, futures_hint), frames, snapshots)


def book_ticker(frame: bytes) -> tuple[int, str, str, str, str]:
    """Decode a bookTicker payload: (u, best bid, bid qty, best ask, ask qty)."""
    doc = orjson.loads(frame)
    return int(doc["u"]), doc["b"], doc["B"], doc["a"], doc["A"]
