"""``booktape export hdf5``: a merged Coinbase day in the old scraper's HDF5 layout.

One product a file, read from the canonical output (merge the day first)::

    /                                  attrs: product, date, level, dtype, slots, booktape
    /1409:17/                          one group per slot, named by its UTC time HHMM:SS
        bids                           structured array, fields price and size, best first
        asks                           idem (level 3: one entry per order, in book order)
        price-points/                  the price points of that slot, every currency merged
            BTC/buy, BTC/sell, BTC/spot    scalar datasets (NaN where that slot has none)
            ETH/...
    slot group attrs: slot_ts (ns), local_ts (ns), sequence, source

Plain h5py reads it as the old files were read: ``f["1409:17"]["asks"][0:5]``,
``f["1409:17"]["asks"][:]["price"]``, ``f["1409:17"]["price-points"]["ETH"]["buy"][()]``.
Values are float64 (float32 would round BTC prices to the wrong cent); ``--float32``
writes float32 for strict compatibility with the old files. A slot with no book snapshot
has no group. The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from booktape import __version__
from booktape.cli import CommandParser
from booktape.coinbase import PRICE_KINDS, validate_product
from booktape.errors import BooktapeError, ConfigError, InvalidNameError
from booktape.keys import canonical_key, parse_date
from booktape.stores import Store, open_store
from merger.coinbase_write import PRICES_FILE, SNAPSHOTS_FILE, hhmmss
from merger.gaps_cli import merged_symbols

EXCHANGE: Final = "coinbase"
PRICE_POINTS: Final = "price-points"
BATCH_ROWS: Final = 1 << 16


class ExportError(BooktapeError):
    """The export cannot be made from what the store holds (exit 1)."""


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="booktape export hdf5", description=__doc__, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--store", required=True, help="store URL: a path, file:///path, s3://...")
    p.add_argument("--date", required=True, help="the merged UTC day, YYYY-MM-DD")
    p.add_argument("--product", help="e.g. BTC-USD (default: the day's only merged product)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the HDF5 file to write")
    p.add_argument("--float32", action="store_true", help="float32 values, as the old files")
    p.add_argument("--s3-endpoint-url", help="S3 endpoint (else AWS_ENDPOINT_URL)")
    return p


def slot_name(slot_ns: int) -> str:
    """The group name of a slot: its UTC time as ``HHMM:SS`` (e.g. ``1409:17``)."""
    text = hhmmss(slot_ns)
    return f"{text[0:2]}{text[3:5]}:{text[6:8]}"


async def fetch(
    store: Store, date: dt.date, product: str | None, workdir: Path
) -> tuple[str, Path, dict[str, Path]]:
    """Download the product's snapshots.parquet and every currency's prices.parquet."""
    products = await merged_symbols(store, EXCHANGE, "book", date)
    if not products:
        raise ExportError(
            f"no Coinbase product is merged on {date}: run booktape merge --exchange coinbase"
            f" --date {date}"
        )
    if product is None:
        if len(products) != 1:
            listed = ", ".join(products) or "none"
            raise ConfigError(f"choose a product with --product (merged on {date}: {listed})")
        product = products[0]
    elif product not in products:
        raise ExportError(
            f"{product} {date} is not merged: run booktape merge --exchange coinbase --date {date}"
        )
    book = workdir / SNAPSHOTS_FILE
    await store.get_file(canonical_key(EXCHANGE, "book", product, date, SNAPSHOTS_FILE), book)
    prices: dict[str, Path] = {}
    for currency in await merged_symbols(store, EXCHANGE, "prices", date):
        path = workdir / f"{currency}.{PRICES_FILE}"
        await store.get_file(canonical_key(EXCHANGE, "prices", currency, date, PRICES_FILE), path)
        prices[currency] = path
    return product, book, prices


def read_prices(path: Path) -> dict[int, dict[str, float]]:
    """slot ns -> {kind: amount} of one currency's prices.parquet."""
    table = pq.read_table(path, columns=["slot_ts", "kind", "amount"])
    out: dict[int, dict[str, float]] = {}
    for slot, kind, amount in zip(*(table.column(n).to_pylist() for n in table.column_names),
                                  strict=True):  # fmt: skip
        out.setdefault(slot, {})[kind] = amount
    return out


