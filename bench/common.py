"""Plumbing shared by the benchmarks: arguments, the JSON last line, timers, recorded frames.

Every benchmark runs as ``python -m bench.<name>`` with ``--quick`` (done within 60 s) and
``--json`` (its LAST stdout line is one JSON object of its figures). Figures that compare
against a baseline measured in the same run carry ``ratio`` = ours / baseline (higher is
better), since absolute times drift on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REAL_SPOT = Path("/work/shared/data/real/hftbacktest/spot")
REAL_CRYPTOFEED_SPOT = Path("/work/shared/data/real/cryptofeed/BINANCE.ws.1.0")


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the common ``--quick`` and ``--json`` flags."""
    p = argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a short run (under 60 s)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    return p


def emit(name: str, figures: dict[str, object], as_json: bool) -> None:
    """Print the figures for people, then (``--json``) one JSON line as the last line."""
    print(f"== bench.{name}")
    for key, value in figures.items():
        print(f"  {key:28} {value}")
    if as_json:
        print(json.dumps({"bench": name, **figures}), flush=True)


def machine() -> str:
    """CPU model, core count and Python version, for the results table."""
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import os  # noqa: PLC0415

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


@dataclass(slots=True)
class Usage:
    """Wall and CPU seconds of this process (all its threads) over a block."""

    wall: float = 0.0
    cpu: float = 0.0
    cpu_start: float = 0.0  # process_cpu() when the block began


@contextmanager
def measured() -> Iterator[Usage]:
    """Measure wall time and process CPU time (user + system, every thread)."""
    usage = Usage(cpu_start=process_cpu())
    t0 = time.perf_counter()
    try:
        yield usage
    finally:
        usage.wall = time.perf_counter() - t0
        usage.cpu = process_cpu() - usage.cpu_start


def process_cpu() -> float:
    """CPU seconds of this process so far (user + system, every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextmanager
def profiled(enabled: bool, min_s: float = 0.0) -> Iterator[None]:
    """pyinstrument the block (this thread); print its call tree to stderr if it took at
    least ``min_s``."""
    if not enabled:
        yield
        return
    from pyinstrument import Profiler  # noqa: PLC0415

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        session = profiler.stop()
        if session.duration >= min_s:
            print(
                profiler.output_text(unicode=False, color=False, show_all=False),
                file=sys.stderr,
            )


def best_of(runs: list[float]) -> float:
    """The best of repeated rates (the least disturbed by other load)."""
    return max(runs)


@cache
def recorded_depth() -> tuple[list[bytes], bytes]:
    """Real BTCUSDT spot ``@depth@100ms`` events (inner payloads, verbatim, in order) and the
    REST snapshot recorded with them (hftbacktest format, see simulator.recordings)."""
    from simulator.recordings import load_recording  # noqa: PLC0415

    paths = sorted(REAL_SPOT.glob("btcusdt_*.gz"))
    if not paths:
        raise SystemExit(f"no recorded frames in {REAL_SPOT}")
    recording = load_recording(paths)
    frames = [f.frame for f in recording.depth_frames("BTCUSDT")]
    snapshots = [s.body for s in recording.snapshots if s.symbol == "BTCUSDT"]
    if not frames or not snapshots:
        raise SystemExit(f"no BTCUSDT depth frames or snapshot in {REAL_SPOT}")
    return frames, snapshots[0]


def recorded_spot_depth() -> dict[str, list[bytes]]:
    """Every real spot ``@depth@100ms`` stream recorded: BTCUSDT (hftbacktest, ~1.6 kB a
    frame) and the four smaller symbols of cryptofeed's sample (NKNUSDT, BLZETH, LRCBTC,
    RUNEEUR, ~160-530 bytes a frame); inner payloads, verbatim, in order, by symbol."""
    from simulator.recordings import load_recording  # noqa: PLC0415

    streams = {"BTCUSDT": recorded_depth()[0]}
    if not REAL_CRYPTOFEED_SPOT.exists():
        raise SystemExit(f"no recorded frames in {REAL_CRYPTOFEED_SPOT}")
    recording = load_recording([REAL_CRYPTOFEED_SPOT])
    for symbol in recording.symbols():
        frames = [f.frame for f in recording.depth_frames(symbol)]
        if frames:
            streams[symbol] = frames
    return streams


def peak_rss_mib() -> float:
    """This process's own peak resident set size, MiB.

    Linux: ``VmHWM`` in /proc/self/status, the high-water mark of the memory this process
    has had since it started its program. Not ``ru_maxrss``: a child started with fork (or
    vfork) and exec keeps its parent's high-water mark in it, so a child of a parent that
    built a 24 h day in memory reported the parent's 161 MiB as its own peak. Elsewhere
    ``ru_maxrss`` (KiB; bytes on macOS), which has no such inheritance there to correct.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024
