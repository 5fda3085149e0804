"""``make demo``: the product end to end, as far as it exists today.

1. Start the simulator with two regions (``eu`` and ``us``) and two symbols.
2. Start two real collectors (``booktape collect``), one per region, writing into one
   local directory store (``demo-store/``), each with its own spool.
3. Break things: the ``eu`` connection silently loses update ids (a hole only ``us`` can
   fill); then the ``eu`` collector is killed with SIGKILL mid-chunk and started again a
   few seconds later: it seals and uploads what its spool held, and reconnects.
4. Stop both with SIGTERM (they seal and upload), then read every object back, splice
   the recordings (every connection of every region) with the splice rule, audit the
   rebuilt book at every recorded snapshot, compare the final book with the simulator's
   true book, and print a gap report. (The merger proper comes with its own issue.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from booktape.binance import (
    DepthSnapshot,
    decode_depth,
    decode_snapshot,
    first_splice_index,
    parse_depth_header,
)
from booktape.book import OrderBook
from booktape.codec import Msg, Snap, read_object
from booktape.errors import FrameError
from booktape.keys import parse_raw_key, raw_prefix
from booktape.splice import Splicer
from booktape.stores import Store, open_store
from simulator.app import Simulator
from simulator.config import SimConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT")
LIMIT = 1000


def start_collector(
    region: str, urls: dict[str, str], store: Path, spool: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKTAPE_")}
    argv = [
        sys.executable, "-m", "booktape.cli", "collect", "--symbols", ",".join(SYMBOLS),
        "--region", region, "--collector", "c1", "--store", str(store),
        "--spool-dir", str(spool / region), "--ws-url", urls["binance_ws"],
        "--rest-url", urls["binance_rest"], "--rotation", "4s", "--snapshot-interval", "6s",
        "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(argv, env=env)  # noqa: S603 - argv is ours, no shell


@dataclass
class Source:
    """One connection's recording of one symbol, read back from the store."""

    name: str  # region.collector/connection
    frames: list[bytes] = field(default_factory=list)
    ids: list[tuple[int, int]] = field(default_factory=list)
    breaks: int = 0


@dataclass
class Loaded:
    sources: dict[str, Source]
    snapshots: list[DepthSnapshot]
    objects: dict[str, int]  # region -> objects


async def load(store: Store, symbol: str) -> Loaded:
    """Every connection's events and every good snapshot of a symbol, from every region."""
    sources: dict[str, Source] = {}
    snapshots: list[DepthSnapshot] = []
    objects: dict[str, int] = {}
    async for info in store.list(raw_prefix("binance", "depth", symbol)):
        key = parse_raw_key(info.key)
        objects[key.region] = objects.get(key.region, 0) + 1
        for record in read_object(await store.get(info.key), info.key).records:
            if isinstance(record, Msg):
                try:
                    head = parse_depth_header(record.raw)
                except FrameError:
                    continue  # not a depth event (kept in the object, not part of the book)
                name = f"{key.source}/{record.c}"
                source = sources.setdefault(name, Source(name))
                if source.ids and head.prev_id != source.ids[-1][1]:
                    source.breaks += 1
                source.frames.append(record.raw)
                source.ids.append((head.prev_id, head.last_id))
            elif isinstance(record, Snap) and record.extra.get("status") == 200:
                snapshots.append(decode_snapshot(record.raw))
    snapshots.sort(key=lambda snap: snap.last_update_id)
    return Loaded(dict(sorted(sources.items())), snapshots, objects)


@dataclass
class Report:
    events: int = 0
    filled: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    audits: int = 0
    audit_matched: int = 0
    crossed: int = 0
    final_id: int = 0
    final_matches_truth: bool = False


def rebuild(loaded: Loaded, truth: DepthSnapshot) -> Report:
    """Splice every source (eu first), audit at each snapshot, compare with the truth."""
    report = Report()
    streams = list(loaded.sources.values())
    headers = [[parse_depth_header(f) for f in s.frames] for s in streams]
    anchor = next(
        (snap for snap in loaded.snapshots
         if any(first_splice_index(snap.last_update_id, h) is not None for h in headers)),
        None,
    )  # fmt: skip
    if anchor is None:
        return report
    book = OrderBook()
    book.load_snapshot(anchor, limit=LIMIT)
    splicer = Splicer([s.ids for s in streams])
    pending = [s for s in loaded.snapshots if s.last_update_id > anchor.last_update_id]
    while True:
        assert book.update_id is not None
        pick = splicer.pick(book.update_id)
        if pick is None:
            if splicer.resume_after(book.update_id) is not None:
                report.gaps += 1  # the merger re-anchors here; the demo stops
            break
        splicer.take(pick)
        event = decode_depth(streams[pick.source].frames[pick.index])
        while pending and pending[0].last_update_id < event.header.last_id:
            snap = pending.pop(0)
            straddler = event if snap.last_update_id > book.update_id else None
            report.audits += 1
            report.audit_matched += book.compare(snap, straddler, limit=LIMIT).matched
            book.heal(snap, straddler, limit=LIMIT)  # learn the levels beyond our window
        book.apply(event)
        report.events += 1
        report.crossed += book.is_crossed()
        region = streams[pick.source].name.split(".", 1)[0]
        report.filled[region] = report.filled.get(region, 0) + 1
    report.final_id = book.update_id
    report.final_matches_truth = (
        truth.last_update_id == report.final_id and book.compare(truth, limit=LIMIT).matched
    )
    return report


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
    async with open_store(str(store_dir)) as store:
        for symbol in SYMBOLS:
            loaded = await load(store, symbol)
            report = rebuild(loaded, truths[symbol])
            ok = ok and report.final_matches_truth and report.audits == report.audit_matched
            print(f"== {symbol}: {report.events} events spliced, final update id {report.final_id}")
            for region, count in sorted(loaded.objects.items()):
                mine = [s for s in loaded.sources.values() if s.name.startswith(region + ".")]
                events = sum(len(s.frames) for s in mine)
                breaks = sum(s.breaks for s in mine)
                print(f"   {region}.c1: {count} objects, {len(mine)} connections, "
                      f"{events} events, {breaks} breaks within a connection")  # fmt: skip
            print(f"   events taken from: {report.filled}")
            print(f"   unrecoverable gaps: {report.gaps}; crossed books: {report.crossed}")
            print(f"   audit: {report.audit_matched}/{report.audits} recorded snapshots matched")
            verdict = "equals" if report.final_matches_truth else "DIFFERS FROM"
            print(f"   final book {verdict} the exchange's true book (top {LIMIT} levels a side)")
    print(f"\nraw objects: {store_dir}/raw/binance/depth/<SYMBOL>/<date>/<region>.<collector>/")
    print(f"inspect one: booktape ls --store {store_dir}; booktape cat <file>")
    print(f"result: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path())
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.workdir, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
