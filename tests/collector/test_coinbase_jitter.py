"""Grid jitter and drift in real time: 60 s at a 2 s interval against the simulator."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from simulator.app import Simulator
from tests.collector.test_coinbase_feed import running_feed, settings, sim_config

SEC = 10**9
MS = 10**6


@pytest.mark.slow
async def test_sixty_seconds_at_two_seconds_every_slot_on_time(tmp_path: Path) -> None:
    async with Simulator(sim_config()) as sim:
        rest = str(sim.ready_info()["coinbase_rest"])
        cfg = settings(tmp_path, rest, interval_s=2.0, level=2, prices=("BTC", "ETH"))
        async with running_feed(cfg) as (feed, sink, _):
            await asyncio.sleep(61.0)
    slots_seen: dict[int, list[int]] = {}
    for product in ("BTC-USD", "ETH-USD"):
        assert not sink.conns(product, ev="miss")
        for snap in sink.snaps(product):
            assert snap.extra["status"] == 200
            slots_seen.setdefault(int(snap.extra["slot"]), []).append(
                snap.q - int(snap.extra["slot"])
            )
    for currency in ("BTC", "ETH"):
        assert not sink.conns(currency, ev="miss")
        for snap in sink.snaps(currency):
            slots_seen.setdefault(int(snap.extra["slot"]), []).append(
                snap.q - int(snap.extra["slot"])
            )
    slots = sorted(slots_seen)
    assert len(slots) >= 29
    assert slots == [slots[0] + k * 2 * SEC for k in range(len(slots))]  # every slot present
    assert all(len(v) == 2 + 2 * 3 for v in slots_seen.values())  # 2 books + 2 x 3 prices
    starts = sorted(abs(j) for v in slots_seen.values() for j in v)
    p99 = starts[min(len(starts) - 1, int(len(starts) * 0.99))]
    assert p99 < 250 * MS, f"p99 |start - slot| = {p99 / MS:.1f} ms"
    first = statistics.median(min(slots_seen[s]) for s in slots[:10])
    last = statistics.median(min(slots_seen[s]) for s in slots[-10:])
    assert abs(last - first) < 50 * MS, "slot starts drift"
    assert feed.stats.missed == 0
