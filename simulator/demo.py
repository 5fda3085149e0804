"""``make demo``: the product end to end, as far as it exists today.

1. Start the simulator with two regions (``eu`` and ``us``) and two symbols.
2. Start two real collectors (``booktape collect``), one per region, writing into one
   local directory store (``demo-store/``), each with its own spool.
3. Break things: the ``eu`` connection silently loses update ids (a hole only ``us`` can
   fill); then the ``eu`` collector is killed with SIGKILL mid-chunk and started again a
   few seconds later: it seals and uploads what its spool held, and reconnects.
4. Stop both with SIGTERM (they seal and upload), run the merger (``booktape merge``) on
   the day, print its gap report (``booktape gaps``), and check the canonical closing book
   against the simulator's true book.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from booktape.binance import (
    DepthSnapshot,
)
from booktape.book import OrderBook
from booktape.stores import open_store
from merger.writer import decode_closing
from simulator.app import Simulator
from simulator.config import SimConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT")
LIMIT = 1000
TOP = 200  # levels a side compared with the truth (well inside every snapshot window)


def start_collector(
    region: str, urls: dict[str, str], store: Path, spool: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKTAPE_")}
    argv = [
        sys.executable, "-m", "booktape.cli", "collect", "--symbols", ",".join(SYMBOLS),
        "--region", region, "--collector", "c1", "--store", str(store),
        "--spool-dir", str(spool / region), "--ws-url", urls["binance_ws"],
        "--rest-url", urls["binance_rest"], "--rotation", "4s", "--snapshot-interval", "6s",
        "--log-level", "error",
    ]  # fmt: skip
    return subprocess.Popen(argv, env=env)  # noqa: S603 - argv is ours, no shell


def truth_snapshot(sim: Simulator, symbol: str) -> DepthSnapshot:
    truth = sim.truth(symbol)
    assert truth["lastUpdateId"] is not None  # the model always has one
    bids = tuple((p, q) for p, q in truth["bids"][:LIMIT])
    asks = tuple((p, q) for p, q in truth["asks"][:LIMIT])
    return DepthSnapshot(truth["lastUpdateId"], bids, asks)


async def demo(workdir: Path, seconds: float) -> int:
    store_dir, spool = workdir / "demo-store", workdir / "demo-spool"
    shutil.rmtree(store_dir, ignore_errors=True)
    shutil.rmtree(spool, ignore_errors=True)
    config = SimConfig(regions=("eu", "us"), symbols=SYMBOLS, seed=42, control_port=None)
    async with Simulator(config) as sim:
        regions: dict[str, dict[str, str]] = sim.ready_info()["regions"]  # type: ignore[assignment]
        print(f"simulator: regions {', '.join(regions)}, symbols {', '.join(SYMBOLS)}")
        procs = {r: start_collector(r, urls, store_dir, spool) for r, urls in regions.items()}
        try:
            await sim.wait_for_connections(2, within=30)
            print(f"collectors eu and us recording into {store_dir}/")
            await asyncio.sleep(seconds * 0.3)
            sim.skip_ids(count=40, region="eu")
            print("fault: the eu connection silently loses 40 update ids")
            await asyncio.sleep(seconds * 0.15)
            procs["eu"].send_signal(signal.SIGKILL)
            procs["eu"].wait()
            print("fault: the eu collector is killed (SIGKILL) mid-chunk")
            await asyncio.sleep(seconds * 0.15)
            procs["eu"] = start_collector("eu", regions["eu"], store_dir, spool)
            print("eu collector restarted: it uploads what its spool held, then reconnects")
            await asyncio.sleep(seconds * 0.4)
            sim.pause_market()
            await asyncio.sleep(1.5)  # the last batches reach both collectors
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            codes = {r: await asyncio.to_thread(p.wait, 60) for r, p in procs.items()}
            print(f"collectors stopped with SIGTERM, exit codes {codes}\n")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
        truths = {symbol: truth_snapshot(sim, symbol) for symbol in SYMBOLS}
    ok = all(code == 0 for code in codes.values())
    dates = sorted({key.split("/")[4] for key in await _raw_keys(store_dir)})
    for date in dates:
        print(f"$ booktape merge --store {store_dir} --date {date}")
        merged = await _booktape("merge", "--store", str(store_dir), "--date", date,
                                 "--log-level", "warning")  # fmt: skip
        print(f"  exit code {merged}\n$ booktape gaps --store {store_dir} --date {date}")
        ok = ok and merged == 0
        ok = await _booktape("gaps", "--store", str(store_dir), "--date", date) == 0 and ok
    for symbol in SYMBOLS:
        closing = await _closing(store_dir, symbol, dates[-1])
        truth = truths[symbol]
        same = closing.update_id == truth.last_update_id and closing.top(TOP) == (
            list(truth.bids[:TOP]), list(truth.asks[:TOP]))  # fmt: skip
        ok = ok and same
        verdict = "equals" if same else "DIFFERS FROM"
        print(f"{symbol}: canonical closing book (id {closing.update_id}) {verdict} "
              f"the exchange's true book, top {TOP} levels a side")  # fmt: skip
    print(f"\ncanonical output: {store_dir}/canonical/binance/depth/<SYMBOL>/<date>/")
    print(f"raw objects: booktape ls --store {store_dir}; booktape cat <file>")
    print(f"result: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


async def _raw_keys(store_dir: Path) -> list[str]:
    async with open_store(str(store_dir)) as store:
        return [info.key async for info in store.list("raw/binance/depth/")]


async def _booktape(*argv: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKTAPE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "booktape.cli", *argv, env=env
    )
    return await proc.wait()


async def _closing(store_dir: Path, symbol: str, date: str) -> OrderBook:
    async with open_store(str(store_dir)) as store:
        key = f"canonical/binance/depth/{symbol}/{date}/closing_book.json.zst"
        image = decode_closing(await store.get(key))
    book = OrderBook()
    book.load_snapshot(DepthSnapshot(image.last_update_id, image.bids, image.asks))
    return book


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path())
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.workdir, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
