"""``booktape gaps``: read a day's gap reports as a table (or JSON) — for people and cron.

One block per symbol: the canonical stream (events, unrecoverable gaps: count, longest,
total seconds; audit match %; crossed books) and each source (events recorded, share of
the canonical events it recorded, events the canonical stream took from it, its own gaps).
Only merged days (with a ``_MANIFEST.json``) are shown. ``--fail-on-gap`` exits 3 when any
unrecoverable gap exists, so a cron job can alert on it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import TYPE_CHECKING, Any

import orjson

from booktape.canonical import MANIFEST_FILE
from booktape.errors import ConfigError, KeyLayoutError
from booktape.keys import (
    canonical_key,
    parse_canonical_key,
    parse_date,
    validate_exchange,
    validate_name,
)

if TYPE_CHECKING:
    from booktape.stores import Store

EXIT_GAPS = 3


#: the canonical channels whose days have gap reports, per exchange (Binance: depth)
CHANNELS = {"coinbase": ("book", "prices")}


async def merged_symbols(store: Store, exchange: str, channel: str, date: dt.date) -> list[str]:
    """The symbols of a channel whose day is merged (has a ``_MANIFEST.json``), sorted."""
    found: set[str] = set()
    async for info in store.list(f"canonical/{exchange}/{channel}/"):
        try:
            key = parse_canonical_key(info.key)
        except KeyLayoutError:
            continue
        if key.date == date and key.filename == MANIFEST_FILE:
            found.add(key.symbol)
    return sorted(found)


async def load_reports(
    store_url: str, exchange: str, date: str, symbols: set[str] | None, endpoint: str | None
) -> list[dict[str, Any]]:
    """The gaps.json of every merged symbol-day of ``date`` (by channel, then symbol)."""
    from booktape.stores import open_store  # noqa: PLC0415 - only when run

    day = parse_date(date)
    reports: list[dict[str, Any]] = []
    async with open_store(store_url, s3_endpoint_url=endpoint) as store:
        for channel in CHANNELS.get(exchange, ("depth",)):
            for symbol in await merged_symbols(store, exchange, channel, day):
                if symbols is None or symbol in symbols:
                    gaps_key = canonical_key(exchange, channel, symbol, day, "gaps.json")
                    reports.append(orjson.loads(await store.get(gaps_key)))
    return reports


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render(reports: list[dict[str, Any]]) -> str:
    """The human table."""
    if not reports:
        return "no merged symbol-day found (merge it first: booktape merge)\n"
    lines: list[str] = []
    for rep in reports:
        gaps = rep.get("unrecoverable", [])
        total = sum(float(g.get("duration_s", 0.0)) for g in gaps)
        events = int(rep.get("events", 0))
        audit = rep.get("audit", {})
        lines.append(f"{rep['exchange']} {rep['symbol']} {rep['date']}")
        lines.append(
            f"  canonical   {events:>10} events   unrecoverable gaps {len(gaps)}"
            f" (longest {_fmt_s(float(rep.get('longest_gap_s', 0.0)))}, total {_fmt_s(total)})"
            f"   audit {float(audit.get('match_pct', 100.0)):.1f}% of {audit.get('checked', 0)}"
            f"   crossed {rep.get('crossed_books', 0)}"
        )
        filled = rep.get("filled", {})
        for source, stats in sorted(rep.get("sources", {}).items()):
            recorded = int(stats.get("events", 0))
            share = 100.0 * recorded / events if events else 0.0
            lines.append(
                f"  {source:<20}{recorded:>10} events   recorded {share:5.1f}%"
                f"   taken {filled.get(source, 0):>10}   own gaps {stats.get('gaps', 0)}"
            )
        slots = rep.get("slots")
        if slots:
            lines.append(
                f"  slots       {slots.get('present', 0)}/{slots.get('expected', 0)} present"
                f"   missing {slots.get('missing', 0)}"
            )
        for run in rep.get("missing_slots") or []:
            lines.append(f"  missing slots {run['from_time']}..{run['to_time']} ({run['slots']})")
        if rep.get("unusable_before_anchor"):
            lines.append(f"  unusable before the first anchor: {rep['unusable_before_anchor']}")
        for bad in rep.get("corrupt", []):
            lines.append(f"  corrupt: {bad.get('key')}: {bad.get('error')}")
        for gap in gaps:
            lines.append(
                f"  gap: ids {gap['from_update_id']}..{gap['to_update_id']}"
                f" ({_fmt_s(float(gap['duration_s']))}), re-anchored on"
                f" {gap['reanchored_on'].get('key')}"
            )
    return "\n".join(lines) + "\n"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="booktape gaps", description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--date", required=True, help="YYYY-MM-DD (UTC)")
    parser.add_argument("--exchange", default="binance")
    parser.add_argument("--symbols", help="comma-separated symbols (default: all)")
    parser.add_argument("--json", action="store_true", help="the gap reports as a JSON list")
    parser.add_argument("--fail-on-gap", action="store_true", help="exit 3 on any gap")
    parser.add_argument("--s3-endpoint-url", default=None)
    args = parser.parse_args(argv)
    try:
        date = parse_date(args.date).isoformat()
        exchange = validate_exchange(args.exchange)
        symbols = (
            {validate_name("symbol", s).upper() for s in args.symbols.split(",") if s}
            if args.symbols
            else None
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    reports = asyncio.run(load_reports(args.store, exchange, date, symbols, args.s3_endpoint_url))
    if args.json:
        sys.stdout.write(orjson.dumps(reports, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    else:
        sys.stdout.write(render(reports))
    gaps = sum(
        len(rep.get("unrecoverable", [])) + len(rep.get("missing_slots") or []) for rep in reports
    )
    return EXIT_GAPS if args.fail_on_gap and gaps else 0
