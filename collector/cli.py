"""``booktape collect``: flags -> settings -> the service.

Flags win over ``BOOKTAPE_*`` environment variables, which win over the ``--config`` TOML
file (a ``[collector]`` table, keys as the settings' names). A bad setting prints one line
and exits 2 (raised as ConfigError, reported by booktape.cli).
"""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

from booktape import log as booktape_log
from booktape.cli import CommandParser
from collector.config import load_settings


def parse_duration(text: str) -> float:
    """``60s``, ``5m``, ``1h``, ``500ms`` or plain seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 60s, 5m, 1h)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="booktape collect",
        description="Record an exchange into raw objects.",
        allow_abbrev=False,
    )
    add = p.add_argument
    add("--config", type=Path, help="TOML file with a [collector] table")
    add("--exchange", choices=["binance", "coinbase"])
    add("--market", choices=["spot", "usdm", "coinm"])
    add("--symbols", help="comma-separated symbols, or ALL")
    add("--region", help="region name, e.g. eu")
    add("--collector", help="collector id, unique within its region")
    add("--store", help="store URL: a path, file:///path or s3://bucket/prefix")
    add("--ws-url", help="websocket base URL (scheme, host, port)")
    add("--rest-url", help="REST base URL (scheme, host, port); Coinbase: the Exchange API")
    add("--s3-endpoint-url", help="S3 endpoint (else AWS_ENDPOINT_URL)")
    add("--http-port", type=int, help="port for /healthz, /readyz, /metrics")
    add("--http-host", help="address for the health server (default 127.0.0.1)")
    add("--spool-dir", type=Path, help="local spool directory")
    add("--rotation", type=parse_duration, dest="rotation_s", help="chunk rotation, e.g. 60s")
    add("--snapshot-limit", type=int, help="REST depth limit (default 1000)")
    add("--snapshot-interval", type=parse_duration, dest="snapshot_interval_s")
    add("--streams-per-connection", type=int)
    add("--depth-speed-ms", type=int, help="100 (default) or 1000")
    add("--products", help="Coinbase products, e.g. BTC-USD,ETH-USD")
    add("--level", type=int, choices=[1, 2, 3], help="Coinbase book level")
    add("--prices", help="Coinbase price currencies, e.g. BTC,ETH")
    add("--interval", type=parse_duration, dest="interval_s", help="Coinbase grid, e.g. 60s")
    add("--prices-url", help="Coinbase v2 prices API base URL")
    add("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def run(argv: list[str]) -> int:
    args = vars(_parser().parse_args(argv))
    config_file = args.pop("config")
    settings = load_settings(args, config_file)
    booktape_log.configure(settings.log_level)
    from collector.gctune import tune_gc  # noqa: PLC0415
    from collector.service import run_collector  # noqa: PLC0415 - after config is valid

    tune_gc()  # after the imports: they stay out of every later collection
    return asyncio.run(run_collector(settings))
