"""``booktape report``: a merged day's coverage timelines as one self-contained HTML page.

Reads the day's gaps.json reports from the store (only merged symbol-days, those with a
``_MANIFEST.json``) and writes the page to ``-o`` (atomically: a temp file, then a rename).
See :mod:`merger.report` for what the page shows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from pathlib import Path

from booktape.cli import CommandParser
from booktape.errors import ConfigError, InvalidNameError
from booktape.keys import parse_date, validate_exchange, validate_name
from merger.gaps_cli import load_reports
from merger.report import render


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="booktape report", description=__doc__, allow_abbrev=False)
    p.add_argument("--store", required=True, help="store URL: a path, file:// or s3://")
    p.add_argument("--date", help="the UTC day, YYYY-MM-DD (default: yesterday)")
    p.add_argument("--exchange", default="binance")
    p.add_argument("--symbols", help="comma-separated symbols (default: every merged one)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the HTML file to write")
    p.add_argument("--s3-endpoint-url", default=None)
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        day = parse_date(args.date) if args.date else yesterday
        exchange = validate_exchange(args.exchange)
        symbols = (
            {validate_name("symbol", s.strip()).upper() for s in args.symbols.split(",") if s}
            if args.symbols
            else None
        )
    except InvalidNameError as exc:
        raise ConfigError(str(exc)) from None
    date = day.isoformat()
    reports = asyncio.run(load_reports(args.store, exchange, date, symbols, args.s3_endpoint_url))
    page = render(reports, exchange=exchange, date=date)
    out: Path = args.output
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    gaps = sum(len(r.get("unrecoverable", [])) for r in reports)
    print(f"wrote {out}: {len(reports)} symbols, {gaps} unrecoverable gaps", file=sys.stderr)
    return 0
