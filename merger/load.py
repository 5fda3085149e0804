"""Load the raw chunks of one symbol-day into per-connection event streams and snapshots.

Input: the raw object keys of one ``(exchange, channel=depth, symbol, date)``, every source
(``region.collector``) mixed. Output: :class:`Loaded` -- each connection's depth events in
receive order, every usable recorded REST snapshot, and the per-source statistics written
into the :class:`~merger.model.GapLog`.

Rules (DESIGN.md, issue 4):

- the objects of one source are read one at a time, in key order (``store.get`` then
  :func:`~booktape.codec.read_object`);
- a CORRUPT object is reported in ``log.corrupt`` and skipped; a TRUNCATED one keeps its
  whole records and is reported too; a key off the layout is reported and skipped; neither
  ever aborts the day;
- a chunk whose header disagrees with its key (exchange, channel, symbol, region,
  collector) is reported and skipped;
- a duplicate chunk (identical bytes under two keys) is read once, and an event recorded
  twice on the same connection (identical frame and ids) is kept once;
- ``msg`` records that are not depth events of the symbol (replies, errors, other streams)
  and ``bad`` records are ignored for the book; ``snap`` records count only with HTTP
  status 200 (or no status) and a body that decodes as a depth snapshot; the request's
  ``limit=N`` becomes :attr:`SourceSnapshot.limit`.

This version holds the whole symbol-day in memory (simple and correct). It is structured so
that chunks are fetched and decoded one at a time; a streaming version (bounded by a few
chunks per source, driven by the key order) can replace the final lists later without
changing the per-chunk code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from booktape.binance import Market, decode_snapshot, parse_depth_header
from booktape.codec import Header, Msg, ReadResult, Snap, encode_record, read_object
from booktape.errors import CorruptObjectError, FrameError, KeyLayoutError
from booktape.keys import RawKey, parse_raw_key
from booktape.splice import Splicer
from booktape.stores import Store
from merger.model import GapLog, SourceSnapshot, SourceStats, StreamEvent

__all__ = ["Loaded", "load_symbol_day", "source_gaps"]


@dataclass(slots=True)
class Loaded:
    """What the stitcher needs of one symbol-day."""

    streams: dict[str, list[StreamEvent]]  # "region.collector/conn" -> events, receive order
    snapshots: list[SourceSnapshot]  # status 200 only, sorted by (lastUpdateId, recv_ns)
    sources: set[str] = field(default_factory=set)  # every source with a readable chunk


@dataclass(slots=True)
class _Stream:
    events: list[StreamEvent] = field(default_factory=list)
    seen: set[tuple[int, int, bytes]] = field(default_factory=set)  # (U, u, frame)


def _header_mismatch(header: Header, key: RawKey) -> str | None:
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


class _DayLoader:
    """Accumulates the chunks of one symbol-day, one chunk at a time."""

    def __init__(self, market: Market, log: GapLog) -> None:
        self.market = market
        self.log = log
        self.streams: dict[str, _Stream] = {}
        self.snapshots: list[SourceSnapshot] = []
        self.sources: set[str] = set()
        self._digests: dict[str, str] = {}  # sha256 of a chunk's bytes -> first key

    def read_chunk(self, key: str, raw_key: RawKey, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if digest in self._digests:
            return  # the same bytes under another key: read once
        self._digests[digest] = key
        try:
            result = read_object(data, key)
        except CorruptObjectError as exc:
            self.log.corrupt.append({"key": key, "error": exc.reason})
            return
        if (mismatch := _header_mismatch(result.header, raw_key)) is not None:
            self.log.corrupt.append({"key": key, "error": mismatch})
            return
        if result.truncated:
            self.log.corrupt.append({"key": key, "error": f"truncated: {result.error}"})
        self.sources.add(raw_key.source)
        self._take_records(key, raw_key, result)

    def _take_records(self, key: str, raw_key: RawKey, result: ReadResult) -> None:
        source = raw_key.source
        for record in result.records:
            if isinstance(record, Msg):
                self._take_msg(source, raw_key.symbol, record)
            elif isinstance(record, Snap):
                self._take_snap(source, key, raw_key.symbol, record)

    def _take_msg(self, source: str, symbol: str, record: Msg) -> None:
        try:
            header = parse_depth_header(record.raw, self.market)
        except FrameError:
            return  # a reply, an error or another stream: not part of the book
        if header.symbol != symbol:
            return
        name = f"{source}/{record.c}"
        stream = self.streams.setdefault(name, _Stream())
        identity = (header.first_id, header.last_id, record.raw)
        if identity in stream.seen:
            return  # recorded twice on the same connection
        stream.seen.add(identity)
        line = encode_record(record)
        stream.events.append(StreamEvent(source, name, record.t, header, record.raw, line))

    def _take_snap(self, source: str, key: str, symbol: str, record: Snap) -> None:
        status = record.extra.get("status")
        if status is not None and status != 200:
            return
        if not _snapshot_symbol_ok(record.r, symbol):
            return
        try:
            snapshot = decode_snapshot(record.raw)
        except FrameError:
            return  # an error body or an HTML page: not a snapshot, not corruption
        self.snapshots.append(
            SourceSnapshot(
                source=source,
                key=key,
                recv_ns=record.t,
                snapshot=snapshot,
                line=encode_record(record),
                limit=_snapshot_limit(record.r),
            )
        )

    def finish(self) -> Loaded:
        streams: dict[str, list[StreamEvent]] = {}
        for name in sorted(self.streams):
            events = self.streams[name].events
            events.sort(key=lambda event: event.recv_ns)  # stable: key order breaks ties
            streams[name] = events
        unique: dict[tuple[str, int, bytes], SourceSnapshot] = {}
        for snap in self.snapshots:
            unique.setdefault((snap.source, snap.recv_ns, snap.line), snap)
        snapshots = sorted(
            unique.values(), key=lambda s: (s.snapshot.last_update_id, s.recv_ns, s.key)
        )
        for source in sorted(self.sources):
            mine = [events for name, events in streams.items() if name.startswith(source + "/")]
            self.log.sources[source] = source_stats(mine)
        return Loaded(streams, snapshots, set(self.sources))


def source_gaps(streams: Sequence[Sequence[StreamEvent]]) -> int:
    """How often one source's own recording cannot continue (splice rule over its streams).

    Breaks within a connection that another connection of the same source covers (an
    overlapping rotation) are not gaps of the source; a hole between consecutive
    connections is.
    """
    ranges = [[(e.header.prev_id, e.header.last_id) for e in events] for events in streams]
    firsts = [r[0][0] for r in ranges if r]
    if not firsts:
        return 0
    splicer = Splicer(ranges)
    cur, gaps = min(firsts), 0
    while True:
        pick = splicer.pick(cur)
        if pick is None:
            resume = splicer.resume_after(cur)
            if resume is None:
                return gaps
            gaps += 1
            cur = ranges[resume.source][resume.index][0]
            continue
        cur = splicer.take(pick)[1]


def source_stats(streams: Sequence[Sequence[StreamEvent]]) -> SourceStats:
    """Events, first and last update id, and own gaps of one source."""
    events = [event for stream in streams for event in stream]
    if not events:
        return SourceStats()
    return SourceStats(
        events=len(events),
        first_update_id=min(e.header.first_id for e in events),
        last_update_id=max(e.header.last_id for e in events),
        gaps=source_gaps(streams),
    )


async def load_symbol_day(
    store: Store, keys: Sequence[str], *, market: Market, log: GapLog
) -> Loaded:
    """Read the chunks of one symbol-day (all sources) into streams and snapshots.

    Objects are fetched one at a time, per source in key order. Bad input is reported in
    ``log.corrupt`` and never aborts; ``log.sources`` gets each source's statistics.
    """
    by_source: dict[str, list[tuple[str, RawKey]]] = {}
    loader = _DayLoader(market, log)
    for key in dict.fromkeys(keys):  # a key listed twice is one object
        try:
            raw_key = parse_raw_key(key)
        except KeyLayoutError as exc:
            log.corrupt.append({"key": key, "error": str(exc)})
            continue
        by_source.setdefault(raw_key.source, []).append((key, raw_key))
    for source in sorted(by_source):
        for key, raw_key in sorted(by_source[source], key=lambda pair: pair[0]):
            loader.read_chunk(key, raw_key, await store.get(key))
    return loader.finish()