class _Hdf5Day:
    """Writes one slot group at a time into an open h5py file."""

    def __init__(self, f: h5py.File, prices: dict[str, dict[int, dict[str, float]]], dtype: str):
        self.f = f
        self.prices = prices
        self.value = np.dtype(dtype)
        self.entry = np.dtype([("price", dtype), ("size", dtype)])
        self.slots = 0
        self.level = 0  # 3 when entries carry order ids, else 2 (levels 1 and 2 look alike)

    def side(self, table: pa.Table, side: str) -> np.ndarray[Any, Any]:
        rows = table.filter(pc.equal(table.column("side"), side))
        out = np.empty(rows.num_rows, dtype=self.entry)
        out["price"] = rows.column("price").to_numpy()
        out["size"] = rows.column("size").to_numpy()
        return out

    def write_slot(self, table: pa.Table) -> None:
        slot = int(table.column("slot_ts")[0].as_py())
        name = slot_name(slot)
        if name in self.f:
            raise ExportError(f"two slots are named {name}: the layout needs slots >= 1 s apart")
        group = self.f.create_group(name)
        group.attrs["slot_ts"] = slot
        group.attrs["local_ts"] = int(table.column("local_ts")[0].as_py())
        group.attrs["sequence"] = int(table.column("sequence")[0].as_py())
        group.attrs["source"] = str(table.column("source")[0].as_py())
        self.level = max(self.level, 3 if table.column("order_id").null_count < len(table) else 2)
        for side, dataset in (("bid", "bids"), ("ask", "asks")):
            group.create_dataset(dataset, data=self.side(table, side), track_times=False)
        points = group.create_group(PRICE_POINTS)
        for currency, by_slot in sorted(self.prices.items()):
            sub = points.create_group(currency)
            got = by_slot.get(slot, {})
            for kind in PRICE_KINDS:
                value = self.value.type(got.get(kind, np.nan))
                sub.create_dataset(kind, data=value, track_times=False)
        self.slots += 1


def write_hdf5(
    out: Path, product: str, date: dt.date, book: Path, prices: dict[str, Path], *, float32: bool
) -> int:
    """Write the file (to a temporary name, renamed when complete); return its slot count."""
    by_currency = {currency: read_prices(path) for currency, path in prices.items()}
    parquet = pq.ParquetFile(book)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            day = _Hdf5Day(f, by_currency, "<f4" if float32 else "<f8")
            pending: list[pa.RecordBatch] = []
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                slots = batch.column("slot_ts").to_numpy()
                cuts = [0, *(np.flatnonzero(np.diff(slots)) + 1).tolist(), len(slots)]
                for a, b in itertools.pairwise(cuts):
                    if b == a:
                        continue
                    piece = batch.slice(a, b - a)
                    if pending and pending[0]["slot_ts"][0].as_py() != piece["slot_ts"][0].as_py():
                        day.write_slot(pa.Table.from_batches(pending))
                        pending = []
                    pending.append(piece)
            if pending:
                day.write_slot(pa.Table.from_batches(pending))
            f.attrs.update({"product": product, "date": date.isoformat(), "slots": day.slots,
                            "dtype": day.value.name, "level": day.level,
                            "booktape": __version__})  # fmt: skip
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return day.slots


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        date = parse_date(args.date)
    except InvalidNameError as exc:
        raise ConfigError(f"--date: {exc}") from None
    product = validate_product(args.product) if args.product is not None else None
    if not args.output.parent.is_dir():
        raise ConfigError(f"-o {args.output}: folder {args.output.parent} does not exist")
    store = open_store(args.store, s3_endpoint_url=args.s3_endpoint_url)  # bad URL: exit 2

    async def download(workdir: Path) -> tuple[str, Path, dict[str, Path]]:
        async with store:
            return await fetch(store, date, product, workdir)

    with tempfile.TemporaryDirectory(prefix="booktape-hdf5-") as tmp:
        product, book, prices = asyncio.run(download(Path(tmp)))
        slots = write_hdf5(args.output, product, date, book, prices, float32=args.float32)
    print(f"{args.output}: {product} {date}, {slots} slots, {len(prices)} price currencies")
    return 0
