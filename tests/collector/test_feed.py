"""The Binance feed against the simulator: recording, continuity, faults, reconnects."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from booktape.binance import (
    DepthHeader,
    Market,
    first_splice_index,
    parse_depth_header,
    snapshot_last_update_id,
)
from booktape.codec import Conn, Msg
from collector.backoff import AttemptPacer, Backoff, FeedFatalError, classify_connect_error
from simulator.faults import Malformed
from tests.collector.feed_fixtures import (
    ListSink,
    Running,
    running_feed,
    settings_for,
    sim_config,
    simulated,
    text_frames,
)

pytestmark = pytest.mark.timeout(60)


def open_ids(sink: ListSink, symbol: str) -> list[str]:
    return [c.c for c in sink.conns(symbol, "open")]


def closes(sink: ListSink, symbol: str) -> list[Conn]:
    """Close records, leaving out those written when the test stopped the feed."""
    return [c for c in sink.conns(symbol, "close") if c.info["reason"] != "shutdown"]


async def test_every_frame_the_simulator_sent_is_recorded_verbatim_in_order(
    tmp_path: Path,
) -> None:
    async with simulated(sim_config(("BTCUSDT", "ETHUSDT"))) as sim:
        settings = settings_for(sim, tmp_path, streams_per_connection=1)
        async with running_feed(settings) as run:
            await run.until(lambda: len(run.sink.msgs()) >= 40)
            sim.pause_market()  # nothing new is sent; let what is in flight arrive
            await asyncio.sleep(0.5)

            ours = {symbol: open_ids(run.sink, symbol) for symbol in ("BTCUSDT", "ETHUSDT")}
            sent = {c.id: text_frames(sim, c.id) for c in sim.connections()}
            recorded = [(r.c, r.raw) for r in run.sink.msgs()]

    assert all(len(ids) == 1 for ids in ours.values())
    assert len(sent) == 2
    by_conn: dict[str, list[bytes]] = {}
    for conn, raw in recorded:
        by_conn.setdefault(conn, []).append(raw)
    assert sorted(map(len, by_conn.values())) == sorted(map(len, sent.values()))
    for frames in sent.values():  # each simulator connection is one of ours, byte for byte
        assert frames in list(by_conn.values())
        assert len(frames) >= 15


async def test_items_carry_first_and_last_ids_of_depth_events(tmp_path: Path) -> None:
    async with (
        simulated(sim_config(("BTCUSDT",))) as sim,
        running_feed(settings_for(sim, tmp_path)) as run,
    ):
        await run.until(lambda: len(run.sink.msgs()) >= 5)
    depth = [i for i in run.sink.items if i.line.startswith(b'{"k":"msg"')]
    headers = [h for _, h in run.sink.depth("BTCUSDT")]
    assert [(i.first_id, i.last_id) for i in depth] == [(h.first_id, h.last_id) for h in headers]
    assert all(i.recv_ns > 0 for i in run.sink.items)
    # receive time minus exchange event time: on loopback, under a second and not negative
    assert 0 <= run.metric("booktape_clock_offset_seconds") < 1.0
    assert run.metric("booktape_frames_total", symbol="BTCUSDT") == len(headers)
    assert run.metric("booktape_last_update_id", symbol="BTCUSDT") == headers[-1].last_id


async def test_snapshot_is_taken_after_two_events_and_joins_the_recording(tmp_path: Path) -> None:
    async with (
        simulated(sim_config(("BTCUSDT", "ETHUSDT"))) as sim,
        running_feed(settings_for(sim, tmp_path)) as run,
    ):
        await run.until(
            lambda: all(
                run.metric("booktape_snapshots_total", symbol=s, outcome="ok") >= 1
                for s in ("BTCUSDT", "ETHUSDT")
            )
        )
        await asyncio.sleep(0.5)

    for symbol in ("BTCUSDT", "ETHUSDT"):
        records = run.sink.records(symbol)
        first_snap = next(i for i, r in enumerate(records) if r.__class__.__name__ == "Snap")
        events_before = [r for r in records[:first_snap] if isinstance(r, Msg)]
        assert len(events_before) >= 2
        snap = run.sink.snaps(symbol)[-1]
        assert snap.extra["status"] == 200
        assert snap.r == f"/api/v3/depth?symbol={symbol}&limit=100"
        assert snap.q <= snap.t
        last_update_id = snapshot_last_update_id(snap.raw)
        assert last_update_id is not None
        headers = [h for _, h in run.sink.depth(symbol)]
        assert first_splice_index(last_update_id, headers) is not None


async def test_stalled_connection_is_replaced(tmp_path: Path) -> None:
    async with simulated(sim_config(("BTCUSDT", "ETHUSDT"))) as sim:
        settings = settings_for(sim, tmp_path, stale_after_s=1.0)
        async with running_feed(settings) as run:
            await run.until(
                lambda: run.metric("booktape_snapshots_total", symbol="BTCUSDT", outcome="ok") >= 1
            )
            (conn,) = sim.connections()
            sim.stall(connection=conn.id)
            await run.until(lambda: len(run.sink.conns("BTCUSDT", "open")) == 2, within=6)
            await run.until(
                lambda: run.metric("booktape_snapshots_total", symbol="ETHUSDT", outcome="ok") >= 2
            )
            health = run.feed.health()

    for symbol in ("BTCUSDT", "ETHUSDT"):
        (close,) = closes(run.sink, symbol)
        assert close.info["reason"] == "stale"
        assert close.info["by"] == "client"
        assert run.sink.conns(symbol, "open")[1].info["why"] == "reconnect"
    assert run.metric("booktape_reconnects_total") == 1
    assert health.connected
    assert health.connections == 1


async def test_dropped_connection_reconnects_and_takes_new_snapshots(tmp_path: Path) -> None:
    async with (
        simulated(sim_config(("BTCUSDT",))) as sim,
        running_feed(settings_for(sim, tmp_path)) as run,
    ):
        ok = ("booktape_snapshots_total", {"symbol": "BTCUSDT", "outcome": "ok"})
        await run.until(lambda: run.metric(ok[0], **ok[1]) >= 1)
        assert sim.drop() == 1
        await run.until(lambda: run.metric(ok[0], **ok[1]) >= 2)

    records = run.sink.records("BTCUSDT")
    kinds = [(type(r).__name__, getattr(r, "ev", None)) for r in records]
    close_at = kinds.index(("Conn", "close"))
    reopen_at = kinds.index(("Conn", "open"), close_at)
    assert ("Snap", None) in kinds[reopen_at:]
    assert run.metric("booktape_reconnects_total") == 1
    close = records[close_at]
    assert isinstance(close, Conn)
    assert close.info["by"] == "server"


async def test_break_is_recorded_for_that_symbol_only(tmp_path: Path) -> None:
    async with simulated(sim_config(("BTCUSDT", "ETHUSDT"))) as sim:
        settings = settings_for(sim, tmp_path, streams_per_connection=1)
        async with running_feed(settings) as run:
            await run.until(
                lambda: all(
                    run.metric("booktape_snapshots_total", symbol=s, outcome="ok") >= 1
                    for s in ("BTCUSDT", "ETHUSDT")
                )
            )
            btc = next(c for c in sim.connections() if "btcusdt" in c.path)
            sim.skip_ids(5, connection=btc.id)
            await run.until(lambda: len(run.sink.conns("BTCUSDT", "break")) == 1)
            await run.until(
                lambda: run.metric("booktape_snapshots_total", symbol="BTCUSDT", outcome="ok") >= 2
            )
            await asyncio.sleep(0.3)

    (brk,) = run.sink.conns("BTCUSDT", "break")
    assert brk.info["got_prev"] > brk.info["expected_prev"]
    assert set(brk.info) == {"expected_prev", "got_prev", "U", "u"}
    assert run.metric("booktape_breaks_total", symbol="BTCUSDT") == 1
    assert run.metric("booktape_breaks_total", symbol="ETHUSDT") == 0
    assert run.sink.conns("ETHUSDT", "break") == []
    assert len(run.sink.snaps("ETHUSDT")) == 1  # the other symbol is left alone
    assert len(run.sink.conns("ETHUSDT", "open")) == 1
    # the snapshot after the break joins the events recorded after it
    snap = run.sink.snaps("BTCUSDT")[-1]
    after = [h for _, h in run.sink.depth("BTCUSDT") if h.prev_id >= brk.info["got_prev"]]
    last_update_id = snapshot_last_update_id(snap.raw)
    assert last_update_id is not None
    assert first_splice_index(last_update_id, after) is not None


async def test_malformed_frames_are_kept_and_recording_goes_on(tmp_path: Path) -> None:
    async with (
        simulated(sim_config(("BTCUSDT", "ETHUSDT"))) as sim,
        running_feed(settings_for(sim, tmp_path)) as run,
    ):
        await run.until(lambda: len(run.sink.msgs("BTCUSDT")) >= 3)
        for kind in Malformed:
            sim.send_malformed(kind)
        await run.until(lambda: run.metric("booktape_bad_frames_total") == len(Malformed))
        count = len(run.sink.msgs())
        await run.until(lambda: len(run.sink.msgs()) >= count + 4)

    bads = run.sink.bads()
    assert any(b.binary for b in bads)  # the binary copy of a depth frame
    assert not run.sink.conns(ev="break")  # ... was not taken for a depth event
    assert any(b.raw.startswith(b'{"e":"depthUpdate","E":{,,]') for b in bads)
    truncated = [b for b in bads if not b.binary and b.raw.startswith(b'{"stream"')]
    assert truncated  # attributed to the symbol its stream names, not to every symbol
    huge = [b for b in bads if b'"E":' + b"9" * 5_000 in b.raw]
    assert len(huge) == 1  # kept byte for byte, as a bad record (orjson refuses the number)
    assert len(run.sink.bads("BTCUSDT")) + len(run.sink.bads("ETHUSDT")) == 5


async def test_region_down_reconnects_with_growing_backoff_then_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="collector.feed")
    async with (
        simulated(sim_config(("BTCUSDT",))) as sim,
        running_feed(settings_for(sim, tmp_path)) as run,
    ):
        await run.until(lambda: len(run.sink.msgs()) >= 2)
        await sim.region_down(2.5)
        await run.until(lambda: not run.feed.health().connected)
        await run.until(lambda: len(run.sink.conns("BTCUSDT", "open")) == 2, within=10)
        await run.until(lambda: run.feed.health().connected)
        before = len(run.sink.msgs())
        await run.until(lambda: len(run.sink.msgs()) > before + 3)

    delays = [r.__dict__["delay_s"] for r in caplog.records if r.getMessage() == "connect failed"]
    assert len(delays) >= 3
    assert max(delays) <= 1.0  # the cap (fast_tuning: 0.1 s doubling to 1 s)
    assert delays[-1] > delays[0]
    assert run.metric("booktape_reconnects_total") == 1


async def test_upgrade_refused_with_400_is_fatal(tmp_path: Path) -> None:
    async with simulated(sim_config(("BTCUSDT", "ETHUSDT"), max_streams=1)) as sim:
        settings = settings_for(sim, tmp_path, streams_per_connection=2)
        async with running_feed(settings) as run:
            assert run.task is not None
            with pytest.raises(FeedFatalError, match="HTTP 400"):
                await asyncio.wait_for(run.task, 5)


async def test_usdm_futures_use_fapi_and_pu_continuity(tmp_path: Path, real_data: Path) -> None:
    folder = real_data / "cryptofeed"
    files = (folder / "BINANCE_FUTURES.ws.1.0", folder / "BINANCE_FUTURES.http.0.0")
    symbols = ("SUSHIUSDT", "AKROUSDT")
    config = sim_config(symbols, replay=files, speed=10.0, send_queue_frames=100_000)
    async with simulated(config) as sim:
        settings = settings_for(sim, tmp_path, symbols=symbols, market="usdm")
        async with running_feed(settings) as run:
            await run.until(
                lambda: all(
                    run.metric("booktape_snapshots_total", symbol=s, outcome="ok") >= 1
                    for s in symbols
                )
            )
            # the replayed stream may still be short of a symbol's (recorded) snapshot id:
            # wait until each symbol's events reach it, as a merge would need
            await run.until(lambda: all(spliced(run, s) for s in symbols), 30)
            await run.until(lambda: len(run.sink.msgs("SUSHIUSDT")) >= 20)

    assert run.metric("booktape_breaks_total", symbol="SUSHIUSDT") == 0
    for symbol in symbols:
        snap = run.sink.snaps(symbol)[0]
        assert snap.r == f"/fapi/v1/depth?symbol={symbol}&limit=100"
        assert snap.extra["status"] == 200
        headers = usdm_headers(run, symbol)
        assert any(h.prev_id != h.first_id - 1 for h in headers)  # sparse ids: pu, not U - 1
        assert spliced(run, symbol)


def usdm_headers(run: Running, symbol: str) -> list[DepthHeader]:
    return [
        parse_depth_header(m.raw, Market.USDM)
        for m in run.sink.msgs(symbol)
        if b"depthUpdate" in m.raw[:80]
    ]


def spliced(run: Running, symbol: str) -> bool:
    """True when an event recorded for ``symbol`` splices onto its first snapshot."""
    last_update_id = snapshot_last_update_id(run.sink.snaps(symbol)[0].raw)
    assert last_update_id is not None
    return first_splice_index(last_update_id, usdm_headers(run, symbol)) is not None


# --- the pure parts of reconnecting ----------------------------------------------------


def _status(code: int, headers: dict[str, str] | None = None) -> InvalidStatus:
    return InvalidStatus(Response(code, "x", Headers(headers or {}), b"oops"))


def test_retryable_or_fatal() -> None:
    assert classify_connect_error(ConnectionRefusedError()).reason.startswith("Connection")
    assert classify_connect_error(TimeoutError()).after_s is None
    assert classify_connect_error(_status(503)).reason == "HTTP 503"
    assert classify_connect_error(_status(429, {"Retry-After": "7"})).after_s == 7
    with pytest.raises(FeedFatalError, match=r"HTTP 400.*oops"):
        classify_connect_error(_status(400))
    with pytest.raises(FeedFatalError):
        classify_connect_error(_status(404))
    with pytest.raises(ValueError, match="a bug"):
        classify_connect_error(ValueError("a bug"))


def test_backoff_is_capped_jittered_and_resets() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(3))
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(15.0 <= d <= 30.0 for d in delays[7:])
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


async def test_attempt_pacer_keeps_a_sliding_window() -> None:
    now = [0.0]
    pacer = AttemptPacer(3, window_s=300.0, monotonic=lambda: now[0])
    for _ in range(3):
        await pacer.acquire()
    assert pacer.wait_s() == 300.0
    now[0] = 299.0
    assert pacer.wait_s() == 1.0
    now[0] = 300.0
    assert pacer.wait_s() == 0.0
