"""``booktape derive snapshots``: top-N book snapshots on an exact time grid, as Parquet.

    booktape derive snapshots --store URL --exchange binance --symbol BTCUSDT \\
        --date 2024-05-01 --depth 25 --interval 1s [-o FILE]

Reads the merged day's ``levels.parquet`` and writes ``snapshots.parquet`` next to it
(``canonical/{exchange}/depth/{SYMBOL}/{DATE}/snapshots.parquet``; one derived set a day:
a new run replaces it), or to the local file ``-o FILE`` instead. The grid, the columns and
their meaning are described in :mod:`merger.derive`. The same input and parameters give the
same bytes. The Parquet key-value metadata names the source (``booktape.source``, and
``booktape.source_sha256``: the levels.parquet digest from the day's manifest, so a file
derived before a re-merge is recognised as stale), ``booktape.depth`` and
``booktape.interval_ns``. A day without ``_MANIFEST.json`` is refused (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

import orjson
import pyarrow.parquet as pq

from booktape.canonical import LEVELS_FILE, MANIFEST_FILE
from booktape.cli import CommandParser
from booktape.errors import ConfigError, InvalidNameError
from booktape.keys import NS_PER_DAY, canonical_key, parse_date
from booktape.levelbook import REPLAY_COLUMNS, event_chunks
from booktape.read import (
    BATCH_ROWS,
    CHANNEL,
    day_file,
    ready_days,
    to_ns,
    with_store,
)
from booktape.stores import Store
from merger.derive import (
    MAX_DEPTH,
    encode_parquet,
    grid_rows,
    parse_interval,
    snapshot_table,
)
from merger.export_tardis import tardis_exchange

SNAPSHOTS_FILE: Final = "snapshots.parquet"
KINDS: Final = ("snapshots",)


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="booktape derive snapshots", description=__doc__, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add = p.add_argument
    p.add_symbol_day()
    add("--depth", type=int, default=25, help="levels a side (default 25)")
    add("--interval", default="1s", help="grid step: 100ms, 1s, 1m, 1h ... (default 1s)")
    add("-o", "--output", type=Path, help="write this local file instead of the store")
    return p


def derive_snapshots(
    store: str | Store,
    exchange: str,
    symbol: str,
    date_text: str,
    *,
    depth: int,
    interval: str,
    s3_endpoint_url: str | None = None,
) -> tuple[bytes, int]:
    """(Parquet bytes, rows) of one merged day's grid snapshots."""
    tardis_id = tardis_exchange(exchange)
    interval_ns = parse_interval(interval)
    if not 1 <= depth <= MAX_DEPTH:
        raise ConfigError(f"--depth {depth}: must be between 1 and {MAX_DEPTH}")
    try:
        date = parse_date(date_text)
        key = canonical_key(exchange, CHANNEL, symbol, date, LEVELS_FILE)
    except InvalidNameError as exc:
        raise ConfigError(str(exc)) from None
    ready_days(store, exchange, symbol, [date], missing="raise", s3_endpoint_url=s3_endpoint_url)
    manifest_key = canonical_key(exchange, CHANNEL, symbol, date, MANIFEST_FILE)

    async def get_manifest(s: Store) -> bytes:
        return await s.get(manifest_key)

    manifest = orjson.loads(with_store(store, get_manifest, s3_endpoint_url=s3_endpoint_url))
    levels_sha = str(manifest.get("outputs", {}).get(LEVELS_FILE, {}).get("sha256", ""))
    day_start = to_ns(date)
    with day_file(store, key, s3_endpoint_url=s3_endpoint_url) as path:
        batches = pq.ParquetFile(path).iter_batches(BATCH_ROWS, columns=list(REPLAY_COLUMNS))
        rows = grid_rows(event_chunks(batches), day_start_ns=day_start, interval_ns=interval_ns,
                         depth=depth)  # fmt: skip
    assert day_start % NS_PER_DAY == 0
    table = snapshot_table(rows, exchange=tardis_id, symbol=symbol, depth=depth)
    metadata = {
        "booktape.source": key,
        "booktape.source_sha256": levels_sha,  # from the day's manifest: is this stale?
        "booktape.depth": str(depth),
        "booktape.interval_ns": str(interval_ns),
    }
    return encode_parquet(table, metadata), len(rows)


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: booktape derive snapshots --store URL --symbol S --date D "
              "[--depth 25] [--interval 1s] [-o FILE]")  # fmt: skip
        return 0 if argv else 2
    if argv[0] not in KINDS:
        raise ConfigError(f"unknown derived data set {argv[0]!r} (known: {', '.join(KINDS)})")
    args = _parser().parse_args(argv[1:])
    symbol = args.symbol.upper()
    if args.output is not None and not args.output.parent.is_dir():
        raise ConfigError(f"-o {args.output}: no such directory {args.output.parent}")
    data, rows = derive_snapshots(
        args.store, args.exchange, symbol, args.date, depth=args.depth,
        interval=args.interval, s3_endpoint_url=args.s3_endpoint_url,
    )  # fmt: skip
    if args.output is not None:
        tmp = args.output.with_name(f".{args.output.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(args.output)
        where = str(args.output)
    else:
        where = canonical_key(args.exchange, CHANNEL, symbol, parse_date(args.date),
                              SNAPSHOTS_FILE)  # fmt: skip

        async def put(s: Store) -> None:
            await s.put(where, data)

        with_store(args.store, put, s3_endpoint_url=args.s3_endpoint_url)
    print(f"{rows} snapshots -> {where}", file=sys.stderr)
    return 0
