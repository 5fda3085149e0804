"""gaps.json: the gap report of one symbol-day (DESIGN.md "Canonical output").

:func:`build_report` turns the :class:`~merger.model.GapLog` the loader and stitcher filled
into a :class:`GapsReport`; :func:`encode_report` renders it deterministically (sorted keys,
two-space indent, a final newline); :func:`decode_report` reads it back (``booktape gaps``,
the HTML report). Meanings:

- ``events``: canonical events (book images excluded); ``filled``: events taken from each
  ``region.collector``; ``sources``: what each source recorded and its own gaps.
- ``unrecoverable``: ``from_update_id`` = the book's id before the gap + 1,
  ``to_update_id`` = the ``lastUpdateId`` of the snapshot re-anchored on, times in ns of
  local receive time, ``reanchored_on`` = ``{key, lastUpdateId}``.
- ``sources[..].segments``: the stretches of receive time (ns) over which that source was
  continuous; ``audit.points``: ``[ns, lastUpdateId, matched]`` of each audited snapshot;
  ``first_ts``/``last_ts``: the canonical stream's span (for timelines).
- ``gaps_per_million``: unrecoverable gaps per million canonical events;
  ``longest_gap_s``: the longest unrecoverable gap in seconds (0 without gaps).
- Coinbase days (merger.coinbase) add ``slots`` (:class:`SlotsReport`: the expected grid
  and what each source recorded) and ``missing_slots`` (runs of expected slots without a
  snapshot); both are left out of a Binance day's report.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field

from merger.model import GapLog

SCHEMA_VERSION: Final = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceReport(_Model):
    events: int = Field(ge=0)
    first_update_id: int | None
    last_update_id: int | None
    gaps: int = Field(ge=0)
    segments: list[tuple[int, int]] = []  # continuous stretches, (from, to) receive ns


class GapReport(_Model):
    from_update_id: int
    to_update_id: int
    from_ts: int  # ns, local receive time of the last event before the gap
    to_ts: int  # ns, response time of the snapshot re-anchored on
    duration_s: float
    reanchored_on: dict[str, Any]  # {"key": ..., "lastUpdateId": ...}


class CorruptReport(_Model):
    key: str
    error: str


class AuditReport(_Model):
    checked: int = Field(ge=0)
    matched: int = Field(ge=0)
    mismatched: int = Field(ge=0)
    match_pct: float
    first_mismatch: dict[str, Any] | None
    points: list[tuple[int, int, bool]] = []  # (snapshot receive ns, lastUpdateId, matched)


class SlotSourceReport(_Model):
    """What one source recorded for a Coinbase day's slots."""

    responses: int = Field(ge=0)  # snap records for the day's slots, any HTTP status
    usable: int = Field(ge=0)  # status 200 with a body that parses
    non_200: int = Field(ge=0)
    unparseable: int = Field(ge=0)  # status 200, but not a book / price body
    missed: int = Field(ge=0)  # "miss" records: the collector skipped the slot


class SlotsReport(_Model):
    """A Coinbase day's slot grid (times in ns since the epoch, UTC)."""

    interval_ns: int | None
    level: int | None  # the book level of the day (None for prices)
    expected_from: int | None  # first expected slot
    expected_to: int | None  # last expected slot (inclusive)
    expected_from_rule: str  # "midnight" (recorded the day before) or "first_recorded"
    expected_to_rule: str  # "midnight" (the day is over) or "last_recorded"
    expected: int = Field(ge=0)
    present: int = Field(ge=0)
    missing: int = Field(ge=0)
    off_grid: int = Field(ge=0)  # snapshots kept at slots off the expected grid
    other_day: int = Field(ge=0)  # responses to another day's slots (ignored)
    sources: dict[str, SlotSourceReport]


class MissingSlots(_Model):
    """A run of consecutive expected slots that no source recorded (inclusive)."""

    from_slot: int
    to_slot: int
    slots: int = Field(ge=1)
    from_time: str  # HH:MM:SS UTC of from_slot
    to_time: str


class GapsReport(_Model):
    """The whole of gaps.json."""

    version: int = SCHEMA_VERSION
    exchange: str
    symbol: str
    date: str
    events: int = Field(ge=0)
    sources: dict[str, SourceReport]
    filled: dict[str, int]
    unrecoverable: list[GapReport]
    unusable_before_anchor: int = Field(ge=0)
    corrupt: list[CorruptReport]
    audit: AuditReport
    crossed_books: int = Field(ge=0)
    gaps_per_million: float
    longest_gap_s: float
    first_ts: int | None = None  # receive ns of the canonical stream's first item
    last_ts: int | None = None  # receive ns of its last event
    slots: SlotsReport | None = None  # Coinbase days only
    missing_slots: list[MissingSlots] | None = None  # Coinbase days only


_COINBASE_FIELDS: Final = ("slots", "missing_slots")


def build_report(log: GapLog, *, exchange: str, symbol: str, date: str) -> GapsReport:
    """The report of one symbol-day from what the loader and stitcher logged."""
    gaps = [
        GapReport(
            from_update_id=g.from_update_id,
            to_update_id=g.to_update_id,
            from_ts=g.from_ts,
            to_ts=g.to_ts,
            duration_s=g.duration_s,
            reanchored_on=dict(g.reanchored_on),
        )
        for g in log.unrecoverable
    ]
    audit = log.audit
    return GapsReport(
        exchange=exchange,
        symbol=symbol,
        date=date,
        events=log.events,
        sources={
            name: SourceReport(
                events=s.events,
                first_update_id=s.first_update_id,
                last_update_id=s.last_update_id,
                gaps=s.gaps,
                segments=s.segments,
            )
            for name, s in sorted(log.sources.items())
        },
        filled=dict(sorted(log.filled.items())),
        unrecoverable=gaps,
        unusable_before_anchor=log.unusable_before_anchor,
        corrupt=[CorruptReport(key=c["key"], error=c["error"]) for c in log.corrupt],
        audit=AuditReport(
            checked=audit.checked,
            matched=audit.matched,
            mismatched=audit.mismatched,
            match_pct=audit.match_pct,
            first_mismatch=audit.first_mismatch,
            points=audit.points,
        ),
        crossed_books=log.crossed_books,
        gaps_per_million=gaps_per_million(len(gaps), log.events),
        longest_gap_s=max((g.duration_s for g in gaps), default=0.0),
        first_ts=log.first_ts,
        last_ts=log.last_ts,
    )


def gaps_per_million(gaps: int, events: int) -> float:
    """Unrecoverable gaps per million canonical events (0 for an empty day)."""
    return gaps * 1e6 / events if events else 0.0


def encode_report(report: GapsReport) -> bytes:
    """gaps.json bytes: sorted keys, indented, newline-terminated, deterministic."""
    doc = report.model_dump(mode="json")
    for name in _COINBASE_FIELDS:
        if doc.get(name) is None:
            del doc[name]
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def decode_report(data: bytes) -> GapsReport:
    """Read gaps.json back (raises pydantic.ValidationError on a malformed report)."""
    return GapsReport.model_validate_json(data)
