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
- ``gaps_per_million``: unrecoverable gaps per million canonical events;
  ``longest_gap_s``: the longest unrecoverable gap in seconds (0 without gaps).
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
        ),
        crossed_books=log.crossed_books,
        gaps_per_million=gaps_per_million(len(gaps), log.events),
        longest_gap_s=max((g.duration_s for g in gaps), default=0.0),
    )


def gaps_per_million(gaps: int, events: int) -> float:
    """Unrecoverable gaps per million canonical events (0 for an empty day)."""
    return gaps * 1e6 / events if events else 0.0


def encode_report(report: GapsReport) -> bytes:
    """gaps.json bytes: sorted keys, indented, newline-terminated, deterministic."""
    doc = report.model_dump(mode="json")
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def decode_report(data: bytes) -> GapsReport:
    """Read gaps.json back (raises pydantic.ValidationError on a malformed report)."""
    return GapsReport.model_validate_json(data)
