"""A recorded market with its ground truth, merged by the real merger into canonical days.

The simulator's own market model (:class:`simulator.market.SymbolModel`) is stepped in
simulated time and its own frame builder (:class:`simulator.streams.DepthBatcher`) cuts the
100 ms diff-depth events, so a minute of market costs milliseconds. After every event the
model's true book is kept: that is the ground truth the readers are checked against. The
events (and REST snapshots of the true book) become raw chunks the way a collector writes
them, rotated at UTC midnight, and :func:`merger.day.merge_day` merges each day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from bisect import bisect_right
from dataclasses import dataclass, field

from booktape.codec import DataRecord, Msg
from booktape.keys import NS_PER_DAY
from booktape.stores import Store
from merger.day import merge_day
from simulator.market import BID, SymbolModel
from simulator.streams import DepthBatcher, parse_depth_stream
from simulator.symbols import default_spec
from simulator.wire import LevelFormatter, depth_body
from tests.merger.chunks import chunk, rotate, snap

MS = 1_000_000
LATENCY_NS = 3 * MS  # an event's local receive time after its window closed
Levels = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Truth:
    """The true book right after one event: its update id and every level, best first."""

    local_ts: int
    update_id: int
    bids: Levels
    asks: Levels


@dataclass
class Recording:
    symbol: str
    records: list[DataRecord] = field(default_factory=list)
    truths: list[Truth] = field(default_factory=list)  # one per event, in order

    def truth_at(self, local_ns: int) -> Truth | None:
        """The true book after the last event received at or before ``local_ns``."""
        i = bisect_right([t.local_ts for t in self.truths], local_ns)
        return self.truths[i - 1] if i else None

    def truth_of(self, update_id: int) -> Truth:
        return next(t for t in self.truths if t.update_id == update_id)

    def dates(self) -> list[dt.date]:
        days = sorted({r.t // NS_PER_DAY for r in self.records})
        return [dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in days]


def simulate(
    start_ns: int,
    seconds: float,
    *,
    symbol: str = "BTCUSDT",
    levels: int = 60,
    seed: int = 3,
    skip: range = range(0),
    snapshots_after: tuple[int, ...] = (1,),
    keep_truth: bool = True,
) -> Recording:
    """Record ``seconds`` of market from ``start_ns``: one event per busy 100 ms window.

    Events whose index is in ``skip`` are left out (nobody recorded them); a REST snapshot
    of the true book is recorded 1 ms after each event index in ``snapshots_after``.
    ``keep_truth=False`` keeps no truth (a benchmark's large day).
    """
    spec = dataclasses.replace(default_spec(symbol), levels_per_side=levels)
    start_ms = start_ns // MS
    model = SymbolModel(spec, seed=seed, start_ms=start_ms, keep_full_log=True)
    fmt = LevelFormatter(spec.tick_e8, spec.lot_e8)
    stream = parse_depth_stream(f"{symbol.lower()}@depth@100ms")
    assert stream is not None
    batcher = DepthBatcher(model, fmt, stream, combined_frames=True)
    rec = Recording(symbol)
    index = 0
    for step in range(1, int(seconds * 10) + 1):
        t_ms = start_ms + step * 100
        model.advance_to(t_ms)
        frame = batcher.build(t_ms)
        if frame is None:
            continue
        local = t_ms * MS + LATENCY_NS
        bids = model.levels(BID) if keep_truth or index in snapshots_after else []
        asks = model.levels(1 - BID) if keep_truth or index in snapshots_after else []
        if keep_truth:
            rec.truths.append(
                Truth(
                    local,
                    model.update_id,
                    [(float(fmt.price(p)), float(fmt.qty(q))) for p, q in bids],
                    [(float(fmt.price(p)), float(fmt.qty(q))) for p, q in asks],
                )
            )
        if index not in skip:
            rec.records.append(Msg(local, "ws1", frame))
        if index in snapshots_after:
            body = depth_body(fmt, model.update_id, bids, asks)
            rec.records.append(snap(local + MS, body, symbol))
        index += 1
    return rec


async def record_and_merge(store: Store, rec: Recording, *, per_chunk: int = 200) -> list[dt.date]:
    """Write the recording as one collector's chunks and merge every day it touches."""
    for records in rotate(rec.records, per_chunk):
        key, data = chunk("binance", rec.symbol, "eu.c1", records)
        await store.put(key, data)
    dates = rec.dates()
    for date in dates:
        result = await merge_day(store, "binance", date)
        assert result.failed == [], result.summary()
    return dates
