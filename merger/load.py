"""Read the raw chunks of one symbol-day: depth events per connection, snapshots, statistics.

Input: the raw object keys of one ``(exchange, channel=depth, symbol, date)``, every source
(``region.collector``) mixed. :class:`ChunkReader` decodes ONE chunk at a time (so the
merger can stream a day, :mod:`merger.feed`); :func:`load_symbol_day` reads them all into
:class:`Loaded`, the in-memory form the tests and small tools use.

Rules (DESIGN.md, issue 4):

- each source's objects are read in key order (receive time of their first record);
- a CORRUPT object is reported in ``log.corrupt`` and skipped; a TRUNCATED one keeps its
  whole records and is reported too; a key off the layout is reported and skipped; neither
  ever aborts the day;
- a chunk whose header disagrees with its key (exchange, channel, symbol, region,
  collector) is reported and skipped;
- a duplicate chunk (identical bytes under two keys) is read once, and an event a
  connection already gave (``u`` not above that connection's last ``u``: a chunk resealed
  on re-upload) is kept once;
- ``msg`` records that are not depth events of the symbol (replies, errors, other streams)
  and ``bad`` records are ignored for the book; ``snap`` records count only with HTTP
  status 200 (or no status) and a body that decodes as a depth snapshot; the request's
  ``limit=N`` becomes :attr:`SourceSnapshot.limit`.

Per-source statistics (gaps.json ``sources``) are kept incrementally by
:class:`SourceTracker`, in bounded memory: a source's own gap is a place where none of its
connections continues its coverage within :data:`FILL_HORIZON_NS` of receive time (a
rotation's overlapping connection fills its own holes well within that).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, urlsplit

from booktape.binance import DepthHeader, Market, decode_snapshot, parse_depth_header
from booktape.codec import Header, Msg, Snap, encode_read_msg, encode_record
from booktape.errors import CorruptObjectError, FrameError, KeyLayoutError
from booktape.fastframe import spot_depth_header
from booktape.keys import RawKey, parse_raw_key
from booktape.objects import read_object_parts
from booktape.stores import Store
from merger.model import GapLog, SourceSnapshot, SourceStats, StreamEvent

__all__ = [
    "FILL_HORIZON_NS",
    "ChunkContent",
    "ChunkReader",
    "Loaded",
    "ProvenFrames",
    "SourceTracker",
    "header_mismatch",
    "load_symbol_day",
    "plan_sources",
]

FILL_HORIZON_NS: Final = 60 * 10**9
MAX_SEGMENTS: Final = 5_000  # continuous stretches kept per source for the report
RECENT_CHUNKS: Final = 256  # chunks whose digests are kept to skip a copy (ChunkReader)


@dataclass(slots=True)
class Loaded:
    """A whole symbol-day in memory (what the stitcher reads, all at once)."""

    streams: dict[str, list[StreamEvent]]  # "region.collector/conn" -> events, receive order
    snapshots: list[SourceSnapshot]  # status 200 only, sorted by (lastUpdateId, recv_ns)
    sources: set[str] = field(default_factory=set)  # every source with a readable chunk


@dataclass(slots=True)
class ChunkContent:
    """What one chunk adds: depth events (receive order) and usable snapshots."""

    events: list[StreamEvent] = field(default_factory=list)
    snapshots: list[SourceSnapshot] = field(default_factory=list)


class SourceTracker:
    """Events, first/last id and own gaps of one source, from its events in receive order."""

    def __init__(self) -> None:
        self.events = 0
        self.first_update_id: int | None = None
        self.last_update_id: int | None = None
        self.gaps = 0
        self._cur = -1  # the source's coverage reaches this id (-1: nothing yet)
        self._pending: list[tuple[int, int, int]] = []  # (prev, u, recv_ns), by prev
        self.segments: list[tuple[int, int]] = []  # closed continuous stretches, ns
        self._seg_from = 0  # receive ns where the open stretch began
        self._seg_to = 0  # receive ns of the last event that extended it

    def add(self, prev: int, first: int, last: int, recv_ns: int) -> None:
        self.events += 1
        if self.first_update_id is None or first < self.first_update_id:
            self.first_update_id = first
        if self.last_update_id is None or last > self.last_update_id:
            self.last_update_id = last
        if self.events == 1:
            self._cur = last
            self._seg_from = self._seg_to = recv_ns
            return
        if last <= self._cur:
            return
        if prev <= self._cur and not self._pending:  # continues: what _drain would do
            self._cur = last
            self._seg_to = max(self._seg_to, recv_ns)
            return
        heapq.heappush(self._pending, (prev, last, recv_ns))
        self._drain()
        while self._pending and recv_ns - self._pending[0][2] > FILL_HORIZON_NS:
            self._jump()

    def add_all(self, events: list[StreamEvent]) -> None:
        """:meth:`add` each of a chunk's events, in order."""
        add = self.add
        for event in events:
            head = event.header
            add(head.prev_id, head.first_id, head.last_id, event.recv_ns)

    def _drain(self) -> None:
        pending = self._pending
        while pending and pending[0][0] <= self._cur:
            _, last, recv_ns = heapq.heappop(pending)
            self._cur = max(self._cur, last)
            self._seg_to = max(self._seg_to, recv_ns)

    def _jump(self) -> None:
        """Nothing filled the hole in time: a gap; coverage resumes at the next event."""
        self.gaps += 1
        if len(self.segments) < MAX_SEGMENTS:
            self.segments.append((self._seg_from, self._seg_to))
        _, self._cur, resumed = heapq.heappop(self._pending)
        self._seg_from = self._seg_to = resumed
        self._drain()

    def stats(self) -> SourceStats:
        while self._pending:
            self._jump()
        segments = list(self.segments)
        if self.events:
            segments.append((self._seg_from, self._seg_to))
        return SourceStats(
            self.events, self.first_update_id, self.last_update_id, self.gaps, segments
        )


