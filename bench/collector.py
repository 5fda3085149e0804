"""Collector throughput: frames/s recorded to a local store, against a bare receive loop.

A loopback frame source (:mod:`bench.framesource`, its own process) pushes real spot depth
frames, renamed per symbol, as fast as the client reads them: by default (``--frames
recorded``) the symbols take in turn the five recorded spot streams (BTCUSDT ~1.6 kB a
frame, four small symbols ~170-210 bytes; ~480 bytes on average with the combined
wrapper); ``--frames btcusdt`` sends BTCUSDT's frames for every symbol (~1.6 kB). For 100 and 1000
symbols (200 streams per connection, as the collector opens them):

- *bare*: a ``websockets`` receive loop per connection that discards the frames: the
  practical ceiling of a Python client on this machine;
- *ours*: ``collector.service.run_collector`` in this process, writing to a temporary
  local store; frames/s = depth events found in the store's objects after the collector
  stopped (drained, sealed, uploaded) whose receive time lies between ``WARM_UP_S`` after
  the start and the stop, over that span (the bare loop is counted over the same span).

``ratio`` = ours / bare (frames/s, 1000 symbols). The process runs with the collector's
garbage-collector settings (:func:`collector.gctune.tune_gc`, as ``booktape collect``).
CPU = this process's CPU time (user + system, every thread): per frame over the whole run,
per frame while recording (the same span), and per chunk (the CPU after the stop, sealing
and uploading, / objects). The share of one core for all ~1,500 Binance spot symbols at
``@depth@100ms`` (10 frames/s each, 15,000 frames/s) is measured directly too (not with
``--quick``): 1,500 symbols with the source capped at that rate;
``all_spot_core_share_computed`` derives it from the 1000-symbol run.

    python -m bench.collector [--seconds 15] [--quick] [--json] [--only all-spot]
        [--frames recorded|btcusdt]

``--only all-spot`` runs just the all-spot measurement (``--seconds`` x 1.5 long, 6 s with
``--quick``). ``--only all-spot-minute`` measures the same load over one whole rotation
(from 15 s after a minute boundary to 15 s after the next): recording plus the seal and
upload of every symbol's full-minute chunk, all in one measured core share (~2.5 minutes),
and the event loop's thread's part of it (the rest: sealing, uploads, syncs in worker
threads).
A short all-spot window that happens to cross a minute boundary counts that boundary's
~1,500 seals in its recording share *and* adds the computed chunk share: an overcount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard
from websockets.asyncio.client import connect

from bench.common import (
    emit,
    machine,
    measured,
    parser,
    process_cpu,
    profiled,
)
from bench.framesource import FRAME_MIXES, frame_pools
from booktape.binance import combined_path, depth_stream
from collector.config import CollectorSettings
from collector.gctune import tune_gc
from collector.service import run_collector

PER_CONNECTION = 200
# a frame on the wire beyond its tail: the combined wrapper, "e", "E", "s", "U", "u" (~100 B)
_FRAME_OVERHEAD = 100
ROTATION_S = 60.0  # the default chunk rotation
ALL_SPOT_SYMBOLS = 1500
ALL_SPOT_RATE = 10.0 * ALL_SPOT_SYMBOLS  # @depth@100ms: at most 10 frames/s per symbol


def symbol_names(count: int) -> list[str]:
    return [f"S{i:04d}USDT" for i in range(count)]


class Source:
    """The frame source subprocess (one per rate)."""

    def __init__(
        self, rate_per_connection: float = 0.0, frames: str = "recorded", tick_s: float = 0.1
    ) -> None:
        argv = ["--rate", str(rate_per_connection), "--frames", frames, "--tick", str(tick_s)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.framesource", *argv], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = json.loads(self.proc.stdout.readline())["port"]
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.rest = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


WARM_UP_S = 1.0  # left out of the rates: connecting, first snapshots


async def bare_loop(ws_base: str, symbols: list[str], seconds: float) -> float:
    """frames/s of plain receive loops (one per connection) that discard every frame,
    counted from ``WARM_UP_S`` after the start to ``seconds``."""
    counts: list[int] = []

    async def one(part: list[str]) -> None:
        url = ws_base + combined_path([depth_stream(s) for s in part])
        index = len(counts)
        counts.append(0)
        async with connect(url, compression=None, max_size=1 << 22, max_queue=1024) as ws:
            while True:
                await ws.recv(decode=False)
                counts[index] += 1

    parts = [symbols[i : i + PER_CONNECTION] for i in range(0, len(symbols), PER_CONNECTION)]
    tasks = [asyncio.create_task(one(part)) for part in parts]
    await asyncio.sleep(WARM_UP_S)
    before, start = sum(counts), time.perf_counter()
    await asyncio.sleep(seconds - WARM_UP_S)
    after, elapsed = sum(counts), time.perf_counter() - start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return (after - before) / elapsed


_DEPTH_MSG = re.compile(
    rb'\{"k":"msg","t":(\d+),"c":"[^"]*","m":\{"stream":"[^"]*","data":\{"e":"depthUpdate"'
)


def stored_depth_times(store: Path) -> list[int]:
    """The receive times of the depth events in the store's raw objects."""
    times: list[int] = []
    for path in store.rglob("*.jsonl.zst"):
        with path.open("rb") as fh:
            reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
            data = reader.read()
        times.extend(map(int, _DEPTH_MSG.findall(data)))
    return times


