"""Schedule: how close to its wall-clock grid does the Coinbase collector start requests?

Starts ``booktape sim`` and one ``booktape collect --exchange coinbase`` (subprocesses,
loopback only) on a ``--interval`` grid for ``--seconds``, stops the collector (SIGTERM:
it seals and uploads), then reads the raw objects it wrote and measures, from the
records themselves, each request's start jitter (``q`` minus its ``slot``), the slots
present and missed, and the drift (the median start of a slot's first request in the
last third of the run minus that in the first third, ms: a grid that slept between runs
would drift by the run time every slot). The goal: p99 jitter under 50 ms, no slot
missed, no drift.

    python -m bench.schedule [--seconds 300] [--interval 5] [--quick] [--json]

``--quick``: 40 s (ends within 60 s). ``--json``: the LAST stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from booktape.codec import Conn, Snap
from booktape.objects import read_object

PRODUCTS = "BTC-USD,ETH-USD"
PRICES = "BTC,ETH,LTC,XRP"
NS = 1_000_000_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def drift_ms(starts: list[float]) -> float:
    """Median slot start jitter of the last third minus that of the first third (ms)."""
    third = max(1, len(starts) // 3)
    return statistics.median(starts[-third:]) - statistics.median(starts[:third]) if starts else 0.0


def measure(store: Path, interval_ns: int) -> dict[str, float | int]:
    """The figures, read back from the raw objects."""
    jitters: list[float] = []
    by_slot: dict[int, list[int]] = {}
    missed = statuses_bad = 0
    for path in sorted((store / "raw").rglob("*.jsonl.zst")):
        result = read_object(path.read_bytes(), str(path))
        for record in result.records:
            if isinstance(record, Snap):
                slot = int(record.extra["slot"])  # type: ignore[arg-type]
                by_slot.setdefault(slot, []).append(record.q - slot)
                jitters.append((record.q - slot) / 1e6)
                statuses_bad += record.extra.get("status") != 200
            elif isinstance(record, Conn) and record.ev == "miss":
                missed += 1
    slots = sorted(by_slot)
    expected = (slots[-1] - slots[0]) // interval_ns + 1 if slots else 0
    firsts = [min(by_slot[s]) / 1e6 for s in slots]  # each slot's first request start
    return {
        "requests": len(jitters),
        "slots": len(slots),
        "slots_expected": expected,
        "missed": missed,
        "non_200": statuses_bad,
        "jitter_p50_ms": round(percentile(jitters, 0.5), 3),
        "jitter_p99_ms": round(percentile(jitters, 0.99), 3),
        "jitter_max_ms": round(max(jitters, default=float("nan")), 3),
        "slot_start_p99_ms": round(percentile(firsts, 0.99), 3),
        "drift_ms": round(drift_ms(firsts), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule", description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--interval", type=int, default=5, help="grid interval, seconds")
    parser.add_argument("--quick", action="store_true", help="40 s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seconds = 40.0 if args.quick else args.seconds
    work = Path(tempfile.mkdtemp(prefix="booktape-schedule-"))
    booktape = [sys.executable, "-m", "booktape.cli"]
    sim = subprocess.Popen(
        [*booktape, "sim", "--products", PRODUCTS], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    collector: subprocess.Popen[bytes] | None = None
    try:
        assert sim.stdout is not None
        ready = sim.stdout.readline()
        if not ready.startswith("{"):
            raise SystemExit(f"booktape sim did not start (exit {sim.wait(timeout=10)})")
        rest = json.loads(ready)["coinbase_rest"]
        collector = subprocess.Popen(
            [*booktape, "collect", "--exchange", "coinbase", "--products", PRODUCTS,
             "--level", "3", "--prices", PRICES, "--interval", f"{args.interval}s",
             "--rest-url", rest, "--prices-url", rest, "--region", "bench",
             "--collector", "c1", "--store", str(work / "store"),
             "--spool-dir", str(work / "spool"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(seconds)
        collector.send_signal(signal.SIGTERM)
        code = collector.wait(timeout=30)
        figures: dict[str, float | int | str] = {
            **measure(work / "store", args.interval * NS),
            "seconds": seconds,
            "interval_s": args.interval,
            "collector_exit": code,
        }
    finally:
        for proc in (collector, sim):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        if sim.stdout is not None:
            sim.stdout.close()
        shutil.rmtree(work, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name:>20}: {value}")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