def header_mismatch(header: Header, key: RawKey) -> str | None:
    """Which header field disagrees with the key, or None."""
    for name in ("exchange", "channel", "symbol", "region", "collector"):
        ours, theirs = getattr(header, name), getattr(key, name)
        if ours != theirs:
            return f"header {name} {ours!r} disagrees with the key's {theirs!r}"
    return None


def _snapshot_limit(request: str) -> int | None:
    """The ``limit=N`` of a snapshot's request path, or None."""
    values = parse_qs(urlsplit(request).query).get("limit")
    if values and values[0].isdigit():
        return int(values[0])
    return None


def _snapshot_symbol_ok(request: str, symbol: str) -> bool:
    values = parse_qs(urlsplit(request).query).get("symbol")
    return not values or values[0].upper() == symbol


class ProvenFrames:
    """A prover (:func:`~booktape.fastframe.spot_depth_header`) that remembers the frames
    it proved.

    The redundant sources of a symbol-day hold the same exchange frames, byte for byte, and
    the feed reads their chunks of the same minute one after the other: a frame proven in
    the chunk read just before needs no second proof (for BTCUSDT's 1.6 kB frames ~1.1 µs
    with the C pass and the header object, ~7 µs with the regex), only a lookup by its
    first :attr:`PREFIX` bytes (its stream, event time, symbol and ids) and one comparison
    of all its bytes (equal bytes, or no hit). Keyed by the prefix, not the whole frame:
    hashing a whole 1.6 kB frame (~0.4 µs) costs about half of proving it. The header read with
    the proof comes back with it; it is immutable and depends on the frame's bytes alone.

    Bounded: it holds the frames of the chunk being read and of the one read before
    (:meth:`next_chunk` starts a chunk), which the feed mostly holds anyway at that point.
    """

    PREFIX: Final = 128

    def __init__(self, prove: Callable[[bytes], DepthHeader | None]) -> None:
        self._prove = prove  # spot_depth_header (tests count the calls)
        # a frame's first PREFIX bytes -> the frame and its header
        self._now: dict[bytes, tuple[bytes, DepthHeader]] = {}  # this chunk's frames
        self._before: dict[bytes, tuple[bytes, DepthHeader]] = {}  # the previous chunk's

    def next_chunk(self) -> None:
        self._before, self._now = self._now, {}

    def __call__(self, frame: bytes) -> DepthHeader | None:
        key = frame[: self.PREFIX]
        seen = self._before.get(key)
        if seen is not None and seen[0] == frame:
            header = seen[1]
        else:
            found = self._prove(frame)
            if found is None:
                return None  # not proven here: the reader judges it with orjson
            header = found
        self._now[key] = (frame, header)
        return header


