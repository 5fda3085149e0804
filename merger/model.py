"""What the merger's parts pass to each other (see DESIGN.md "Canonical output").

The flow for one symbol and day::

    plan (listing)  ->  load (chunks -> per-connection event streams + snapshots)
                    ->  stitch (splice, re-anchor, audit)  -> canonical items + a GapLog
                    ->  write (levels.parquet, deltas.jsonl.zst, closing_book, gaps.json,
                               _MANIFEST.json last)

A *source* is one ``region.collector``; a *stream* is one connection of one source (ids
ascend within a stream; connections of one source may overlap at a rotation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from booktape.binance import DepthEvent, DepthHeader, DepthSnapshot
from booktape.codec import own_line


@dataclass(slots=True)
class StreamEvent:
    """One depth event as one connection of one source recorded it.

    Treat as immutable, but for ``decoded``, which the stitcher sets once on the events it
    takes. Not a frozen dataclass because ~100,000 are made for each hour of a day (every
    recorded event of every source), and a frozen one takes about twice as long to make.
    """

    source: str  # "region.collector"
    stream: str  # "region.collector/connection-id"
    recv_ns: int  # local receive time ("t" of the record)
    header: DepthHeader  # ids and exchange time, read from the frame
    frame: bytes  # the frame, verbatim (raw or combined)
    line: bytes | None  # the record line as stored, verbatim; None: own_line() gives it
    decoded: DepthEvent | None = None  # its levels, once the stitcher has decoded it

    def record_line(self) -> bytes:
        """The record line as stored, with its newline (for deltas.jsonl.zst)."""
        line = self.line
        if line is None:  # encode_msg's own layout: rebuilt, not kept for every event read
            return own_line(self.recv_ns, self.stream[len(self.source) + 1 :], self.frame)
        return line if line.endswith(b"\n") else line + b"\n"


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """A recorded REST depth snapshot (status 200) usable to anchor or audit."""

    source: str
    key: str  # the object key it was recorded in
    recv_ns: int  # response time ("t")
    snapshot: DepthSnapshot
    line: bytes  # the record line as stored
    limit: int | None = None  # the requested depth limit, from the request path


@dataclass(frozen=True, slots=True)
class BookImage:
    """A full book image that starts the day or re-anchors it (``is_snapshot`` rows)."""

    local_ts: int  # the snapshot's response time (or the previous day's close time)
    last_update_id: int
    bids: tuple[tuple[str, str], ...]  # best first, exchange strings
    asks: tuple[tuple[str, str], ...]
    source: str  # "region.collector" of the snapshot, or "previous-day"
    reason: str  # "start", "previous_day" or "reanchor"
    key: str | None = None  # the object key of the snapshot, when recorded


CanonicalItem = BookImage | StreamEvent


@dataclass(slots=True)
class Gap:
    """An unrecoverable gap (gaps.json ``unrecoverable`` entry, DESIGN.md meanings)."""

    from_update_id: int  # the book's id before the gap + 1
    to_update_id: int  # the lastUpdateId of the snapshot re-anchored on
    from_ts: int  # local receive ns of the last event before the gap
    to_ts: int  # local receive ns of the snapshot re-anchored on
    reanchored_on: dict[str, object]  # {"key": ..., "lastUpdateId": ...}

    @property
    def duration_s(self) -> float:
        return (self.to_ts - self.from_ts) / 1e9


@dataclass(slots=True)
class SourceStats:
    """Per ``region.collector``: what it recorded, and its own gaps."""

    events: int = 0
    first_update_id: int | None = None
    last_update_id: int | None = None
    gaps: int = 0  # breaks within its own connections plus holes between them
    segments: list[tuple[int, int]] = field(default_factory=list)  # continuous (from, to) ns


@dataclass(slots=True)
class Audit:
    checked: int = 0
    matched: int = 0
    mismatched: int = 0
    first_mismatch: dict[str, object] | None = None
    points: list[tuple[int, int, bool]] = field(default_factory=list)  # (ns, id, matched)

    @property
    def match_pct(self) -> float:
        return 100.0 * self.matched / self.checked if self.checked else 100.0


@dataclass(slots=True)
class GapLog:
    """Everything gaps.json says about a symbol-day, filled by the loader and stitcher."""

    events: int = 0  # canonical events (excluding book images)
    sources: dict[str, SourceStats] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)  # events taken from each source
    unrecoverable: list[Gap] = field(default_factory=list)
    unusable_before_anchor: int = 0
    corrupt: list[dict[str, str]] = field(default_factory=list)  # {"key", "error"}
    audit: Audit = field(default_factory=Audit)
    crossed_books: int = 0
    first_ts: int | None = None  # receive ns of the first canonical item (a book image)
    last_ts: int | None = None  # receive ns of the last canonical event
