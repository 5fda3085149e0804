"""Measure what one symbol costs in the object store, from a real recording (README "Costs").

Replays the real Binance spot BTCUSDT ``@depth@100ms`` recording (hftbacktest, about 650 s)
through ``booktape sim``, records it with one ``booktape collect`` (its default settings,
except that the rotation is scaled with the replay speed so that every object holds 60 s of
exchange time, as the default 60 s rotation does live), merges the result with
``booktape merge``, then reads the objects back and scales to 24 h:

    .venv/bin/python deploy/measure_raw_rate.py [--speed 4] [--data ../shared/data/real]

Prints one JSON object: bytes per second of raw stream objects (by exchange time ``E``),
the size of one compressed REST snapshot, raw bytes and objects per symbol-day, canonical
bytes per symbol-day, and the monthly S3 cost at the list prices given by the flags.
Takes about 650 s / speed plus a few seconds; it uses loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import zstandard

from booktape.codec import Msg, Snap
from booktape.objects import read_object

REPO = Path(__file__).resolve().parents[1]
FILES = ("hftbacktest/spot/btcusdt_20240808.gz", "hftbacktest/spot/btcusdt_20240809.gz")
DAY_S = 86_400
LIVE_ROTATION_S = 60.0
GB = 1e9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _frames_recorded(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("booktape_frames_total{")
    )


def record(data: Path, speed: float, work: Path) -> Path:
    """Replay and record; return the store directory."""
    store = work / "store"
    booktape = [sys.executable, "-m", "booktape.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sim = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [*booktape, "sim", "--port", "0", "--regions", "eu", "--symbols", "BTCUSDT",
         "--speed", str(speed), "--log-level", "warning", "--replay",
         *(str(data / f) for f in FILES)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert sim.stdout is not None
    info = json.loads(sim.stdout.readline())
    port = _free_port()
    collect = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [*booktape, "collect", "--exchange", "binance", "--symbols", "BTCUSDT",
         "--region", "eu", "--collector", "c1", "--store", str(store),
         "--spool-dir", str(work / "spool"), "--http-port", str(port),
         "--ws-url", info["binance_ws"], "--rest-url", info["binance_rest"],
         "--rotation", f"{LIVE_ROTATION_S / speed}s", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 700 / speed + 120
        last, still = -1.0, 0
        while time.monotonic() < deadline and still < 10:
            time.sleep(1.0)
            try:
                frames = _frames_recorded(port)
            except OSError:
                continue
            still = still + 1 if frames == last and frames > 0 else 0
            last = frames
    finally:
        collect.send_signal(signal.SIGTERM)
        collect.wait(timeout=60)
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
    return store


def measure(store: Path) -> dict[str, Any]:
    """Sizes of what was recorded, split into the stream and the snapshots."""
    objects = sorted((store / "raw").rglob("*.jsonl.zst"))
    total = sum(p.stat().st_size for p in objects)
    times: list[int] = []
    snapshots: list[int] = []
    frames = 0
    compress = zstandard.ZstdCompressor(level=3)
    for path in objects:
        for rec in read_object(path.read_bytes(), path.name).records:
            if isinstance(rec, Msg):
                frames += 1
                times.append(int(orjson.loads(rec.raw)["data"]["E"]))
            elif isinstance(rec, Snap):
                snapshots.append(len(compress.compress(rec.raw)))
    span_s = (max(times) - min(times)) / 1000
    snapshot_bytes = sum(snapshots)
    outputs = [p for p in (store / "canonical").rglob("*") if p.is_file()]
    canonical = sum(p.stat().st_size for p in outputs)
    by_file: dict[str, int] = {}
    for p in outputs:
        by_file[p.name] = by_file.get(p.name, 0) + p.stat().st_size
    return {
        "objects": len(objects),
        "frames": frames,
        "exchange_seconds": span_s,
        "raw_bytes": total,
        "snapshots": len(snapshots),
        "snapshot_bytes_each": snapshot_bytes / max(1, len(snapshots)),
        "stream_bytes_per_s": (total - snapshot_bytes) / span_s,
        "canonical_bytes": canonical,
        "canonical_bytes_by_file": by_file,
    }


def merge(store: Path) -> int:
    dates = sorted({p.parent.parent.name for p in (store / "raw").rglob("*.jsonl.zst")})
    code = 0
    for date in dates:
        code |= subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "booktape.cli", "merge", "--store", str(store),
             "--date", date, "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": str(REPO)}, check=False, timeout=600,
        ).returncode  # fmt: skip
    return code


def costs(m: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    snapshots_per_day = DAY_S / args.snapshot_interval
    raw_day = m["stream_bytes_per_s"] * DAY_S + snapshots_per_day * m["snapshot_bytes_each"]
    objects_day = DAY_S / LIVE_ROTATION_S + 1  # +1: the split at UTC midnight
    canonical_day = m["canonical_bytes"] / m["exchange_seconds"] * DAY_S
    regions = args.regions
    puts_month = objects_day * 30 * regions
    raw_gb_stored = raw_day * args.raw_days * regions / GB  # steady state under the lifecycle rule
    canonical_gb_per_month = canonical_day * 30 / GB  # added each month, kept
    return {
        "raw_bytes_per_symbol_day": raw_day,
        "raw_objects_per_symbol_day": objects_day,
        "snapshots_per_symbol_day": snapshots_per_day,
        "canonical_bytes_per_symbol_day": canonical_day,
        "regions": regions,
        "puts_per_symbol_month": puts_month,
        "put_usd_per_symbol_month": puts_month / 1000 * args.put_per_1000,
        "raw_gb_stored_per_symbol": raw_gb_stored,
        "raw_storage_usd_per_symbol_month": raw_gb_stored * args.gb_month,
        "canonical_gb_added_per_symbol_month": canonical_gb_per_month,
        "canonical_storage_usd_per_symbol_month_added": canonical_gb_per_month * args.gb_month,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--raw-days", type=int, default=30, help="raw/ lifecycle expiry")
    parser.add_argument("--snapshot-interval", type=float, default=1800.0)
    parser.add_argument("--put-per-1000", type=float, default=0.005, help="USD, S3 Standard")
    parser.add_argument("--gb-month", type=float, default=0.023, help="USD, S3 Standard")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="booktape-cost-") as tmp:
        store = record(args.data, args.speed, Path(tmp))
        merged = merge(store)
        measured = measure(store)
    print(json.dumps({**measured, "merge_exit": merged, **costs(measured, args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
