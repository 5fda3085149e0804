"""Coinbase end to end: the simulator, two collector processes, one killed mid-way, merge.

The merged day must hold every slot of the recorded range, and the HDF5 export, read
back with plain h5py, must equal the books the simulator served at those sequences (its
``coinbase_truth``: the ground truth).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from pathlib import Path

import h5py
import pytest

from booktape.cli import main
from booktape.keys import canonical_key, parse_raw_key
from booktape.stores import LocalStore
from merger.coinbase import merge_coinbase_day
from merger.gaps import decode_report
from simulator.app import Simulator
from simulator.config import SimConfig

PRODUCT = "BTC-USD"
RECORD_S = 10.0
KILL_AT_S = 5.0


async def _collector(region: str, rest: str, root: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKTAPE_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "booktape.cli", "collect", "--exchange", "coinbase",
        "--products", PRODUCT, "--level", "3", "--prices", "BTC,ETH", "--interval", "1s",
        "--region", region, "--collector", "c1", "--store", str(root / "store"),
        "--spool-dir", str(root / f"spool-{region}"), "--rotation", "2s",
        "--rest-url", rest, "--prices-url", rest,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


def _sources_last_slot(root: Path) -> dict[str, float]:
    """region -> start time (s of day) of its last uploaded book object."""
    out: dict[str, float] = {}
    for path in (root / "store" / "raw" / "coinbase" / "book").rglob("*.jsonl.zst"):
        key = parse_raw_key(path.relative_to(root / "store").as_posix())
        out[key.region] = max(out.get(key.region, 0.0), key.time_ms / 1000)
    return out


@pytest.mark.slow
async def test_two_regions_one_killed_mid_way_the_merged_day_has_every_slot(
    tmp_path: Path,
) -> None:
    config = SimConfig(regions=("eu", "us"), products=(PRODUCT,), control_port=None,
                       coinbase_history=1024, coinbase_orders_per_side=200)  # fmt: skip
    async with Simulator(config) as sim:
        regions = sim.ready_info()["regions"]
        assert isinstance(regions, dict)
        procs = {r: await _collector(r, urls["coinbase_rest"], tmp_path)
                 for r, urls in regions.items()}  # fmt: skip
        try:
            await asyncio.sleep(KILL_AT_S)
            for _ in range(300):  # a loaded machine starts a collector slowly: up to 30 s more
                if "eu" in _sources_last_slot(tmp_path):
                    break
                await asyncio.sleep(0.1)
            procs["eu"].send_signal(signal.SIGKILL)  # eu dies mid-way, never restarted
            await asyncio.sleep(RECORD_S - KILL_AT_S)
            procs["us"].send_signal(signal.SIGTERM)  # us seals and uploads its spool
            _, err = await asyncio.wait_for(procs["us"].communicate(), 30)
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
        assert procs["us"].returncode == 0, err.decode()[-2000:]
        assert procs["eu"].returncode == -signal.SIGKILL
        store = LocalStore(tmp_path / "store")
        dates = {p.name for p in (tmp_path / "store/raw/coinbase/book" / PRODUCT).iterdir()}
        date = dt.date.fromisoformat(min(dates))  # a run across midnight: the first day

        result = await merge_coinbase_day(store, date)
        out = tmp_path / "day.h5"
        code = await asyncio.to_thread(
            main, ["export", "hdf5", "--store", str(tmp_path / "store"), "--date",
                   date.isoformat(), "-o", str(out)],
        )  # fmt: skip

        assert result.symbols[PRODUCT].state == "merged"
        report = decode_report(
            await store.get(canonical_key("coinbase", "book", PRODUCT, date, "gaps.json"))
        )
        assert report.slots is not None
        last = _sources_last_slot(tmp_path)
        assert last["eu"] < last["us"] - 2  # eu's recording stopped well before the end
        assert report.slots.expected >= RECORD_S - KILL_AT_S
        assert report.missing_slots == []
        assert report.slots.present == report.slots.expected
        assert code == 0
        with h5py.File(out, "r") as f:
            assert len(f.keys()) == report.slots.expected
            for name in f:
                group = f[name]
                truth = sim.coinbase_truth(PRODUCT, int(group.attrs["sequence"]))
                assert group["asks"][0:5].tolist() == [
                    (float(p), float(s)) for p, s, _ in truth.asks[:5]
                ]
                assert group["asks"][:]["price"].tolist() == [float(e.price) for e in truth.asks]
                assert group["bids"][:]["size"].tolist() == [float(e.size) for e in truth.bids]
                assert group["price-points"]["ETH"]["buy"].shape == ()
