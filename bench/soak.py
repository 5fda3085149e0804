"""Soak: one collector at a high rate for a while; does its memory grow?

Starts the loopback frame source (:mod:`bench.framesource`, real BTCUSDT frames renamed per
symbol, capped at ``--rate`` frames/s in all) and one ``booktape collect`` (subprocesses,
loopback only, a temporary local store). Every code path turns over many times: chunks
rotate every 10 s (sealed, uploaded), connections rotate make-before-break every 20-40 s,
snapshots are taken every 30 s. The collector's resident set size is read from /proc
every ``--interval`` seconds.

``rss_growth`` = the mean RSS of the last quarter of the samples after the warm-up (the
first quarter of the run, at most 60 s) over the mean of the first quarter, minus 1
(0.05 = grew 5 %). Target: under 0.05.

    python -m bench.soak [--seconds 600] [--rate 10000] [--symbols 400] [--quick] [--json]
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.collector import PER_CONNECTION, Source, symbol_names
from bench.common import emit, machine, parser


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def growth(samples: list[tuple[float, int]], seconds: float) -> tuple[list[int], float]:
    """The samples after the warm-up, and last quarter's mean over first quarter's, - 1."""
    warm = [rss for t, rss in samples if t >= min(60.0, seconds / 4)]
    if not warm:
        raise SystemExit("no RSS sample after the warm-up: run longer")
    quarter = max(1, len(warm) // 4)
    return warm, (sum(warm[-quarter:]) / quarter) / (sum(warm[:quarter]) / quarter) - 1


def main(argv: list[str] | None = None) -> int:
    p = parser("soak", __doc__)
    p.add_argument("--seconds", type=float, default=600.0, help="how long (default 10 min)")
    p.add_argument("--rate", type=float, default=10_000.0, help="frames/s in all")
    p.add_argument("--symbols", type=int, default=400)
    p.add_argument("--interval", type=float, default=10.0, help="RSS sampling period (s)")
    args = p.parse_args(argv)
    seconds, interval = (50.0, 2.0) if args.quick else (args.seconds, args.interval)
    connections = -(-args.symbols // PER_CONNECTION)
    work = Path(tempfile.mkdtemp(prefix="booktape-soak-"))
    source = Source(args.rate / connections, frames="btcusdt", tick_s=0.005)
    collector: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, int]] = []
    try:
        env = {**os.environ, "BOOKTAPE_LIFETIME_MIN_S": "20", "BOOKTAPE_LIFETIME_MAX_S": "40"}
        collector = subprocess.Popen(
            [sys.executable, "-m", "booktape.cli", "collect",
             "--symbols", ",".join(symbol_names(args.symbols)),
             "--region", "soak", "--collector", "c1",
             "--store", str(work / "store"), "--spool-dir", str(work / "spool"),
             "--ws-url", source.ws, "--rest-url", source.rest,
             "--rotation", "10s", "--snapshot-interval", "30s", "--log-level", "warning"],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            if collector.poll() is not None:
                raise RuntimeError(f"collector exited early with {collector.returncode}")
            samples.append((elapsed, rss_bytes(collector.pid)))
            time.sleep(interval)
        collector.send_signal(signal.SIGTERM)
        code = collector.wait(timeout=120)
    finally:
        if collector is not None and collector.poll() is None:
            collector.kill()
            collector.wait()
        source.close()
        objects = sum(1 for _ in (work / "store").rglob("*.jsonl.zst"))
        shutil.rmtree(work, ignore_errors=True)
    warm, rss_growth = growth(samples, seconds)
    for t, rss in samples:
        print(f"{t:7.1f} s  rss {rss / 2**20:7.1f} MiB")
    figures: dict[str, object] = {
        "machine": machine(),
        "seconds": round(seconds, 1),
        "symbols": args.symbols,
        "rate_fps": args.rate,
        "samples": len(samples),
        "rss_first_mib": round(warm[0] / 2**20, 1),
        "rss_last_mib": round(warm[-1] / 2**20, 1),
        "rss_max_mib": round(max(warm) / 2**20, 1),
        "objects": objects,
        "exit_code": code,
        "rss_growth": round(rss_growth, 4),
    }
    emit("soak", figures, args.json)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
