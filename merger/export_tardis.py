"""``booktape export tardis``: a merged Binance day as Tardis.dev ``incremental_book_L2`` CSV.

    booktape export tardis --store URL --exchange binance --symbol BTCUSDT \\
        --date 2024-05-01 -o binance_incremental_book_L2_2024-05-01_BTCUSDT.csv.gz

One row per level change, in canonical order, with Tardis's header
``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``:

- ``exchange``: Tardis's id: ``binance`` (spot), ``binance-futures`` (USD-M, our
  ``binance-usdm``), ``binance-delivery`` (COIN-M, our ``binance-coinm``);
- ``symbol``: upper case, as the exchange spells it;
- ``timestamp``: the exchange's event time in µs; rows of a book image (the exchange gives
  no time) fall back to ``local_timestamp``, as Tardis does;
- ``local_timestamp``: local receive time in µs (``local_ts // 1000``);
- ``is_snapshot``: ``true`` for the rows of a full book image (the start of the day and every
  re-anchor after an unrecoverable gap), ``false`` otherwise; a reader that meets ``true``
  after ``false`` discards its book first;
- ``side`` ``bid``/``ask``, ``price``, ``amount`` (the new absolute amount; 0 removes).

The file is gzip-compressed when ``-o`` ends in ``.gz``. A day without ``_MANIFEST.json`` is
not done: the export refuses it (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from booktape.canonical import LEVELS_FILE
from booktape.cli import CommandParser
from booktape.errors import BooktapeError, ConfigError, InvalidNameError
from booktape.keys import canonical_key, parse_date
from booktape.read import BATCH_ROWS, CHANNEL, day_file, ready_days

#: our exchange name -> Tardis.dev's exchange id
TARDIS_EXCHANGES: Final = {
    "binance": "binance",
    "binance-usdm": "binance-futures",
    "binance-coinm": "binance-delivery",
}
HEADER: Final = b"exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"


def tardis_exchange(exchange: str) -> str:
    """Tardis.dev's id of one of our Binance exchanges; ConfigError for anything else."""
    if exchange not in TARDIS_EXCHANGES:
        known = ", ".join(TARDIS_EXCHANGES)
        raise ConfigError(f"--exchange {exchange!r}: Binance depth days only ({known})")
    return TARDIS_EXCHANGES[exchange]


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="booktape export tardis", description=__doc__, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add = p.add_argument
    p.add_symbol_day()
    add("-o", "--output", required=True, type=Path, help="the CSV file (.csv or .csv.gz)")
    return p


def tardis_batch(batch: pa.RecordBatch, *, exchange: str, symbol: str) -> pa.RecordBatch:
    """levels.parquet rows -> the eight Tardis columns."""
    n = batch.num_rows
    local_us = pc.divide(batch.column("local_ts"), 1000)  # int64 division: non-negative ns
    exchange_ms = batch.column("exchange_ts")
    timestamp = pc.if_else(pc.greater(exchange_ms, 0), pc.multiply(exchange_ms, 1000), local_us)
    return pa.record_batch(
        [
            pa.array([exchange] * n, pa.string()),
            pa.array([symbol] * n, pa.string()),
            timestamp,
            local_us,
            batch.column("is_snapshot"),
            batch.column("side"),
            batch.column("price"),
            batch.column("qty"),
        ],
        names=HEADER.decode().strip().split(","),
    )


def write_csv(levels: Path, output: Path, *, exchange: str, symbol: str) -> int:
    """Write the CSV of a local levels.parquet; return the number of rows."""
    rows = 0
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    codec = "gzip" if output.suffix == ".gz" else None
    tmp = output.with_name(f".{output.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as raw:
        out = pa.CompressedOutputStream(raw, codec) if codec else raw
        out.write(HEADER)
        for batch in pq.ParquetFile(levels).iter_batches(BATCH_ROWS):
            pcsv.write_csv(tardis_batch(batch, exchange=exchange, symbol=symbol), out, options)
            rows += batch.num_rows
        if codec:
            out.close()
    tmp.replace(output)
    return rows


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    tardis_id = tardis_exchange(args.exchange)
    try:
        date = parse_date(args.date)
        key = canonical_key(args.exchange, CHANNEL, args.symbol.upper(), date, LEVELS_FILE)
    except InvalidNameError as exc:
        raise ConfigError(str(exc)) from None
    if not args.output.parent.is_dir():
        raise ConfigError(f"-o {args.output}: no such directory {args.output.parent}")
    symbol = args.symbol.upper()
    ready_days(args.store, args.exchange, symbol, [date], missing="raise",
               s3_endpoint_url=args.s3_endpoint_url)  # fmt: skip
    try:
        with day_file(args.store, key, s3_endpoint_url=args.s3_endpoint_url) as path:
            rows = write_csv(path, args.output, exchange=tardis_id, symbol=symbol)
    except OSError as exc:
        raise BooktapeError(f"cannot write {args.output}: {exc}") from exc
    print(f"{rows} rows -> {args.output}", file=sys.stderr)
    return 0
