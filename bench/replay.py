"""Replay: book states per second of ``booktape.replay``, against reading the Parquet alone.

A canonical day is built first: the simulator's market model at BTCUSDT scale (5000 levels a
side, ~10 events a second, ~2 KB frames) recorded for ``--minutes`` and merged by the real
merger into a local store. Then, best of ``--repeat`` runs each:

- baseline: ``pyarrow.parquet.read_table`` of the day's levels.parquet (the columns replay
  reads, one thread, as replay runs on one), the least any reader of the file pays;
- ours: ``booktape.replay(..., depth=25)`` over the whole day, every state consumed.

Figures: ``states_per_s`` (book states per second of replay, depth 25), ``rows_per_s``,
``states_per_s_depth1`` (top of book only), ``parquet_read_s`` and ``replay_s``, and
``ratio`` = states per second of replay over the states per second the baseline would give
if reading the file were all there is to do (events / read time), i.e. read time over replay
time: higher is better, 1.0 would mean replay costs no more than reading.

    python -m bench.replay [--minutes 60] [--repeat 3] [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import booktape
from bench.common import emit, machine, parser
from booktape.keys import canonical_key
from booktape.levelbook import REPLAY_COLUMNS
from booktape.stores import LocalStore
from tests.read.market import record_and_merge, simulate

START_NS = 1_717_236_000_000_000_000  # 2024-06-01T10:00:00Z
DATE = dt.date(2024, 6, 1)
SYMBOL = "BTCUSDT"


def build_day(root: Path, minutes: float) -> Path:
    """Record and merge ``minutes`` of market; return the day's levels.parquet path."""
    rec = simulate(START_NS, minutes * 60, symbol=SYMBOL, levels=5000, keep_truth=False)
    asyncio.run(record_and_merge(LocalStore(root), rec, per_chunk=600))
    return root / canonical_key("binance", "depth", SYMBOL, DATE, "levels.parquet")


def best_of(repeat: int, fn: object) -> tuple[float, int]:
    """(best seconds, result) of ``fn()`` run ``repeat`` times."""
    best, result = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, result


def read_parquet(levels: Path) -> int:
    """The baseline: the columns replay needs, read into Arrow on one thread like replay."""
    return int(pq.read_table(levels, columns=list(REPLAY_COLUMNS), use_threads=False).num_rows)


def count_states(root: Path, depth: int) -> int:
    states = booktape.replay(str(root), "binance", SYMBOL, DATE, DATE + dt.timedelta(days=1),
                             depth=depth)  # fmt: skip
    return sum(1 for _ in states)


def main(argv: list[str] | None = None) -> int:
    p = parser("replay", __doc__)
    p.add_argument("--minutes", type=float, default=60.0, help="market minutes in the day")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    minutes, repeat = (8.0, 3) if args.quick else (args.minutes, args.repeat)
    with tempfile.TemporaryDirectory(prefix="booktape-bench-replay-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        levels = build_day(root, minutes)
        build_s = time.perf_counter() - t0
        rows = pq.ParquetFile(levels).metadata.num_rows
        read_s, _ = best_of(max(7, 3 * repeat), lambda: read_parquet(levels))
        replay_s, states = best_of(repeat, lambda: count_states(root, 25))
        top_s, _ = best_of(repeat, lambda: count_states(root, 1))
    figures: dict[str, object] = {
        "market_minutes": minutes,
        "events": states,
        "rows": rows,
        "rows_per_event": round(rows / max(states, 1), 1),
        "build_day_s": round(build_s, 2),
        "parquet_read_s": round(read_s, 4),
        "replay_s": round(replay_s, 3),
        "states_per_s": round(states / replay_s),
        "states_per_s_depth1": round(states / top_s),
        "rows_per_s": round(rows / replay_s),
        "ratio": round(read_s / replay_s, 4),
        "machine": machine(),
    }
    emit("replay", figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
