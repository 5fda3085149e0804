"""Merger throughput: a synthetic BTCUSDT symbol-day merged, audited and written.

The day is built like three collectors would have recorded it, into a temporary local
store: 10 depth events a second (864,000 in 24 h), each one of the real BTCUSDT
``@depth@100ms`` events of the hftbacktest recording in turn (its level lists verbatim,
~46 level changes on average) with continuous update ids; 60 s chunks; per source a REST
snapshot at the start, every 30 min and after its hole; one hole per source (2 % of the
day), the holes overlapping nowhere, so the merged day must have no unrecoverable gap.
The snapshots are the true book at their ids (the recording replayed onto its own REST
snapshot), so the audit must find no mismatch.

Measured in child processes, each reporting its own peak RSS (``bench.common.peak_rss_mib``:
``VmHWM``, not ``ru_maxrss``, which a child inherits from the parent that built the day):

- *ours*: ``merger.day.merge_day`` on the store: day events / wall seconds;
- *floor*: decompress and parse the same chunks and nothing else
  (``booktape.objects.iter_object`` + ``booktape.binance.decode_depth`` of every frame).

Each day is merged and floored ``--repeat`` times (3; ``--quick``: once), alternated so
that a burst of other load hits both; the best time of each is kept, as bench.book and
bench.replay keep theirs, and every run's time is printed too (``merge_s_runs``,
``floor_s_runs``). Each merge starts from the raw chunks alone (the previous one's outputs
are removed). ``ratio`` = ours / floor, of the best times. Peak memory, the highest of a
day's merges, is compared between a short and a long day (1 h and 24 h; ``--quick``: 5
min and 20 min). ``--profile`` prints the pyinstrument tree of the long day's first merge.

    python -m bench.merger [--hours 24] [--repeat 3] [--quick] [--json] [--profile]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import emit, machine, parser, peak_rss_mib, profiled, recorded_depth
from bench.framesource import templates
from booktape.binance import decode_depth, decode_snapshot
from booktape.codec import Header, Msg
from booktape.keys import RawKey
from booktape.objects import RecordWriter, iter_object
from booktape.stores import open_store

DATE = dt.date(2024, 5, 1)
T0 = 1_714_521_600_000_000_000  # 2024-05-01T00:00:00Z
EVENT_NS = 100_000_000  # 10 events a second
CHUNK_EVENTS = 600  # 60 s rotation
SNAPSHOT_EVERY = 18_000  # 30 min
ID_STEP = 10
ID_BASE = 50_000_000_000
SOURCES = ("eu", "us", "ap")
HOLES = (0.20, 0.50, 0.80)  # where each source's hole starts, as a share of the day
HOLE = 0.02
SYMBOL = "BTCUSDT"
PATH = f"/api/v3/depth?symbol={SYMBOL}&limit=5000"  # the book has fewer: complete sides

Book = tuple[dict[str, str], dict[str, str]]  # price string -> qty string, bids and asks


def _apply(
    book: Book, bids: tuple[tuple[str, str], ...], asks: tuple[tuple[str, str], ...]
) -> None:
    for side, levels in ((book[0], bids), (book[1], asks)):
        for price, qty in levels:
            if Decimal(qty) == 0:
                side.pop(price, None)
            else:
                side[price] = qty


def _body(book: Book, last_id: int) -> bytes:
    bids = sorted(book[0].items(), key=lambda kv: Decimal(kv[0]), reverse=True)
    asks = sorted(book[1].items(), key=lambda kv: Decimal(kv[0]))
    assert max(len(bids), len(asks)) < 5000, "a snapshot side would be cut at its limit"
    return json.dumps(
        {"lastUpdateId": last_id, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]},
        separators=(",", ":"),
    ).encode()


class SyntheticDay:
    """The day's events and the true book at any event (see the module docstring).

    Event ``d`` uses recorded event ``d mod n``; the book before event 0 is the recording
    replayed once onto its snapshot (B1). Replaying the whole recording onto B1 gives B1
    again (every touched level ends at its last value), so the book after event ``d`` is
    B1 + recorded events ``0..d mod n``, whatever the cycle.
    """

    def __init__(self, events: int) -> None:
        frames, snapshot_body = recorded_depth()
        self.events = events
        self.tails = templates(frames)
        self.levels = [(e.bids, e.asks) for e in (decode_depth(f) for f in frames)]
        snapshot = decode_snapshot(snapshot_body)
        self.b1: Book = (dict(snapshot.bids), dict(snapshot.asks))
        for bids, asks in self.levels:
            _apply(self.b1, bids, asks)
        self.holes = {
            source: (int(start * events), int((start + HOLE) * events))
            for source, start in zip(SOURCES, HOLES, strict=True)
        }

    def ids(self, d: int) -> tuple[int, int]:
        return ID_BASE + d * ID_STEP + 1, ID_BASE + (d + 1) * ID_STEP

    def frame(self, d: int) -> bytes:
        first, last = self.ids(d)
        event_ms = (T0 + d * EVENT_NS) // 1_000_000
        return (
            b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":%d,"s":"%s","U":%d,"u":%d%s'
            % (
                event_ms,
                SYMBOL.encode(),
                first,
                last,
                self.tails[d % len(self.tails)],
            )
        )

    def snapshot_points(self, source: str) -> list[int]:
        """After which events a source took a snapshot (-1: before the first)."""
        index = SOURCES.index(source)
        points = [-1, *range(6000 * index + 9000, self.events, SNAPSHOT_EVERY)]
        hole_end = self.holes[source][1]
        if hole_end + 1 < self.events:
            points.append(hole_end + 1)
        hole = range(*self.holes[source])
        return sorted(p for p in points if p not in hole)

    def snapshot_bodies(self) -> dict[int, bytes]:
        """The snapshot body after each event any source snapshots."""
        wanted = {p for s in SOURCES for p in self.snapshot_points(s)}
        by_residue: dict[int, list[int]] = {}
        for point in wanted:
            if point >= 0:
                by_residue.setdefault(point % len(self.levels), []).append(point)
        bodies = {-1: _body(self.b1, self.ids(-1)[1])} if -1 in wanted else {}
        book: Book = (dict(self.b1[0]), dict(self.b1[1]))
        for residue, (bids, asks) in enumerate(self.levels):
            _apply(book, bids, asks)
            for point in by_residue.get(residue, ()):
                bodies[point] = _body(book, self.ids(point)[1])
            if residue >= max(by_residue, default=-1):
                break
        return bodies


async def write_day(root: Path, day: SyntheticDay) -> int:
    """Write the three sources' chunks into a local store at ``root``; return objects."""
    store = open_store(str(root))
    bodies = day.snapshot_bodies()
    objects = 0
    async with store:
        for number, source in enumerate(SOURCES):
            hole = range(*day.holes[source])
            snaps = set(day.snapshot_points(source))
            offset_ns = (number + 1) * 1_000_000
            header = Header("binance", "depth", SYMBOL, source, "c1", "bench")
            for start in range(0, day.events, CHUNK_EVENTS):
                todo = [d for d in range(start, min(start + CHUNK_EVENTS, day.events))]
                todo = [d for d in todo if d not in hole]
                if not todo:
                    continue
                buf = io.BytesIO()
                first_t = T0 + todo[0] * EVENT_NS + offset_ns
                with RecordWriter(buf, header) as writer:
                    if todo[0] == 0 and -1 in snaps:
                        t = first_t - 500_000
                        writer.write_snap(t, t - 1000, "rest", PATH, bodies[-1])
                        first_t = t
                    for d in todo:
                        t = T0 + d * EVENT_NS + offset_ns
                        writer.write_msg(t, "ws1", day.frame(d))
                        if d in snaps:
                            writer.write_snap(t + 20_000_000, t + 1000, "rest", PATH, bodies[d])
                key = RawKey.from_recv(
                    "binance", "depth", SYMBOL, source, "c1", first_t,
                    day.ids(todo[0])[0], day.ids(todo[-1])[1],
                )  # fmt: skip
                await store.put(key.key, buf.getvalue())
                objects += 1
    return objects


