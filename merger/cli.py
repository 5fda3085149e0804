"""``booktape merge``: merge days of raw recordings into the canonical output.

Exit codes (for cron): 0 every symbol-day done, 1 a symbol-day failed, 3 done but with
unrecoverable gaps when ``--fail-on-gap`` is given; a bad argument prints one line and
exits 2 (ConfigError, reported by booktape.cli). ``--metrics-file`` writes Prometheus text
for node_exporter's textfile collector, atomically (temp file + rename). On a terminal,
stderr shows a progress bar and only warnings are logged (unless ``--log-level`` is given);
otherwise (cron, a pod) logs are JSON lines on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from booktape import log as booktape_log
from booktape.cli import CommandParser
from booktape.errors import ConfigError, InvalidNameError
from booktape.keys import parse_date, validate_exchange, validate_name
from merger.day import DayResult, market_of, merge_day
from merger.progress import ProgressBar

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_GAPS: Final = 3
MAX_DAYS: Final = 366


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="booktape merge", description=__doc__, allow_abbrev=False)
    add = p.add_argument
    add("--store", required=True, help="store URL: a path, file:///path or s3://bucket/prefix")
    add("--date", help="the UTC day to merge, YYYY-MM-DD (default: yesterday)")
    add("--from", dest="from_date", help="first day of a range (with --to)")
    add("--to", dest="to_date", help="last day of a range (with --from)")
    add("--exchange", default="binance", help="binance, binance-usdm or binance-coinm")
    add("--symbols", help="comma-separated symbols (default: every recorded symbol)")
    add("--primary", help="the region to follow while it is continuous")
    add("--shard", help="I/N: merge only the symbols of shard I of N (0 <= I < N)")
    add("--force", action="store_true", help="rebuild days that are already done")
    add("--delete-raw", action="store_true", help="delete raw objects of a clean merged day")
    add("--fail-on-gap", action="store_true", help="exit 3 when an unrecoverable gap exists")
    add("--no-previous", action="store_true", help="do not start from the previous day")
    add("--metrics-file", type=Path, help="write Prometheus text here (textfile collector)")
    add("--s3-endpoint-url", help="S3 endpoint (else AWS_ENDPOINT_URL)")
    add("--log-level", choices=["debug", "info", "warning", "error"], help="default: info")
    add("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    return p


def _date(text: str, flag: str) -> dt.date:
    try:
        return parse_date(text)
    except InvalidNameError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def dates_of(args: argparse.Namespace, today: dt.date) -> list[dt.date]:
    """The days to merge, oldest first (so each can start from the one before)."""
    if args.date and (args.from_date or args.to_date):
        raise ConfigError("give either --date or --from/--to, not both")
    if bool(args.from_date) != bool(args.to_date):
        raise ConfigError("--from and --to go together")
    if args.from_date:
        first, last = _date(args.from_date, "--from"), _date(args.to_date, "--to")
        if first > last:
            raise ConfigError(f"--from {first} is after --to {last}")
        if (last - first).days >= MAX_DAYS:
            raise ConfigError(f"at most {MAX_DAYS} days at once")
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return [_date(args.date, "--date") if args.date else today - dt.timedelta(days=1)]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if match is None or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(match[1]), int(match[2])


def parse_symbols(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        return [validate_name("symbol", s.strip()).upper() for s in text.split(",") if s.strip()]
    except InvalidNameError as exc:
        raise ConfigError(f"--symbols: {exc}") from None


def exit_code(results: Sequence[DayResult], *, fail_on_gap: bool) -> int:
    if any(r.failed for r in results):
        return EXIT_FAILED
    if fail_on_gap and any(r.unrecoverable for r in results):
        return EXIT_GAPS
    return EXIT_OK


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(results: Sequence[DayResult], *, now_s: float, last_success_s: float) -> str:
    """Prometheus exposition text of a merge run."""
    per_symbol = (
        ("booktape_merge_unrecoverable_gaps", "unrecoverable gaps of the symbol-day", "unrec"),
        ("booktape_merge_events", "canonical events of the symbol-day", "events"),
        ("booktape_merge_audit_mismatches", "audit mismatches of the symbol-day", "audit"),
    )
    lines = [
        "# HELP booktape_merge_last_success_timestamp_seconds end of the last run without failure",
        "# TYPE booktape_merge_last_success_timestamp_seconds gauge",
        f"booktape_merge_last_success_timestamp_seconds {last_success_s:.3f}",
        "# HELP booktape_merge_duration_seconds duration of the last run",
        "# TYPE booktape_merge_duration_seconds gauge",
        f"booktape_merge_duration_seconds {sum(r.duration_s for r in results):.3f}",
        "# HELP booktape_merge_failed_symbols symbol-days that failed in the last run",
        "# TYPE booktape_merge_failed_symbols gauge",
        f"booktape_merge_failed_symbols {sum(len(r.failed) for r in results)}",
    ]
    for name, help_text, what in per_symbol:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for day in results:
            for symbol, res in sorted(day.symbols.items()):
                value = {
                    "unrec": res.unrecoverable,
                    "events": res.events,
                    "audit": res.audit_mismatched,
                }[what]
                labels = (
                    f'exchange="{_escape(day.exchange)}",symbol="{_escape(symbol)}",'
                    f'date="{day.date.isoformat()}"'
                )
                lines.append(f"{name}{{{labels}}} {value}")
    del now_s
    return "\n".join(lines) + "\n"


def _previous_success(path: Path) -> float:
    """The last-success time the metrics file holds (0 if none), kept across failed runs."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("booktape_merge_last_success_timestamp_seconds "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return 0.0


