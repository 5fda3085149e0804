"""The HTML report of a merged day: per symbol, coverage timelines and the figures beside.

One self-contained page (inline CSS and SVG, no script, nothing fetched), rendered from the
day's gaps.json reports (:mod:`merger.gaps`). Per symbol, one ``<svg class="timeline">``:

- a lane per source (``region.collector``): green where it was continuous
  (``sources[..].segments``), red between its stretches (its own gaps);
- a lane for the canonical stream: green from its first to its last item, one red
  ``rect.gap`` per unrecoverable gap (``from_ts`` .. ``to_ts``), a blue triangle
  ``path.reanchor`` where it re-anchored, and a tick per audited snapshot above it
  (``line.audit.ok`` green, ``line.audit.mismatch`` orange);
- a time axis in UTC.

The figures table beside it gives events, fills per source, unrecoverable gaps (count,
longest, total seconds), audit match %, crossed books and corrupt chunks.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
from collections.abc import Sequence
from typing import Any, Final

COVER: Final = "#2e9e44"
GAP: Final = "#d62728"
LANE: Final = "#e6e6e6"
REANCHOR: Final = "#1f77b4"
MISMATCH: Final = "#ff7f0e"

WIDTH: Final = 900  # px of the time axis
LABEL: Final = 150  # px of the lane labels
ROW: Final = 22  # px per lane
MIN_MARK: Final = 3  # px: a gap of a millisecond is still seen

_CSS: Final = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin: 28px 0 6px; }}
.symbol {{ display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }}
table.figures {{ border-collapse: collapse; font-size: 13px; }}
table.figures td, table.figures th {{ padding: 2px 8px; text-align: left; }}
table.figures td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.bad {{ color: {GAP}; font-weight: 600; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 14px;
  vertical-align: middle; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #333; }}
"""


def _clock(ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return stamp.strftime("%H:%M:%S")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def span_of(report: dict[str, Any]) -> tuple[int, int] | None:
    """The receive-time span a symbol's timeline shows (ns), or None without data."""
    times: list[int] = []
    for source in report.get("sources", {}).values():
        for start, end in source.get("segments", []):
            times += [start, end]
    for name in ("first_ts", "last_ts"):
        if report.get(name) is not None:
            times.append(report[name])
    for gap in report.get("unrecoverable", []):
        times += [gap["from_ts"], gap["to_ts"]]
    if not times:
        return None
    start, end = min(times), max(times)
    return start, max(end, start + 1)


class _Scale:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def x(self, ns: int) -> float:
        return LABEL + WIDTH * (ns - self.start) / (self.end - self.start)

    def rect(
        self, span: tuple[int, int], y: float, h: float, *, cls: str, fill: str, tip: str
    ) -> str:
        x0, x1 = self.x(span[0]), self.x(span[1])
        width = max(x1 - x0, MIN_MARK)
        return (
            f'<rect class="{cls}" x="{x0:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
            f'fill="{fill}"><title>{html.escape(tip)}</title></rect>'
        )


def _source_lane(scale: _Scale, name: str, source: dict[str, Any], y: float) -> list[str]:
    parts = [
        f'<text x="4" y="{y + 15:.1f}">{html.escape(name)}</text>',
        f'<rect class="lane" x="{LABEL}" y="{y + 3:.1f}" width="{WIDTH}" height="{ROW - 6}" '
        f'fill="{LANE}"/>',
    ]
    segments = sorted(source.get("segments", []))
    for start, end in segments:
        tip = f"{name}: continuous {_clock(start)} - {_clock(end)}"
        parts.append(scale.rect((start, end), y + 3, ROW - 6, cls="cover", fill=COVER, tip=tip))
    for (_, end), (start, _) in itertools.pairwise(segments):
        tip = f"{name}: own gap {_clock(end)} - {_clock(start)}"
        parts.append(scale.rect((end, start), y + 3, ROW - 6, cls="source-gap", fill=GAP, tip=tip))
    return parts


def _canonical_lane(scale: _Scale, report: dict[str, Any], y: float) -> list[str]:
    parts = [
        f'<text x="4" y="{y + 15:.1f}" font-weight="600">canonical</text>',
        f'<rect class="lane" x="{LABEL}" y="{y + 3:.1f}" width="{WIDTH}" height="{ROW - 6}" '
        f'fill="{LANE}"/>',
    ]
    first, last = report.get("first_ts"), report.get("last_ts")
    if first is not None and last is not None:
        tip = f"canonical: {_clock(first)} - {_clock(last)}"
        parts.append(scale.rect((first, last), y + 3, ROW - 6, cls="cover", fill=COVER, tip=tip))
    for gap in report.get("unrecoverable", []):
        tip = (
            f"unrecoverable gap: ids {gap['from_update_id']}..{gap['to_update_id']}, "
            f"{_clock(gap['from_ts'])} - {_clock(gap['to_ts'])} ({gap['duration_s']:.3f} s)"
        )
        span = (gap["from_ts"], gap["to_ts"])
        parts.append(scale.rect(span, y + 1, ROW - 2, cls="gap", fill=GAP, tip=tip))
        x = scale.x(gap["to_ts"])
        anchor = gap.get("reanchored_on", {}).get("lastUpdateId")
        parts.append(
            f'<path class="reanchor" d="M{x:.1f},{y + ROW + 1:.1f} l-5,8 h10 z" '
            f'fill="{REANCHOR}"><title>re-anchored on snapshot {anchor}</title></path>'
        )
    for ts, update_id, matched in report.get("audit", {}).get("points", []):
        x = scale.x(ts)
        cls, colour = ("ok", COVER) if matched else ("mismatch", MISMATCH)
        parts.append(
            f'<line class="audit {cls}" x1="{x:.1f}" x2="{x:.1f}" y1="{y - 6:.1f}" '
            f'y2="{y + 2:.1f}" stroke="{colour}" stroke-width="2">'
            f"<title>audit at {update_id}: {'match' if matched else 'MISMATCH'}</title></line>"
        )
    return parts


def _axis(scale: _Scale, y: float) -> list[str]:
    parts = [f'<line x1="{LABEL}" x2="{LABEL + WIDTH}" y1="{y}" y2="{y}" stroke="#999"/>']
    for i in range(6):
        ns = scale.start + (scale.end - scale.start) * i // 5
        x = scale.x(ns)
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 4}" stroke="#999"/>')
        parts.append(f'<text x="{x:.1f}" y="{y + 16}" text-anchor="{anchor}">{_clock(ns)}</text>')
    return parts


