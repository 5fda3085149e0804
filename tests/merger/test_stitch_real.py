"""Real recordings, split into two holey sources, merge to the book the recording rebuilds to.

The hftbacktest spot and USD-M BTCUSDT recordings (../shared/data/real) are written as raw
chunks of two collectors (``eu.c1`` loses events 1000-1500, ``us.c1`` loses 3000-3300, each
reconnecting after its hole), both recording the REST snapshot. Ground truth is the
recording itself replayed from its snapshot without any hole: after every canonical event,
the book replayed from the stitched output equals it, level for level.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from booktape.binance import (
    SPECS,
    DepthEvent,
    DepthSnapshot,
    Level,
    Market,
    decode_depth,
    decode_snapshot,
    first_splice_index,
    parse_depth_header,
)
from booktape.codec import DataRecord, Msg
from booktape.stores import MemoryStore
from merger.load import load_symbol_day
from merger.model import BookImage, GapLog
from merger.stitch import stitch
from simulator.recordings import Recording, load_recording
from tests.merger.chunks import chunk, rotate, snap

SYMBOL = "BTCUSDT"
DROPS = {"eu.c1": range(1000, 1501), "us.c1": range(3000, 3301)}


def source_records(recording: Recording, source: str) -> list[DataRecord]:
    """What one collector recorded: every frame but its dropped ones, a new connection after."""
    region = source.split(".", maxsplit=1)[0]
    drop = DROPS[source]
    records: list[DataRecord] = []
    for n, frame in enumerate(recording.depth_frames(SYMBOL)):
        if n in drop:
            continue
        conn = f"{region}-{2 if n > drop.start else 1}"
        records.append(Msg(frame.recv_ns, conn, frame.frame))
    first = recording.snapshots[0]
    records.append(snap(first.recv_ns, first.body, SYMBOL))
    records.sort(key=lambda r: r.t)
    return records


async def store_chunks(recording: Recording) -> tuple[MemoryStore, list[str]]:
    store = MemoryStore()
    keys: list[str] = []
    exchange = SPECS[recording.market].exchange
    for source in DROPS:
        for records in rotate(source_records(recording, source), per_chunk=500):
            key, data = chunk(exchange, SYMBOL, source, records, market=recording.market)
            await store.put(key, data)
            keys.append(key)
    return store, keys


class Replay:
    """A plain replay of snapshot plus diffs: {(side, price): qty}, zero removes."""

    def __init__(self, snapshot: DepthSnapshot) -> None:
        self.update_id = snapshot.last_update_id
        self.levels: dict[tuple[str, str], str] = {}
        self.apply(snapshot.last_update_id, snapshot.bids, snapshot.asks)

    def apply(self, last_id: int, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        for side, changes in (("bid", bids), ("ask", asks)):
            for price, qty in changes:
                if Decimal(qty) == 0:
                    self.levels.pop((side, price), None)
                else:
                    self.levels[(side, price)] = qty
        self.update_id = last_id

    def apply_event(self, event: DepthEvent) -> None:
        self.apply(event.header.last_id, event.bids, event.asks)

    def image(self) -> tuple[list[Level], list[Level]]:
        bids = sorted(((p, q) for (s, p), q in self.levels.items() if s == "bid"), key=_price)
        asks = sorted(((p, q) for (s, p), q in self.levels.items() if s == "ask"), key=_price)
        return bids[::-1], asks


def _price(level: Level) -> Decimal:
    return Decimal(level[0])


async def check_merge_equals_recording(recording: Recording) -> GapLog:
    market = recording.market
    store, keys = await store_chunks(recording)
    log = GapLog()

    loaded = await load_symbol_day(store, keys, market=market, log=log)
    stitcher = stitch(loaded, market=market, log=log, primary="eu")
    items = list(stitcher)

    frames = [f.frame for f in recording.depth_frames(SYMBOL)]
    snapshot = decode_snapshot(recording.snapshots[0].body)
    headers = [parse_depth_header(f, market) for f in frames]
    at = first_splice_index(snapshot.last_update_id, headers)
    assert at is not None
    truth = Replay(snapshot)
    first = items[0]
    assert isinstance(first, BookImage)
    assert first.last_update_id == snapshot.last_update_id
    ours = Replay(DepthSnapshot(first.last_update_id, first.bids, first.asks))
    for item in items[1:]:
        assert not isinstance(item, BookImage), "no re-anchor expected"
        while truth.update_id != item.header.last_id:
            truth.apply_event(decode_depth(frames[at], market))
            at += 1
        ours.apply_event(decode_depth(item.frame, market))
        assert ours.levels == truth.levels, f"books differ after u={item.header.last_id}"
    assert at == len(frames)  # the canonical stream reaches the recording's last event
    assert stitcher.closing is not None
    assert stitcher.closing.last_update_id == headers[-1].last_id
    assert (list(stitcher.closing.bids), list(stitcher.closing.asks)) == truth.image()
    return log


@pytest.fixture(scope="module")
def spot(real_data: Path) -> Recording:
    return load_recording(
        [
            real_data / "hftbacktest/spot/btcusdt_20240808.gz",
            real_data / "hftbacktest/spot/btcusdt_20240809.gz",
        ]
    )


async def test_spot_recording_split_over_two_holey_sources_merges_exactly(
    spot: Recording,
) -> None:
    log = await check_merge_equals_recording(spot)

    assert log.unrecoverable == []
    assert log.corrupt == []
    assert log.events == 6495 - 2  # the first two diffs are older than the snapshot
    assert log.filled == {"eu.c1": 6493 - 501, "us.c1": 501}  # the standby filled eu's hole
    assert log.unusable_before_anchor == 2
    assert (log.audit.checked, log.audit.mismatched) == (1, 0)  # us's copy of the snapshot
    assert log.crossed_books == 0
    assert log.sources["eu.c1"].gaps == 1
    assert log.sources["us.c1"].gaps == 1
    assert log.sources["eu.c1"].events == 6495 - 501


async def test_usdm_recording_split_over_two_holey_sources_merges_exactly(
    real_data: Path,
) -> None:
    recording = load_recording([real_data / "hftbacktest/usdm/btcusdt_20240808.gz"])
    assert recording.market is Market.USDM

    log = await check_merge_equals_recording(recording)

    assert log.unrecoverable == []
    assert log.events == 6551 - 4  # four diffs are older than the snapshot
    assert log.filled["us.c1"] == 501
    assert log.audit.mismatched == 0