# --- the child processes ------------------------------------------------------------------


def child_merge(root: Path, profile: bool) -> dict[str, object]:
    from merger.day import merge_day  # noqa: PLC0415

    if profile:  # the merger's work runs in asyncio.to_thread: profile inside each call
        to_thread = asyncio.to_thread

        async def profiled_thread(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            def call() -> Any:
                with profiled(True, min_s=0.5):
                    return fn(*args, **kwargs)

            return await to_thread(call)

        asyncio.to_thread = profiled_thread
        profile = False

    async def run() -> dict[str, object]:
        store = open_store(str(root))
        async with store:
            start = time.perf_counter()
            with profiled(profile):
                result = await merge_day(store, "binance", DATE, previous=False)
            seconds = time.perf_counter() - start
        outcome = result.symbols[SYMBOL]
        return {
            "seconds": seconds,
            "events": outcome.events,
            "state": outcome.state,
            "unrecoverable": outcome.unrecoverable,
            "audit_mismatched": outcome.audit_mismatched,
            "error": outcome.error,
        }

    return asyncio.run(run())


def child_floor(root: Path) -> dict[str, object]:
    start = time.perf_counter()
    decoded = 0
    for path in sorted(root.rglob("*.jsonl.zst")):
        if "canonical" in path.parts:
            continue
        with path.open("rb") as fh:
            for record in iter_object(fh, path.name):
                if isinstance(record, Msg):
                    decode_depth(record.raw)
                    decoded += 1
    return {"seconds": time.perf_counter() - start, "decoded": decoded}


def run_child(what: str, root: Path, profile: bool = False) -> dict[str, object]:
    argv = [sys.executable, "-m", "bench.merger", "--child", what, "--store", str(root)]
    out = subprocess.run(
        argv + (["--profile"] if profile else []), check=True, stdout=subprocess.PIPE, text=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def clear_outputs(root: Path) -> None:
    """Remove what a merge wrote (canonical files, status), so the next one starts afresh."""
    for name in ("canonical", "status"):
        shutil.rmtree(root / name, ignore_errors=True)


def measure(minutes: float, profile: bool, repeat: int) -> dict[str, object]:
    """Build a day of ``minutes``; merge it and run the floor ``repeat`` times, alternated."""
    events = int(minutes * 60 * 10)
    day = SyntheticDay(events)
    merges: list[dict[str, object]] = []
    floors: list[float] = []
    with tempfile.TemporaryDirectory(prefix="booktape-bench-merger-") as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        objects = asyncio.run(write_day(root, day))
        built = time.perf_counter() - t0
        raw_bytes = sum(p.stat().st_size for p in root.rglob("*.jsonl.zst"))
        for run in range(repeat):  # alternated, so that a burst of other load hits both
            floors.append(float(run_child("floor", root)["seconds"]))  # type: ignore[arg-type]
            clear_outputs(root)
            merged = run_child("merge", root, profile and run == 0)
            if merged["state"] != "merged" or merged["unrecoverable"] or merged["audit_mismatched"]:
                raise SystemExit(f"the synthetic day did not merge cleanly: {merged}")
            if merged["events"] != events:
                raise SystemExit(f"merged {merged['events']} events, the day has {events}")
            merges.append(merged)
    times = [float(m["seconds"]) for m in merges]  # type: ignore[arg-type]
    seconds, floor_s = min(times), min(floors)  # the runs least disturbed by other load
    return {
        "events": events,
        "objects": objects,
        "raw_mib": round(raw_bytes / 2**20, 1),
        "build_s": round(built, 1),
        "merge_s": round(seconds, 2),
        "merge_s_runs": [round(t, 2) for t in times],
        "events_per_s": round(events / seconds),
        "floor_s": round(floor_s, 2),
        "floor_s_runs": [round(t, 2) for t in floors],
        "floor_events_per_s": round(events / floor_s),
        "peak_rss_mib": max(float(m["peak_rss_mib"]) for m in merges),  # type: ignore[arg-type]
        "ratio": round(floor_s / seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("merger", __doc__)
    p.add_argument("--hours", type=float, default=24.0, help="the long day's length")
    p.add_argument("--short-hours", type=float, default=1.0, help="the short day's length")
    p.add_argument("--repeat", type=int, default=3, help="merges and floors per day (best kept)")
    p.add_argument("--profile", action="store_true", help="pyinstrument the long day's first merge")
    p.add_argument("--child", choices=("merge", "floor"), help=argparse_hidden())
    p.add_argument("--store", type=Path, help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        result = (
            child_merge(args.store, args.profile)
            if args.child == "merge"
            else child_floor(args.store)
        )
        result["peak_rss_mib"] = round(peak_rss_mib(), 1)
        print(json.dumps(result))
        return 0
    short_min, long_min = (5.0, 20.0) if args.quick else (args.short_hours * 60, args.hours * 60)
    repeat = 1 if args.quick else max(1, args.repeat)
    short = measure(short_min, False, repeat)
    long = measure(long_min, args.profile, repeat)
    figures: dict[str, object] = {"machine": machine(), "day_minutes": long_min, "repeat": repeat}
    figures.update({k: v for k, v in long.items() if k != "ratio"})
    figures["short_day_minutes"] = short_min
    figures["short_peak_rss_mib"] = short["peak_rss_mib"]
    figures["short_events_per_s"] = short["events_per_s"]
    peak_long, peak_short = long["peak_rss_mib"], short["peak_rss_mib"]
    assert isinstance(peak_long, float)
    assert isinstance(peak_short, float)
    figures["peak_rss_growth"] = round(peak_long / peak_short - 1, 3)
    figures["day_24h_s_projected"] = round(864_000 / float(long["events_per_s"]), 1)  # type: ignore[arg-type]
    figures["ratio"] = long["ratio"]
    emit("merger", figures, args.json)
    return 0


def argparse_hidden() -> str:
    import argparse  # noqa: PLC0415

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