def write_metrics(path: Path, results: Sequence[DayResult]) -> None:
    """Write the metrics file atomically (node_exporter never reads half a file)."""
    now = time.time()
    ok = not any(r.failed for r in results)
    text = metrics_text(results, now_s=now, last_success_s=now if ok else _previous_success(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def merge_days(
    args: argparse.Namespace, dates: list[dt.date], bar: ProgressBar | None = None
) -> list[DayResult]:
    from booktape.stores import open_store  # noqa: PLC0415 - after the config is valid

    results: list[DayResult] = []
    async with open_store(args.store, s3_endpoint_url=args.s3_endpoint_url) as store:
        for date in dates:
            if args.exchange == "coinbase":  # REST snapshots on a grid: merger.coinbase
                from merger.coinbase import merge_coinbase_day  # noqa: PLC0415

                products, shard = parse_symbols(args.symbols), parse_shard(args.shard)
                day = await merge_coinbase_day(store, date, products=products, shard=shard,
                                               force=args.force)  # fmt: skip
                results.append(day)
                continue
            results.append(
                await merge_day(
                    store,
                    args.exchange,
                    date,
                    symbols=parse_symbols(args.symbols),
                    primary=args.primary,
                    shard=parse_shard(args.shard),
                    force=args.force,
                    delete_raw=args.delete_raw,
                    previous=not args.no_previous,
                    progress=bar.update if bar is not None else None,
                )
            )
    return results


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    dates = dates_of(args, dt.datetime.now(dt.UTC).date())
    try:
        validate_exchange(args.exchange)
        if args.primary is not None:
            validate_name("region", args.primary)
    except InvalidNameError as exc:
        raise ConfigError(str(exc)) from None
    if args.exchange != "coinbase":
        market_of(args.exchange)
    elif args.delete_raw or args.primary:
        raise ConfigError("--delete-raw and --primary apply to Binance days only")
    parse_shard(args.shard)
    parse_symbols(args.symbols)
    from booktape.stores import open_store  # noqa: PLC0415

    open_store(args.store, s3_endpoint_url=args.s3_endpoint_url)  # a bad URL: exit 2, no I/O
    bar = ProgressBar() if sys.stderr.isatty() and not args.no_progress else None
    booktape_log.configure(args.log_level or ("warning" if bar is not None else "info"))
    try:
        results = asyncio.run(merge_days(args, dates, bar))
    finally:
        if bar is not None:
            bar.close()
    if args.metrics_file is not None:
        write_metrics(args.metrics_file, results)
    return exit_code(results, fail_on_gap=args.fail_on_gap)