def timeline(report: dict[str, Any]) -> str:
    """One symbol's ``<svg class="timeline">`` (an empty lane set without data)."""
    sources = report.get("sources", {})
    height = ROW * (len(sources) + 1) + 48
    symbol = html.escape(str(report.get("symbol", "")))
    head = (
        f'<svg class="timeline" data-symbol="{symbol}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{LABEL + WIDTH + 10}" height="{height}" role="img" '
        f'aria-label="coverage of {symbol}">'
    )
    span = span_of(report)
    if span is None:
        return head + '<text x="4" y="20">no events recorded</text></svg>'
    scale = _Scale(*span)
    parts = [head]
    y = 10.0
    for name in sorted(sources):
        parts += _source_lane(scale, name, sources[name], y)
        y += ROW
    parts += _canonical_lane(scale, report, y + 4)
    parts += _axis(scale, y + ROW + 14)
    parts.append("</svg>")
    return "".join(parts)


def figures(report: dict[str, Any]) -> str:
    """The figures table of one symbol."""
    gaps = report.get("unrecoverable", [])
    audit = report.get("audit", {})
    total = sum(g["duration_s"] for g in gaps)
    rows: list[tuple[str, str, bool]] = [
        ("canonical events", f"{report.get('events', 0):,}", False),
        ("unrecoverable gaps", str(len(gaps)), bool(gaps)),
        ("longest gap", _seconds(report.get("longest_gap_s", 0.0)), bool(gaps)),
        ("total gap time", _seconds(total), bool(gaps)),
        ("unusable before anchor", f"{report.get('unusable_before_anchor', 0):,}", False),
        (
            "audit",
            f"{audit.get('matched', 0)}/{audit.get('checked', 0)} "
            f"({audit.get('match_pct', 100.0):.1f}%)",
            bool(audit.get("mismatched")),
        ),
        ("crossed books", str(report.get("crossed_books", 0)), bool(report.get("crossed_books"))),
        ("corrupt chunks", str(len(report.get("corrupt", []))), bool(report.get("corrupt"))),
    ]
    for name, count in sorted(report.get("filled", {}).items()):
        rows.append((f"filled from {name}", f"{count:,}", False))
    body = "".join(
        f'<tr><th>{html.escape(k)}</th><td class="n{" bad" if bad else ""}">{html.escape(v)}'
        "</td></tr>"
        for k, v, bad in rows
    )
    return f'<table class="figures">{body}</table>'


def render(reports: Sequence[dict[str, Any]], *, exchange: str, date: str) -> str:
    """The whole page for one exchange and day."""
    title = f"booktape report: {exchange} {date}"
    legend = (
        f'<p class="legend"><span style="background:{COVER}"></span>continuous'
        f'<span style="background:{GAP}"></span>gap'
        f'<span style="background:{REANCHOR}"></span>re-anchor'
        f'<span style="background:{MISMATCH}"></span>audit mismatch'
        "&nbsp; (times are UTC receive times; hover a mark for details)</p>"
    )
    sections = [
        f'<section class="symbol-report" data-symbol="{html.escape(str(r.get("symbol")))}">'
        f"<h2>{html.escape(str(r.get('symbol')))}</h2>"
        f'<div class="symbol">{timeline(r)}{figures(r)}</div></section>'
        for r in reports
    ]
    if not sections:
        sections = ["<p>No merged symbol-day for this date.</p>"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{legend}{''.join(sections)}</body></html>\n"
    )
