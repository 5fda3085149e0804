"""Soak: a collector against the simulator for a while; does its memory grow?

Starts ``booktape sim`` and one ``booktape collect`` (subprocesses, loopback only), samples
the collector's resident set size every few seconds from /proc, and reports the curve and
``rss_growth``: the mean RSS of the last quarter over the mean of the first quarter after a
warm-up, minus 1 (0.05 = grew 5 %). The collector rotates its connections and chunks on
short timers so that every code path turns over many times.

    python -m bench.soak [--seconds 600] [--symbols 10] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
           "TRXUSDT", "LTCUSDT", "DOTUSDT", "LINKUSDT", "AVAXUSDT"]  # fmt: skip


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="50 s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    seconds = 50.0 if args.quick else args.seconds
    symbols = ",".join(SYMBOLS[: args.symbols])
    work = Path(tempfile.mkdtemp(prefix="booktape-soak-"))
    booktape = [sys.executable, "-m", "booktape.cli"]
    sim = subprocess.Popen(
        [*booktape, "sim", "--symbols", symbols], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    collector: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, int]] = []
    try:
        assert sim.stdout is not None
        ready = json.loads(sim.stdout.readline())
        env = {**os.environ, "BOOKTAPE_LIFETIME_MIN_S": "20", "BOOKTAPE_LIFETIME_MAX_S": "40"}
        collector = subprocess.Popen(
            [*booktape, "collect", "--symbols", symbols, "--region", "soak", "--collector", "c1",
             "--store", str(work / "store"), "--spool-dir", str(work / "spool"),
             "--ws-url", ready["binance_ws"], "--rest-url", ready["binance_rest"],
             "--rotation", "10s", "--snapshot-interval", "30s", "--log-level", "warning"],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            if collector.poll() is not None:
                raise RuntimeError(f"collector exited early with {collector.returncode}")
            samples.append((elapsed, rss_bytes(collector.pid)))
            time.sleep(args.interval)
        collector.send_signal(signal.SIGTERM)
        code = collector.wait(timeout=60)
    finally:
        for proc in (collector, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        objects = sum(1 for _ in (work / "store").rglob("*.jsonl.zst"))
        shutil.rmtree(work, ignore_errors=True)
    warm = [rss for t, rss in samples if t >= min(30.0, seconds / 4)]
    quarter = max(1, len(warm) // 4)
    growth = (sum(warm[-quarter:]) / quarter) / (sum(warm[:quarter]) / quarter) - 1
    for t, rss in samples:
        print(f"{t:7.1f} s  rss {rss / 2**20:7.1f} MiB")
    figures = {
        "seconds": round(seconds, 1),
        "symbols": args.symbols,
        "rss_first_mib": round(warm[0] / 2**20, 1),
        "rss_last_mib": round(warm[-1] / 2**20, 1),
        "rss_max_mib": round(max(warm) / 2**20, 1),
        "rss_growth": round(growth, 4),
        "objects": objects,
        "exit_code": code,
    }
    print(f"rss growth {growth:+.1%} over {seconds:.0f} s, {objects} objects, exit {code}")
    if args.json:
        print(json.dumps(figures))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