async def ours(
    source: Source,
    symbols: list[str],
    seconds: float,
    profile: bool = False,
    warm_up_s: float = WARM_UP_S,
) -> dict[str, float]:
    """Run the collector for ``seconds``; figures from what reached the store.

    rate: events stored whose receive time is in [start + warm_up_s, stop) / that span;
    CPU per frame: process CPU from start until the collector returned (drained, sealed,
    uploaded) / every event stored.
    """
    with tempfile.TemporaryDirectory(prefix="booktape-bench-") as tmp:
        settings = CollectorSettings(
            symbols=tuple(symbols),
            region="bench",
            collector="c1",
            store=str(Path(tmp) / "store"),
            spool_dir=Path(tmp) / "spool",
            ws_url=source.ws,
            rest_url=source.rest,
            log_level="warning",
            shutdown_deadline_s=300.0,  # sealing one chunk per symbol takes a while
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # (time.time_ns(), process CPU s, this thread's CPU s): warm, stop
        marks: list[tuple[int, float, float]] = []

        def mark() -> None:
            marks.append((time.time_ns(), process_cpu(), time.thread_time()))

        loop.call_later(warm_up_s, mark)

        def finish() -> None:
            mark()
            stop.set()

        loop.call_later(seconds, finish)
        with measured() as usage, profiled(profile):
            code = await run_collector(settings, stop, handle_signals=False)
        if code != 0:
            raise RuntimeError(f"the collector exited with {code}")
        times = stored_depth_times(Path(tmp) / "store")
        objects = sum(1 for _ in (Path(tmp) / "store").rglob("*.jsonl.zst"))
    (lo, cpu_lo, main_lo), (hi, cpu_hi, main_hi) = marks
    in_window = sum(1 for t in times if lo <= t < hi)
    drain_cpu = usage.cpu - (cpu_hi - cpu_lo) - (marks[0][1] - usage.cpu_start)
    return {
        "frames": len(times),
        "rate": in_window / ((hi - lo) / 1e9),
        "cpu_us_per_frame": usage.cpu / len(times) * 1e6,
        "steady_share": (cpu_hi - cpu_lo) / ((hi - lo) / 1e9),
        "main_thread_share": (main_hi - main_lo) / ((hi - lo) / 1e9),  # the event loop's
        "objects": objects,
        "cpu_ms_per_chunk": drain_cpu / objects * 1e3,
    }


def all_spot(figures: dict[str, object], seconds: float, profile: bool, frames: str) -> None:
    """1,500 symbols with the source capped at 15,000 frames/s in all: the core share."""
    connections = -(-ALL_SPOT_SYMBOLS // PER_CONNECTION)
    capped = Source(ALL_SPOT_RATE / connections, frames)
    try:
        got = asyncio.run(ours(capped, symbol_names(ALL_SPOT_SYMBOLS), seconds, profile))
    finally:
        capped.close()
    # recording at 15,000 frames/s, plus sealing and uploading one chunk per symbol a minute
    chunk_share = ALL_SPOT_SYMBOLS * got["cpu_ms_per_chunk"] / 1e3 / ROTATION_S
    figures["all_spot_fps_measured"] = round(got["rate"])
    figures["all_spot_recording_share"] = round(got["steady_share"], 3)
    figures["all_spot_cpu_ms_per_chunk"] = round(got["cpu_ms_per_chunk"], 2)
    figures["all_spot_core_share"] = round(got["steady_share"] + chunk_share, 3)


SEAL_MARGIN_S = 15.0  # after a minute boundary: the previous minute's seals are done


def all_spot_minute(figures: dict[str, object], profile: bool, frames: str) -> None:
    """All spot symbols over one whole rotation: from ``SEAL_MARGIN_S`` after a minute
    boundary to as long after the next one, so the window holds 60 s of recording and one
    seal + upload of every symbol's full-minute chunk. The core share is measured, all in
    (nothing computed); the run takes up to ~2.5 minutes."""
    connections = -(-ALL_SPOT_SYMBOLS // PER_CONNECTION)
    capped = Source(ALL_SPOT_RATE / connections, frames)
    now = time.time()
    boundary = (int(now + 5.0) // 60 + 1) * 60  # at least 5 s to connect and warm up
    warm_up = boundary + SEAL_MARGIN_S - now
    try:
        got = asyncio.run(
            ours(capped, symbol_names(ALL_SPOT_SYMBOLS), warm_up + ROTATION_S, profile, warm_up)
        )
    finally:
        capped.close()
    figures["all_spot_minute_fps_measured"] = round(got["rate"])
    figures["all_spot_minute_core_share"] = round(got["steady_share"], 3)
    figures["all_spot_minute_main_thread_share"] = round(got["main_thread_share"], 3)
    figures["all_spot_minute_cpu_us_per_frame"] = round(got["steady_share"] / got["rate"] * 1e6, 2)


def main(argv: list[str] | None = None) -> int:
    p = parser("collector", __doc__)
    p.add_argument("--seconds", type=float, default=15.0, help="each run's length")
    p.add_argument("--symbols", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--profile", action="store_true", help="pyinstrument the collector runs")
    p.add_argument(
        "--only",
        choices=["all-spot", "all-spot-minute"],
        help="run just this measurement (1,500 symbols; -minute: over a whole rotation)",
    )
    p.add_argument(
        "--frames", choices=FRAME_MIXES, default="recorded", help="the source's frame mix"
    )
    args = p.parse_args(argv)
    seconds = 4.0 if args.quick else args.seconds
    logging.basicConfig(level=logging.ERROR)
    tune_gc()  # as `booktape collect` does; the bare loop runs under it too
    mix = frame_pools(args.frames)
    per_symbol = [sum(len(t) for t in tails) / len(tails) for tails in mix]
    mean_bytes = sum(per_symbol) / len(per_symbol) + _FRAME_OVERHEAD
    base: dict[str, object] = {
        "machine": machine(), "frames": args.frames, "frame_bytes_mean": round(mean_bytes),
    }  # fmt: skip
    if args.only == "all-spot":
        figures_only = dict(base)
        all_spot(figures_only, seconds * 1.5, args.profile, args.frames)
        emit("collector", figures_only, args.json)
        return 0
    if args.only == "all-spot-minute":
        figures_only = dict(base)
        all_spot_minute(figures_only, args.profile, args.frames)
        emit("collector", figures_only, args.json)
        return 0
    figures = dict(base)
    source = Source(frames=args.frames)
    try:
        for count in args.symbols:
            symbols = symbol_names(count)
            bare = asyncio.run(bare_loop(source.ws, symbols, seconds))
            got = asyncio.run(ours(source, symbols, seconds, args.profile))
            figures[f"bare_fps_{count}"] = round(bare)
            figures[f"ours_fps_{count}"] = round(got["rate"])
            figures[f"cpu_us_per_frame_{count}"] = round(got["cpu_us_per_frame"], 2)
            if not got["rate"]:
                raise RuntimeError(f"no frame recorded in the measured span ({count} symbols)")
            steady_us = got["steady_share"] / got["rate"] * 1e6
            figures[f"recording_cpu_us_per_frame_{count}"] = round(steady_us, 2)
            figures[f"cpu_ms_per_chunk_{count}"] = round(got["cpu_ms_per_chunk"], 2)
            figures[f"ratio_{count}"] = round(got["rate"] / bare, 3)
    finally:
        source.close()
    last = args.symbols[-1] if args.symbols else None
    if last is not None:
        cpu_us, chunk_ms = (
            float(figures[f"recording_cpu_us_per_frame_{last}"]),  # type: ignore[arg-type]
            float(figures[f"cpu_ms_per_chunk_{last}"]),  # type: ignore[arg-type]
        )
        computed = ALL_SPOT_RATE * cpu_us / 1e6 + ALL_SPOT_SYMBOLS * chunk_ms / 1e3 / ROTATION_S
        figures["all_spot_core_share_computed"] = round(computed, 3)
    if not args.quick:  # --quick: the computed share only (60 s are not enough for both)
        all_spot(figures, seconds * 1.5, args.profile, args.frames)
    if last is not None:
        figures["ratio"] = figures[f"ratio_{last}"]
    emit("collector", figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
