"""The canonical files of a Coinbase day: snapshots.parquet, prices.parquet, gaps.json.

``snapshots.parquet`` (one per product and day) holds one row per book entry of each
chosen snapshot, slots ascending, bids then asks, each side in the exchange's order (best
first): ``slot_ts`` int64 ns (the grid slot), ``local_ts`` int64 ns (response time),
``sequence`` int64, ``side`` (``bid``|``ask``), ``price`` float64, ``size`` float64,
``order_id`` string (level 3; null otherwise), ``num_orders`` int64 (levels 1 and 2; null
otherwise), ``source`` (``region.collector``). ``prices.parquet`` (one per currency and
day): ``slot_ts``, ``local_ts``, ``kind`` (``buy``|``sell``|``spot``), ``amount`` float64,
``quote`` (e.g. ``USD``), ``source``; slots ascending, kinds in that order.

Bytes are deterministic, as in merger.writer: fixed compression, no wall-clock time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from booktape.coinbase import AggregatedEntry, L2Book, L3Book, OrderEntry
from booktape.keys import NS_PER_DAY
from merger.coinbase_slots import Candidate, Selection, SlotLog
from merger.gaps import (
    AuditReport,
    CorruptReport,
    GapsReport,
    MissingSlots,
    SlotSourceReport,
    SlotsReport,
    SourceReport,
)
from merger.parquetfile import PartedParquetFile
from merger.writer import ZSTD_LEVEL

Entry = AggregatedEntry | OrderEntry
SNAPSHOTS_FILE: Final = "snapshots.parquet"
PRICES_FILE: Final = "prices.parquet"
BATCH_ROWS: Final = 100_000

SNAPSHOTS_SCHEMA: Final = pa.schema(
    [
        pa.field("slot_ts", pa.int64(), nullable=False),
        pa.field("local_ts", pa.int64(), nullable=False),
        pa.field("sequence", pa.int64(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("size", pa.float64(), nullable=False),
        pa.field("order_id", pa.string(), nullable=True),
        pa.field("num_orders", pa.int64(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
    ]
)
PRICES_SCHEMA: Final = pa.schema(
    [
        pa.field("slot_ts", pa.int64(), nullable=False),
        pa.field("local_ts", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("amount", pa.float64(), nullable=False),
        pa.field("quote", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)


class Rows:
    """Column buffers written to one parquet file in row groups of BATCH_ROWS."""

    def __init__(self, path: Path, schema: pa.Schema, dictionary: list[str]) -> None:
        self.schema = schema
        self._writer = PartedParquetFile(
            path,
            schema,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            use_dictionary=dictionary,
            write_statistics=True,
        )
        self._cols: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.rows = 0

    def add_book(self, pick: Candidate, book: L2Book | L3Book) -> None:
        c = self._cols
        sides: tuple[tuple[str, Sequence[Entry]], ...] = (("bid", book.bids), ("ask", book.asks))
        for side, entries in sides:
            for lv in entries:
                c["slot_ts"].append(pick.slot)
                c["local_ts"].append(pick.t)
                c["sequence"].append(book.sequence)
                c["side"].append(side)
                c["price"].append(float(lv.price))
                c["size"].append(float(lv.size))
                if isinstance(lv, OrderEntry):
                    c["order_id"].append(lv.order_id)
                    c["num_orders"].append(None)
                else:
                    c["order_id"].append(None)
                    c["num_orders"].append(lv.num_orders)
                c["source"].append(pick.source)
                self.rows += 1

    def add_price(self, pick: Candidate, amount: str, quote: str) -> None:
        c = self._cols
        c["slot_ts"].append(pick.slot)
        c["local_ts"].append(pick.t)
        c["kind"].append(pick.kind)
        c["amount"].append(float(amount))
        c["quote"].append(quote)
        c["source"].append(pick.source)
        self.rows += 1

    def pending(self) -> int:
        return len(self._cols["slot_ts"])

    def flush(self) -> None:
        if self.pending():
            table = pa.Table.from_pydict(self._cols, schema=self.schema)
            self._writer.write_table(table, row_group_size=BATCH_ROWS * 2)
            self._cols = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self.flush()
        self._writer.close()


def snapshot_rows(path: Path) -> Rows:
    return Rows(path, SNAPSHOTS_SCHEMA, ["side", "source"])


def price_rows(path: Path) -> Rows:
    return Rows(path, PRICES_SCHEMA, ["kind", "quote", "source"])


def hhmmss(ns: int) -> str:
    """``HH:MM:SS`` UTC of a time in ns."""
    seconds = (ns % NS_PER_DAY) // 1_000_000_000
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def build_gaps(
    log: SlotLog,
    sel: Selection,
    corrupt: list[dict[str, str]],
    *,
    date: dt.date,
    crossed: int,
    started_before: bool,
    day_over: bool,
) -> GapsReport:
    """gaps.json of a Coinbase day: the common fields, ``slots`` and ``missing_slots``.

    ``events`` = slots written (a price slot counts once per kind), ``sources`` = usable
    responses per source with its first/last book ``sequence`` and ``gaps`` = expected
    slots it has no usable response for; ``unrecoverable`` is empty (a missing slot is
    listed in ``missing_slots``); ``audit`` compares responses that share a sequence;
    ``crossed_books`` = chosen books whose best bid is not below the best ask;
    ``gaps_per_million`` = missing slots per million expected slots; ``longest_gap_s`` =
    the longest stretch of missing slots in seconds.
    """
    filled: dict[str, int] = {}
    for pick in sel.picks:
        filled[pick.source] = filled.get(pick.source, 0) + 1
    step = log.interval or 0
    checked, mismatched = sel.audit_checked, sel.audit_mismatched
    return GapsReport(
        exchange="coinbase",
        symbol=log.symbol,
        date=date.isoformat(),
        events=len(sel.picks),
        sources={
            name: SourceReport(
                events=t.usable,
                first_update_id=min(t.sequences, default=None),
                last_update_id=max(t.sequences, default=None),
                gaps=sel.own_gaps.get(name, 0),
            )
            for name, t in sorted(log.sources.items())
        },
        filled=dict(sorted(filled.items())),
        unrecoverable=[],
        unusable_before_anchor=0,
        corrupt=[CorruptReport(key=c["key"], error=c["error"]) for c in corrupt],
        audit=AuditReport(
            checked=checked,
            matched=checked - mismatched,
            mismatched=mismatched,
            match_pct=100.0 * (checked - mismatched) / checked if checked else 100.0,
            first_mismatch=sel.first_mismatch,
        ),
        crossed_books=crossed,
        gaps_per_million=sel.missing_slots * 1e6 / sel.expected if sel.expected else 0.0,
        longest_gap_s=max((r.slots * step / 1e9 for r in sel.missing), default=0.0),
        slots=SlotsReport(
            interval_ns=log.interval,
            level=max(log.levels) if log.levels else None,
            expected_from=sel.expected_from,
            expected_to=sel.expected_to,
            expected_from_rule="midnight" if started_before else "first_recorded",
            expected_to_rule="midnight" if day_over else "last_recorded",
            expected=sel.expected,
            present=sel.present,
            missing=sel.missing_slots,
            off_grid=sel.off_grid,
            other_day=log.other_day,
            sources={
                name: SlotSourceReport(
                    responses=t.responses,
                    usable=t.usable,
                    non_200=t.non_200,
                    unparseable=t.unparseable,
                    missed=t.missed,
                )
                for name, t in sorted(log.sources.items())
            },
        ),
        missing_slots=[
            MissingSlots(
                from_slot=r.first,
                to_slot=r.last,
                slots=r.slots,
                from_time=hhmmss(r.first),
                to_time=hhmmss(r.last),
            )
            for r in sel.missing
        ],
    )
