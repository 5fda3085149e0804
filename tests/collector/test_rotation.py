"""Make-before-break rotation: ahead of the lifetime cut and on serverShutdown, no gap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.collector.feed_fixtures import gaps, running_feed, settings_for, sim_config, simulated

pytestmark = pytest.mark.timeout(60)

SYMBOLS = ("BTCUSDT", "ETHUSDT")


async def test_rotations_ahead_of_the_lifetime_leave_no_gap(tmp_path: Path) -> None:
    async with simulated(sim_config(SYMBOLS, max_lifetime=4.0)) as sim:
        settings = settings_for(sim, tmp_path, lifetime_min_s=1.5, lifetime_max_s=2.5)
        async with running_feed(settings) as run:
            await run.until(lambda: run.metric("booktape_connection_rotations_total") >= 3, 15)
            await asyncio.sleep(0.3)
            closed = sim.connections(include_closed=True)

    assert run.metric("booktape_reconnects_total") == 0
    assert not [c for c in closed if c.close_reason == "connection lifetime exceeded"]
    for symbol in SYMBOLS:
        depth = run.sink.depth(symbol)
        assert len({conn for conn, _ in depth}) >= 4  # events from every connection
        assert gaps([h for _, h in depth]) == []
        rotates = run.sink.conns(symbol, "rotate")
        assert {r.info["phase"] for r in rotates} == {"start", "done"}
        rotated = [c for c in run.sink.conns(symbol, "close") if c.info["reason"] == "rotated"]
        assert len(rotated) >= 3
        assert all(c.info["by"] == "client" for c in rotated)
        # the snapshot at start is the only one: rotations need none
        assert len(run.sink.snaps(symbol)) == 1
        # every old connection's rotate(start) names its successor, which later says done
        for start in (r for r in rotates if r.info["phase"] == "start"):
            done = [r for r in rotates if r.c == start.info["successor"]]
            assert done
            assert done[0].info == {"phase": "done", "predecessor": start.c}


async def test_server_shutdown_rotates_at_once(tmp_path: Path) -> None:
    async with (
        simulated(sim_config(SYMBOLS)) as sim,
        running_feed(settings_for(sim, tmp_path)) as run,
    ):
        await run.until(lambda: len(run.sink.msgs("ETHUSDT")) >= 3)
        sim.server_shutdown(delay=5.0)
        await run.until(lambda: run.metric("booktape_connection_rotations_total") == 1, 3)
        await asyncio.sleep(0.3)

    for symbol in SYMBOLS:
        (start,) = [r for r in run.sink.conns(symbol, "rotate") if r.info["phase"] == "start"]
        assert start.info["why"] == "shutdown"
        assert any(b'"serverShutdown"' in m.raw for m in run.sink.msgs(symbol))
        assert gaps([h for _, h in run.sink.depth(symbol)]) == []
    assert run.metric("booktape_reconnects_total") == 0


async def test_server_close_of_an_unrotated_connection_is_a_reconnect(tmp_path: Path) -> None:
    async with simulated(sim_config(SYMBOLS, max_lifetime=1.5)) as sim:
        settings = settings_for(sim, tmp_path, lifetime_min_s=100.0, lifetime_max_s=100.0)
        async with running_feed(settings) as run:
            await run.until(lambda: run.metric("booktape_reconnects_total") == 1, 5)
            await run.until(
                lambda: run.metric("booktape_snapshots_total", symbol="BTCUSDT", outcome="ok") == 2
            )

    close = next(c for c in run.sink.conns("BTCUSDT", "close") if c.info["by"] == "server")
    assert close.info["code"] == 1001
    assert close.info["reason"] == "connection lifetime exceeded"
    assert [c.info["why"] for c in run.sink.conns("BTCUSDT", "open")] == ["start", "reconnect"]
    assert run.metric("booktape_connection_rotations_total") == 0
    assert gaps([h for _, h in run.sink.depth("BTCUSDT")])  # a reconnect does lose events
