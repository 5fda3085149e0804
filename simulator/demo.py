"""``make demo``: the product end to end, as far as it exists today.

1. Start the simulator with two regions (``eu`` and ``us``) and two symbols.
2. Record both regions into a local directory store with a minimal recorder (a stand-in
   until the collector service lands): every frame verbatim in the raw record format, a
   REST snapshot per symbol once two events are buffered and one every few seconds, one
   object per symbol every 4 s under the raw key layout.
3. Break things: drop update ids on the ``eu`` connection (a hole only ``us`` can fill),
   then kill the ``eu`` recorder mid-way (its open chunks are lost with it).
4. Read every object back from the store, splice the two regions' streams with the
   splice rule, audit the rebuilt book at every recorded snapshot, compare the final book
   with the simulator's true book, and print a gap report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import websockets

from booktape.binance import (
    DepthSnapshot,
    decode_depth,
    decode_snapshot,
    depth_stream,
    first_splice_index,
    parse_depth_header,
)
from booktape.book import OrderBook, Side
from booktape.codec import Header, Msg, RecordWriter, Snap, read_object
from booktape.keys import RawKey, raw_prefix
from booktape.splice import Splicer
from booktape.stores import Store, open_store
from simulator.app import Simulator
from simulator.config import SimConfig

SYMBOLS = ("BTCUSDT", "ETHUSDT")
ROTATE_S = 4.0
SNAPSHOT_EVERY_S = 5.0


@dataclass
class _Chunk:
    writer: RecordWriter
    buffer: io.BytesIO
    first_ns: int
    first_id: int = 0
    last_id: int = 0


@dataclass
class Recorder:
    """A minimal recorder of one region: websocket frames and REST snapshots to a store."""

    region: str
    ws_base: str
    rest_base: str
    store: Store
    chunks: dict[str, _Chunk] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    uploaded: int = 0

    def _chunk(self, symbol: str, now_ns: int) -> _Chunk:
        if symbol not in self.chunks:
            buffer = io.BytesIO()
            header = Header("binance", "depth", symbol, self.region, "demo", socket.gethostname())
            self.chunks[symbol] = _Chunk(RecordWriter(buffer, header), buffer, now_ns)
        return self.chunks[symbol]

    async def seal(self) -> None:
        for symbol, chunk in list(self.chunks.items()):
            chunk.writer.close()
            key = RawKey.from_recv(
                "binance",
                "depth",
                symbol,
                self.region,
                "demo",
                chunk.first_ns,
                chunk.first_id,
                chunk.last_id,
            )
            await self.store.put(key.key, chunk.buffer.getvalue())
            self.uploaded += 1
        self.chunks.clear()

    async def _snapshot(self, session: aiohttp.ClientSession, symbol: str) -> None:
        path = f"/api/v3/depth?symbol={symbol}&limit=1000"
        requested = time.time_ns()
        async with session.get(self.rest_base + path) as response:
            body = await response.read()
            status = response.status
        chunk = self._chunk(symbol, requested)
        chunk.writer.write_snap(
            time.time_ns(), requested, "rest", path, body, extra={"status": status}
        )

    async def run(self) -> None:
        streams = "/".join(depth_stream(s) for s in SYMBOLS)
        url = f"{self.ws_base}/stream?streams={streams}"
        async with (
            aiohttp.ClientSession() as session,
            websockets.connect(url, max_size=2**24) as ws,
            asyncio.TaskGroup() as tasks,
        ):
            rotate_at = time.monotonic() + ROTATE_S
            next_snapshot = {s: time.monotonic() + SNAPSHOT_EVERY_S for s in SYMBOLS}
            while True:
                frame = await ws.recv(decode=False)
                now = time.time_ns()
                header = parse_depth_header(frame)
                chunk = self._chunk(header.symbol, now)
                chunk.writer.write_msg(now, "ws1", frame)
                chunk.first_id = chunk.first_id or header.first_id
                chunk.last_id = header.last_id
                count = self.seen[header.symbol] = self.seen.get(header.symbol, 0) + 1
                due = count == 2 or time.monotonic() >= next_snapshot[header.symbol]
                if due:  # never awaited here: the read loop must not stall on REST
                    next_snapshot[header.symbol] = time.monotonic() + SNAPSHOT_EVERY_S
                    tasks.create_task(self._snapshot(session, header.symbol))
                if time.monotonic() >= rotate_at:
                    rotate_at += ROTATE_S
                    await self.seal()


@dataclass
class SourceStream:
    """One region's recording of one symbol, read back from the store."""

    frames: list[bytes] = field(default_factory=list)
    ids: list[tuple[int, int]] = field(default_factory=list)
    snapshots: list[tuple[int, bytes]] = field(default_factory=list)  # (response ns, body)
    times: list[int] = field(default_factory=list)
    breaks: int = 0


async def load_sources(store: Store, symbol: str) -> dict[str, SourceStream]:
    sources: dict[str, SourceStream] = {}
    async for info in store.list(raw_prefix("binance", "depth", symbol)):
        result = read_object(await store.get(info.key), info.key)
        source = sources.setdefault(result.header.region, SourceStream())
        for record in result.records:
            if isinstance(record, Msg):
                head = parse_depth_header(record.raw)
                if source.ids and head.prev_id != source.ids[-1][1]:
                    source.breaks += 1
                source.frames.append(record.raw)
                source.ids.append((head.prev_id, head.last_id))
                source.times.append(record.t)
            elif isinstance(record, Snap):
                source.snapshots.append((record.t, record.raw))
    return sources


