"""The collector service: wire the feed, the durability pipeline and the health server.

Start: lock the spool directory (one collector per spool: :mod:`collector.spoollock`),
open the store, recover what a crash left in the spool (seal and queue it for upload),
then run the feed (exchange side: :mod:`collector.binance_feed`, or
:mod:`collector.coinbase_feed` for ``--exchange coinbase``, whose readiness allows two
grid intervals between books) and the pipeline (spool, chunks, uploads)
side by side, with ``/healthz``, ``/readyz`` and ``/metrics`` on ``--http-port``.

Stop (SIGTERM, SIGINT, or ``stop`` set): stop the feed first, so nothing new arrives, then
seal and upload every open chunk within ``shutdown_deadline_s``; what could not be
uploaded stays sealed in the spool for the next start. Exit 0 after a clean stop, 1 when
the feed failed for good (a fatal error such as an unknown stream) or chunks are left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

import aiohttp

from booktape.stores import open_store
from collector.config import CollectorSettings
from collector.health import HealthServer
from collector.metrics import Metrics
from collector.spoollock import hold_spool_lock

log = logging.getLogger("collector.service")


def not_ready_reasons(
    feed_reason: str | None,
    last_frame_ns: int | None,
    pipeline_reason: str | None,
    *,
    now_ns: int,
    stale_after_s: float,
) -> list[str]:
    """Why the collector is not ready (empty: ready). Pure, for /readyz."""
    reasons: list[str] = []
    if feed_reason:
        reasons.append(feed_reason)
    if last_frame_ns is None:
        reasons.append("no frame received yet")
    elif now_ns - last_frame_ns > stale_after_s * 1e9:
        reasons.append(f"no frame for {(now_ns - last_frame_ns) / 1e9:.0f} s")
    if pipeline_reason:
        reasons.append(pipeline_reason)
    return reasons


async def run_collector(
    settings: CollectorSettings, stop: asyncio.Event | None = None, *, handle_signals: bool = True
) -> int:
    """Run until ``stop`` is set (or SIGTERM/SIGINT with ``handle_signals``); return exit code.

    Raises SpoolInUseError, before touching the spool, when another process holds it."""
    with hold_spool_lock(settings.spool_dir):
        return await _run(settings, stop, handle_signals=handle_signals)


async def _run(
    settings: CollectorSettings, stop: asyncio.Event | None, *, handle_signals: bool
) -> int:
    from collector.binance_feed import BinanceFeed  # noqa: PLC0415 - heavy, only when run
    from collector.coinbase_feed import CoinbaseFeed, declare_headers  # noqa: PLC0415
    from collector.pipeline import Pipeline  # noqa: PLC0415

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT) if handle_signals else ():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    context = {"region": settings.region, "collector": settings.collector}
    metrics = Metrics()
    store = open_store(settings.store, s3_endpoint_url=settings.s3_endpoint_url)
    async with store, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        pipeline = Pipeline(settings, store, metrics)
        recovered = await pipeline.recover()
        log.info("collector starting", extra={**context, "recovered_chunks": recovered})
        feed: BinanceFeed | CoinbaseFeed
        stale_after_s = settings.stale_after_s
        if settings.exchange == "coinbase":
            declare_headers(pipeline, settings)
            feed = CoinbaseFeed(settings, pipeline, metrics, session=session)
            stale_after_s = max(stale_after_s, 2 * settings.interval_s + 10)  # one book a slot
        else:
            feed = BinanceFeed(settings, pipeline, metrics, session=session)

        def reasons() -> list[str]:
            fh, ph = feed.health(), pipeline.health()
            return not_ready_reasons(
                fh.reason,
                fh.last_frame_ns,
                ph.reason,
                now_ns=time.time_ns(),
                stale_after_s=stale_after_s,
            )

        health = None
        if settings.http_port is not None:
            health = HealthServer(settings.http_host, settings.http_port, metrics, reasons)
            port = await health.start()
            log.info("health server up", extra={**context, "port": port})
        pipeline_task = asyncio.create_task(pipeline.run(), name="pipeline")
        feed_task = asyncio.create_task(feed.run(), name="feed")
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        code = 0
        try:
            done, _ = await asyncio.wait(
                {feed_task, pipeline_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stop_task and not task.cancelled() and task.exception():
                    log.error(
                        "collector part failed",
                        extra={**context, "part": task.get_name()},
                        exc_info=task.exception(),
                    )
                    code = 1
        finally:
            feed_task.cancel()
            stop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed_task
            drained = False
            if not pipeline_task.done():
                drained = await pipeline.shutdown(settings.shutdown_deadline_s)
            pipeline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipeline_task
            if health is not None:
                await health.stop()
        if not drained:
            log.warning("chunks left in the spool for the next start", extra=context)
            code = code or 1
        log.info("collector stopped", extra={**context, "exit_code": code})
        return code
