"""``make demo``: the product end to end, as far as it exists today.

1. Start the simulator with two regions (``eu`` and ``us``), two Binance symbols and a
   Coinbase product.
2. Start the collectors (``booktape collect``), per region one for Binance depth and one
   for Coinbase book snapshots on a 2 s wall-clock grid, writing into one local directory
   store (``demo-store/``), each with its own spool.
3. Break things: the ``eu`` connection silently loses update ids (a hole only ``us`` can
   fill); then the ``eu`` collectors are killed with SIGKILL mid-chunk; the Binance one is
   started again a few seconds later: it seals and uploads what its spool held, and
   reconnects. The Coinbase one stays dead: ``us`` alone keeps the grid.
4. Stop all with SIGTERM (they seal and upload), run the merger (``booktape merge``) on
   the day for both exchanges, print the gap reports (``booktape gaps``), write the HTML
   report (``booktape report``), export the Coinbase day to HDF5 and a Binance day to
   Tardis CSV, and check the canonical closing book against the simulator's true book.
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
PRODUCT = "BTC-USD"
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


def start_coinbase(
    region: str, urls: dict[str, str], store: Path, spool: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKTAPE_")}
    argv = [
        sys.executable, "-m", "booktape.cli", "collect", "--exchange", "coinbase",
        "--products", PRODUCT, "--level", "2", "--prices", "BTC,ETH", "--interval", "2s",
        "--region", region, "--collector", "c1", "--store", str(store),
        "--spool-dir", str(spool / f"{region}-coinbase"), "--rest-url", urls["coinbase_rest"],
        "--prices-url", urls["coinbase_rest"], "--rotation", "4s", "--log-level", "error",
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
    config = SimConfig(regions=("eu", "us"), symbols=SYMBOLS, products=(PRODUCT,), seed=42,
                       control_port=None)  # fmt: skip
    async with Simulator(config) as sim:
        regions: dict[str, dict[str, str]] = sim.ready_info()["regions"]  # type: ignore[assignment]
        print(f"simulator: regions {', '.join(regions)}, symbols {', '.join(SYMBOLS)}")
        procs = {r: start_collector(r, urls, store_dir, spool) for r, urls in regions.items()}
        coinbase = {r: start_coinbase(r, urls, store_dir, spool) for r, urls in regions.items()}
        try:
            await sim.wait_for_connections(2, within=30)
            print(f"collectors eu and us recording into {store_dir}/ (Binance depth, and "
                  f"Coinbase {PRODUCT} every 2 s)")  # fmt: skip
            await asyncio.sleep(seconds * 0.3)
            sim.skip_ids(count=40, region="eu")
            print("fault: the eu connection silently loses 40 update ids")
            await asyncio.sleep(seconds * 0.15)
            for proc in (procs["eu"], coinbase["eu"]):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            print("fault: the eu collectors are killed (SIGKILL) mid-chunk")
            await asyncio.sleep(seconds * 0.15)
            procs["eu"] = start_collector("eu", regions["eu"], store_dir, spool)
            print("eu Binance collector restarted: it uploads what its spool held, reconnects;"
                  " eu Coinbase stays down")  # fmt: skip
            await asyncio.sleep(seconds * 0.4)
            sim.pause_market()
            await asyncio.sleep(1.5)  # the last batches reach both collectors
            live = [*procs.values(), coinbase["us"]]
            for proc in live:
                proc.send_signal(signal.SIGTERM)
            codes = {r: await asyncio.to_thread(p.wait, 60) for r, p in procs.items()}
            codes["us-coinbase"] = await asyncio.to_thread(coinbase["us"].wait, 60)
            print(f"collectors stopped with SIGTERM, exit codes {codes}\n")
        finally:
            for proc in [*procs.values(), *coinbase.values()]:
                if proc.poll() is None:
                    proc.kill()
        truths = {symbol: truth_snapshot(sim, symbol) for symbol in SYMBOLS}
    ok = all(code == 0 for code in codes.values())
    dates = sorted({key.split("/")[4] for key in await _raw_keys(store_dir)})
    for date in dates:
        for exchange in ("binance", "coinbase"):
            print(f"$ booktape merge --store {store_dir} --exchange {exchange} --date {date}")
            merged = await _booktape("merge", "--store", str(store_dir), "--exchange", exchange,
                                     "--date", date, "--log-level", "warning")  # fmt: skip
            ok = ok and merged == 0
            print(f"  exit code {merged}\n$ booktape gaps --store {store_dir} "
                  f"--exchange {exchange} --date {date}")  # fmt: skip
            gaps = await _booktape("gaps", "--store", str(store_dir), "--exchange", exchange,
                                   "--date", date)  # fmt: skip
            ok = gaps == 0 and ok
    day = dates[-1]
    report = workdir / "demo-report.html"
    hdf5 = workdir / f"demo-{PRODUCT}.h5"
    tardis = workdir / "demo-BTCUSDT.csv.gz"
    for argv in (
        ("report", "--store", str(store_dir), "--date", day, "-o", str(report)),
        ("export", "hdf5", "--store", str(store_dir), "--date", day, "--product", PRODUCT,
         "-o", str(hdf5)),
        ("export", "tardis", "--store", str(store_dir), "--exchange", "binance",
         "--symbol", "BTCUSDT", "--date", day, "-o", str(tardis)),
    ):  # fmt: skip
        print(f"$ booktape {' '.join(argv)}")
        ok = await _booktape(*argv) == 0 and ok
    for symbol in SYMBOLS:
        closing = await _closing(store_dir, symbol, dates[-1])
        truth = truths[symbol]
        same = closing.update_id == truth.last_update_id and closing.top(TOP) == (
            list(truth.bids[:TOP]), list(truth.asks[:TOP]))  # fmt: skip
        ok = ok and same
        verdict = "equals" if same else "DIFFERS FROM"
        print(f"{symbol}: canonical closing book (id {closing.update_id}) {verdict} "
              f"the exchange's true book, top {TOP} levels a side")  # fmt: skip
    print(f"\ncanonical output: {store_dir}/canonical/binance/depth/<SYMBOL>/<date>/ and "
          f"{store_dir}/canonical/coinbase/book/{PRODUCT}/<date>/")  # fmt: skip
    print(f"report: open {report} in a browser; HDF5: {hdf5}; Tardis CSV: {tardis}")
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
