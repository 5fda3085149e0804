"""Fast replay of ``levels.parquet`` rows: events cut from record batches, and a float book.

The readers (:mod:`booktape.read`, ``booktape derive snapshots``, the benchmarks) walk a
canonical day event by event. :func:`event_chunks` turns parquet record batches into
:class:`EventChunk` objects: plain Python lists of the columns the book needs, plus the index
where each event starts. An event is a run of rows with the same ``last_update_id`` and
``is_snapshot`` (the canonical writer keeps an event's rows contiguous, ids only grow from
event to event and two book images never follow each other directly), so an event cut by
a batch boundary is carried over whole to the next chunk.

:class:`LevelBook` is the book those rows build: prices and quantities as float64 exactly as
stored in the file, one dict per side plus a sorted key list for the best-first walk. It is
not :class:`booktape.book.OrderBook` (decimal strings, snapshot windows, audits): the
reader's book only applies rows, resets on an image and reads the top N levels, and doing
only that keeps replay fast.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

#: The columns of levels.parquet that a replay reads.
REPLAY_COLUMNS: Final = (
    "local_ts",
    "exchange_ts",
    "last_update_id",
    "side",
    "price",
    "qty",
    "is_snapshot",
)

Level = tuple[float, float]  # (price, quantity)


@dataclass(slots=True)
class EventChunk:
    """Whole events: per event ``j`` its fields, and its rows ``starts[j]:starts[j + 1]``."""

    local_ts: list[int]  # per event
    exchange_ts: list[int]  # per event
    last_update_id: list[int]  # per event
    is_snapshot: list[bool]  # per event
    is_bid: list[bool]  # per row
    price: list[float]  # per row
    qty: list[float]  # per row
    starts: list[int]  # event start rows, then the number of rows as the sentinel

    @property
    def events(self) -> int:
        return len(self.starts) - 1


def _starts(table: pa.Table) -> list[int]:
    """Rows where a new event begins (0 first), for a non-empty table."""
    uid, snap = table.column("last_update_id"), table.column("is_snapshot")
    n = table.num_rows
    if n == 1:
        return [0]
    changed = pc.or_(
        pc.not_equal(uid.slice(1), uid.slice(0, n - 1)),
        pc.not_equal(snap.slice(1), snap.slice(0, n - 1)),
    )
    later = pc.add(pc.indices_nonzero(changed), 1).to_pylist()
    return [0, *later]


def _chunk(table: pa.Table, starts: list[int]) -> EventChunk:
    """The chunk of ``table``'s rows; ``starts`` ends with the sentinel ``num_rows``."""
    first = pa.array(starts[:-1], pa.int64())

    def per_event(name: str) -> list[Any]:
        values: list[Any] = pc.take(table.column(name), first).to_pylist()
        return values

    return EventChunk(
        per_event("local_ts"),
        per_event("exchange_ts"),
        per_event("last_update_id"),
        per_event("is_snapshot"),
        pc.equal(table.column("side"), "bid").to_pylist(),
        table.column("price").to_pylist(),
        table.column("qty").to_pylist(),
        starts,
    )


def event_chunks(batches: Iterable[pa.RecordBatch]) -> Iterator[EventChunk]:
    """Whole events from record batches with :data:`REPLAY_COLUMNS`, in file order."""
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        if carry is not None:
            table = pa.concat_tables([carry, table]).combine_chunks()
        starts = _starts(table)
        cut = starts[-1]  # the last event may go on in the next batch
        carry = table.slice(cut)
        if cut:
            yield _chunk(table.slice(0, cut), starts)  # starts[-1] == cut: the sentinel
    if carry is not None and carry.num_rows:
        yield _chunk(carry, [*_starts(carry), carry.num_rows])


class LevelBook:
    """A price-level book of float prices: apply rows, reset on an image, read the top."""

    __slots__ = ("_ask_keys", "_bid_keys", "asks", "bids", "update_id")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # negated bid prices, ascending = best first
        self._ask_keys: list[float] = []  # ask prices, ascending = best first
        self.update_id: int | None = None  # None until the first image

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()

    def apply_event(self, chunk: EventChunk, j: int) -> None:
        """Apply event ``j`` of ``chunk``; a book image replaces the whole book first."""
        lo, hi = chunk.starts[j], chunk.starts[j + 1]
        if chunk.is_snapshot[j]:
            self.clear()
        bids, asks, bid_keys, ask_keys = self.bids, self.asks, self._bid_keys, self._ask_keys
        add, find = insort, bisect_left
        rows = zip(chunk.is_bid[lo:hi], chunk.price[lo:hi], chunk.qty[lo:hi], strict=True)
        for is_bid, price, qty in rows:
            if is_bid:
                if qty:
                    if price not in bids:
                        add(bid_keys, -price)
                    bids[price] = qty
                elif bids.pop(price, None) is not None:
                    del bid_keys[find(bid_keys, -price)]
            elif qty:
                if price not in asks:
                    add(ask_keys, price)
                asks[price] = qty
            elif asks.pop(price, None) is not None:
                del ask_keys[find(ask_keys, price)]
        self.update_id = chunk.last_update_id[j]

    def top(self, depth: int | None) -> tuple[list[Level], list[Level]]:
        """(bids, asks) best first, at most ``depth`` levels a side (None: every level)."""
        bids, asks = self.bids, self.asks
        bid_keys = self._bid_keys if depth is None else self._bid_keys[:depth]
        ask_keys = self._ask_keys if depth is None else self._ask_keys[:depth]
        return [(-k, bids[-k]) for k in bid_keys], [(k, asks[k]) for k in ask_keys]

    def depth(self) -> tuple[int, int]:
        return len(self.bids), len(self.asks)