class ChunkReader:
    """Decodes the chunks of one symbol-day, one at a time; remembers only what dedupe needs."""

    def __init__(self, market: Market, log: GapLog) -> None:
        self.market = market
        self.log = log
        # spot frames in Binance's own layout: JSON proof and header in one regex, once for
        # the copies of a frame that the sources share
        self._prove = None if market.is_futures else ProvenFrames(spot_depth_header)
        self.sources: dict[str, SourceTracker] = {}
        self._last_u: dict[str, int] = {}  # stream -> last u taken
        self._names: dict[str, dict[str, str]] = {}  # source -> connection -> stream name
        # sha256 of the last RECENT_CHUNKS chunks read, oldest first (a day's every digest:
        # 0.4 MB for 4,000 chunks). A copy holds the same records, so its key names about
        # the same time and the same ids and it is read close to its chunk; a copy read
        # further apart is read again and changes nothing: its events are dropped as given
        # already, its snapshots as seen (merger.feed)
        self._digests: dict[bytes, None] = {}

    def read(self, key: str, raw_key: RawKey, data: bytes) -> ChunkContent:
        """The events and snapshots of one chunk; bad input is reported, never raised."""
        content = ChunkContent()
        digest = hashlib.sha256(data).digest()
        if digest in self._digests:
            return content  # the same bytes under another key: read once
        self._digests[digest] = None
        if len(self._digests) > RECENT_CHUNKS:
            del self._digests[next(iter(self._digests))]
        if self._prove is not None:
            self._prove.next_chunk()
        try:
            header, parts, truncated = read_object_parts(data, key, self._prove)
        except CorruptObjectError as exc:
            self.log.corrupt.append({"key": key, "error": exc.reason})
            return content
        if (mismatch := header_mismatch(header, raw_key)) is not None:
            self.log.corrupt.append({"key": key, "error": mismatch})
            return content
        if truncated is not None:
            self.log.corrupt.append({"key": key, "error": f"truncated: {truncated}"})
        source = raw_key.source
        symbol = raw_key.symbol
        market = self.market
        names = self._names.setdefault(source, {})  # connection id -> stream name
        last_u = self._last_u
        events = content.events
        for part in parts:  # the hot loop: every recorded event of every source passes here
            if type(part) is tuple:  # a msg in encode_msg's own layout
                t, c, frame, own, head = part
            elif type(part) is Msg:
                t, c, frame, own, head = part.t, part.c, part.raw, False, None
            else:
                if isinstance(part, Snap):
                    snapshot = self._snapshot(source, key, symbol, part)
                    if snapshot is not None:
                        content.snapshots.append(snapshot)
                continue
            if head is None:
                try:
                    head = parse_depth_header(frame, market)
                except FrameError:
                    continue  # a reply, an error or another stream: not part of the book
            if head.symbol != symbol:
                continue
            name = names.get(c)
            if name is None:
                name = names[c] = f"{source}/{c}"
            last = last_u.get(name)
            if last is not None and head.last_id <= last:
                continue  # this connection gave it already (a resealed chunk)
            last_u[name] = head.last_id
            # stored in encode_msg's own layout: the line is rebuilt if the event is
            # written; else (a CR in the frame, another layout) the line it would have
            line = None if own else encode_read_msg(Msg(t, c, frame))
            events.append(StreamEvent(source, name, t, head, frame, line))
        self.sources.setdefault(source, SourceTracker()).add_all(events)
        return content

    def _snapshot(self, source: str, key: str, symbol: str, record: Snap) -> SourceSnapshot | None:
        status = record.extra.get("status")
        if status is not None and status != 200:
            return None
        if not _snapshot_symbol_ok(record.r, symbol):
            return None
        try:
            snapshot = decode_snapshot(record.raw)
        except FrameError:
            return None  # an error body or an HTML page: not a snapshot, not corruption
        return SourceSnapshot(
            source=source,
            key=key,
            recv_ns=record.t,
            snapshot=snapshot,
            line=encode_record(record),
            limit=_snapshot_limit(record.r),
        )

    def finish(self) -> None:
        """Write each source's statistics into the log."""
        for source in sorted(self.sources):
            self.log.sources[source] = self.sources[source].stats()


def plan_sources(keys: Sequence[str], log: GapLog) -> dict[str, list[tuple[str, RawKey]]]:
    """source -> its (key, parsed key) in key order; keys off the layout are reported."""
    by_source: dict[str, list[tuple[str, RawKey]]] = {}
    for key in dict.fromkeys(keys):  # a key listed twice is one object
        try:
            raw_key = parse_raw_key(key)
        except KeyLayoutError as exc:
            log.corrupt.append({"key": key, "error": str(exc)})
            continue
        by_source.setdefault(raw_key.source, []).append((key, raw_key))
    return {s: sorted(chunks, key=lambda pair: pair[0]) for s, chunks in sorted(by_source.items())}


async def load_symbol_day(
    store: Store, keys: Sequence[str], *, market: Market, log: GapLog
) -> Loaded:
    """Read every chunk of one symbol-day into memory (tests and small days).

    The merger itself streams (:mod:`merger.feed`); both read chunks with the same
    :class:`ChunkReader`.
    """
    reader = ChunkReader(market, log)
    streams: dict[str, list[StreamEvent]] = {}
    snapshots: list[SourceSnapshot] = []
    for chunks in plan_sources(keys, log).values():
        for key, raw_key in chunks:
            content = reader.read(key, raw_key, await store.get(key))
            for event in content.events:
                streams.setdefault(event.stream, []).append(event)
            snapshots.extend(content.snapshots)
    reader.finish()
    unique: dict[tuple[str, int, bytes], SourceSnapshot] = {}
    for snap in snapshots:
        unique.setdefault((snap.source, snap.recv_ns, snap.line), snap)
    ordered = sorted(unique.values(), key=lambda s: (s.snapshot.last_update_id, s.recv_ns, s.key))
    return Loaded({n: streams[n] for n in sorted(streams)}, ordered, set(reader.sources))
