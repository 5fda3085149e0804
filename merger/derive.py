"""Book snapshots on an exact time grid, computed from a merged day's canonical deltas.

The grid of a day is ``00:00 UTC + k * interval``. The snapshot at grid time ``g`` is the
book after every canonical event received at or before ``g`` (``local_ts <= g``): what a
reader of the live feed had at that instant. The grid starts at the first grid time at or
after the day's first book image and ends at the last grid time at or before the day's last
event, so no snapshot is invented before the book exists or after the recording stops.

The table follows Tardis.dev's ``book_snapshot_N`` layout: ``exchange``, ``symbol``,
``timestamp`` (the grid time, µs), ``local_timestamp`` (receive time of the last event
applied, µs, at or before the grid time), then ``asks[0].price``, ``asks[0].amount``,
``bids[0].price``, ``bids[0].amount``, ``asks[1].price`` ... up to ``depth - 1``; a level
the book does not have is null (Tardis leaves it empty). booktape adds ``update_id`` (the
book's last update id) after ``local_timestamp``. The Parquet bytes depend only on the input
and the parameters (fixed writer settings, nothing time-dependent in the metadata).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from booktape.errors import ConfigError
from booktape.levelbook import EventChunk, Level, LevelBook

MAX_DEPTH: Final = 1000
_UNITS: Final = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_INTERVAL_RE: Final = re.compile(r"([0-9]{1,9})(ms|s|m|h)")
_DAY_NS: Final = 86_400_000_000_000
ZSTD_LEVEL: Final = 3


@dataclass(frozen=True, slots=True)
class GridRow:
    """One snapshot: grid time and the book as of it (ns, ns, id, levels best first)."""

    grid_ns: int
    last_local_ns: int
    update_id: int
    bids: list[Level]
    asks: list[Level]


def parse_interval(text: str) -> int:
    """``100ms``, ``1s``, ``5m``, ``1h`` -> ns; between 1 ms and one day."""
    match = _INTERVAL_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"--interval {text!r}: expected a number and ms, s, m or h (e.g. 1s)")
    ns = int(match[1]) * _UNITS[match[2]]
    if not 0 < ns <= _DAY_NS:
        raise ConfigError(f"--interval {text!r}: must be between 1ms and 24h")
    return ns


def grid_rows(
    chunks: Iterable[EventChunk], *, day_start_ns: int, interval_ns: int, depth: int
) -> list[GridRow]:
    """The snapshots of one day's events on the grid ``day_start_ns + k * interval_ns``."""
    book = LevelBook()
    rows: list[GridRow] = []
    grid: int | None = None  # the next grid time to fill
    last_ts = 0
    current: GridRow | None = None  # the book since the last event, once read

    def fill(until: int, inclusive: bool) -> None:
        nonlocal grid, current
        assert grid is not None
        while grid < until or (inclusive and grid == until):
            if current is None:
                assert book.update_id is not None
                current = GridRow(0, last_ts, book.update_id, *book.top(depth))
            rows.append(GridRow(grid, current.last_local_ns, current.update_id,
                                current.bids, current.asks))  # fmt: skip
            grid += interval_ns

    for chunk in chunks:
        for j in range(chunk.events):
            ts = chunk.local_ts[j]
            if grid is not None:
                fill(ts, inclusive=False)
            book.apply_event(chunk, j)
            current, last_ts = None, ts
            if grid is None and book.update_id is not None:
                steps = -((day_start_ns - ts) // interval_ns)  # ceil((ts - start) / interval)
                grid = day_start_ns + max(steps, 0) * interval_ns  # never before 00:00
    if grid is not None:
        fill(last_ts, inclusive=True)
    return rows


def level_columns(depth: int) -> list[str]:
    """``asks[0].price, asks[0].amount, bids[0].price, bids[0].amount, asks[1].price ...``"""
    names: list[str] = []
    for i in range(depth):
        for side in ("asks", "bids"):
            names += [f"{side}[{i}].price", f"{side}[{i}].amount"]
    return names


def snapshot_table(rows: list[GridRow], *, exchange: str, symbol: str, depth: int) -> pa.Table:
    """The Tardis-shaped table of ``rows`` (``exchange`` is the Tardis exchange id)."""
    n = len(rows)
    columns: dict[str, pa.Array] = {
        "exchange": pa.array([exchange] * n, pa.string()),
        "symbol": pa.array([symbol] * n, pa.string()),
        "timestamp": pa.array([r.grid_ns // 1000 for r in rows], pa.int64()),
        "local_timestamp": pa.array([r.last_local_ns // 1000 for r in rows], pa.int64()),
        "update_id": pa.array([r.update_id for r in rows], pa.int64()),
    }
    for i in range(depth):
        for side in ("asks", "bids"):
            prices: list[float | None] = []
            amounts: list[float | None] = []
            for r in rows:
                levels = r.asks if side == "asks" else r.bids
                if i < len(levels):
                    prices.append(levels[i][0])
                    amounts.append(levels[i][1])
                else:
                    prices.append(None)
                    amounts.append(None)
            columns[f"{side}[{i}].price"] = pa.array(prices, pa.float64())
            columns[f"{side}[{i}].amount"] = pa.array(amounts, pa.float64())
    return pa.table(columns)


def encode_parquet(table: pa.Table, metadata: dict[str, str]) -> bytes:
    """Deterministic Parquet bytes: fixed settings, sorted metadata, nothing time-dependent."""
    table = table.replace_schema_metadata(dict(sorted(metadata.items())))
    out = io.BytesIO()
    pq.write_table(
        table,
        out,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        row_group_size=100_000,
        use_dictionary=["exchange", "symbol"],
    )
    return out.getvalue()