@dataclass
class SymbolReport:
    symbol: str
    events: int = 0
    filled: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    audits: int = 0
    audit_matched: int = 0
    crossed: int = 0
    final_matches_truth: bool = False
    final_id: int = 0


def rebuild(symbol: str, sources: dict[str, SourceStream], truth: DepthSnapshot) -> SymbolReport:
    """Splice the regions (eu first), audit at each snapshot, compare with the truth."""
    report = SymbolReport(symbol)
    names = sorted(sources)
    streams = [sources[name] for name in names]
    snapshots = sorted(
        (decode_snapshot(body) for stream in streams for _, body in stream.snapshots),
        key=lambda snap: snap.last_update_id,
    )
    anchor = next(
        (
            snap
            for snap in snapshots
            for stream in streams
            if first_splice_index(
                snap.last_update_id, [parse_depth_header(f) for f in stream.frames]
            )
            is not None
        ),
        None,
    )
    if anchor is None:
        return report
    book = OrderBook()
    book.load_snapshot(anchor, limit=1000)
    splicer = Splicer([stream.ids for stream in streams])
    pending = [s for s in snapshots if s.last_update_id > anchor.last_update_id]
    while book.update_id is not None and (pick := splicer.pick(book.update_id)) is not None:
        splicer.take(pick)
        event = decode_depth(streams[pick.source].frames[pick.index])
        while pending and pending[0].last_update_id < event.header.last_id:
            snap = pending.pop(0)
            straddler = event if snap.last_update_id > book.update_id else None
            report.audits += 1
            report.audit_matched += book.compare(snap, straddler, limit=1000).matched
            book.heal(snap, straddler, limit=1000)  # learn the levels beyond our window
        book.apply(event)
        report.events += 1
        report.crossed += book.is_crossed()
        report.filled[names[pick.source]] = report.filled.get(names[pick.source], 0) + 1
    report.gaps = sum(1 for stream in streams if splicer.resume_after(book.update_id or 0))
    report.final_id = book.update_id or 0
    report.final_matches_truth = (
        truth.last_update_id == report.final_id and book.compare(truth, limit=1000).matched
    )
    return report


def _truth_snapshot(sim: Simulator, symbol: str) -> DepthSnapshot:
    truth = sim.truth(symbol)
    assert truth["lastUpdateId"] is not None  # the model always has one
    return DepthSnapshot(
        truth["lastUpdateId"],
        tuple((p, q) for p, q in truth["bids"][:1000]),
        tuple((p, q) for p, q in truth["asks"][:1000]),
    )


async def demo(store_dir: Path, seconds: float) -> int:
    shutil.rmtree(store_dir, ignore_errors=True)
    store = open_store(str(store_dir))
    config = SimConfig(regions=("eu", "us"), symbols=SYMBOLS, seed=42, send_log=False)
    async with Simulator(config) as sim, store:
        info = sim.ready_info()
        print(f"simulator up: {info['regions']}")
        regions: dict[str, dict[str, str]] = info["regions"]  # type: ignore[assignment]
        recorders = {
            name: Recorder(name, urls["binance_ws"], urls["binance_rest"], store)
            for name, urls in regions.items()
        }
        tasks = {name: asyncio.create_task(rec.run()) for name, rec in recorders.items()}
        await sim.wait_for_connections(2)
        print(f"recording {', '.join(SYMBOLS)} in regions eu and us into {store_dir}/")
        await asyncio.sleep(seconds * 0.3)
        sim.skip_ids(count=40, region="eu")
        print("fault: the eu connection silently loses 40 update ids (a hole in eu only)")
        await asyncio.sleep(seconds * 0.3)
        tasks["eu"].cancel()
        print("fault: the eu recorder is killed; its open chunks die with it")
        await asyncio.sleep(seconds * 0.4)
        sim.pause_market()
        await asyncio.sleep(1.5)  # let the last batches reach the us recorder
        tasks["us"].cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await recorders["us"].seal()
        truths = {symbol: _truth_snapshot(sim, symbol) for symbol in SYMBOLS}
        print(f"objects uploaded: eu {recorders['eu'].uploaded}, us {recorders['us'].uploaded}\n")
        ok = True
        for symbol in SYMBOLS:
            sources = await load_sources(store, symbol)
            report = rebuild(symbol, sources, truths[symbol])
            ok = ok and report.final_matches_truth and report.audits == report.audit_matched
            print(f"== {symbol}: {report.events} events spliced, final id {report.final_id}")
            for name, source in sorted(sources.items()):
                first = source.ids[0][1] if source.ids else 0
                last = source.ids[-1][1] if source.ids else 0
                print(
                    f"   source {name}.demo: {len(source.frames)} events, ids ..{first}..{last}, "
                    f"{source.breaks} own breaks, {len(source.snapshots)} snapshots"
                )
            print(f"   filled from: {report.filled}")
            print(f"   unrecoverable gaps: {report.gaps}; crossed books: {report.crossed}")
            print(f"   audit: {report.audit_matched}/{report.audits} snapshots matched")
            verdict = "equals" if report.final_matches_truth else "DIFFERS FROM"
            print(f"   final book {verdict} the exchange's true book (top 1000 levels a side)")
        print(
            f"\nstore layout: {store_dir}/raw/binance/depth/<SYMBOL>/<date>/<region>.<collector>/"
        )
        print(f"result: {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__)
    parser.add_argument("--store", type=Path, default=Path("demo-store"))
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.store, args.seconds))


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Side", "main"]
