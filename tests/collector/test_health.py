"""/healthz, /readyz and /metrics over real HTTP on loopback."""

from __future__ import annotations

import aiohttp

from collector.health import HealthServer
from collector.metrics import Metrics
from collector.service import not_ready_reasons


async def test_health_ready_and_metrics_endpoints() -> None:
    metrics = Metrics()
    metrics.frames.labels(symbol="BTCUSDT").inc(3)
    reasons: list[str] = ["spool full"]
    server = HealthServer("127.0.0.1", 0, metrics, lambda: reasons)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert await response.json() == {"ready": False, "reasons": ["spool full"]}
            reasons.clear()
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
                assert response.headers["Content-Type"].startswith("text/plain")
                assert 'booktape_frames_total{symbol="BTCUSDT"} 3.0' in text
    finally:
        await server.stop()


def test_not_ready_reasons() -> None:
    now = 100 * 10**9

    assert not_ready_reasons(None, now - 10**9, None, now_ns=now, stale_after_s=30) == []
    assert not_ready_reasons(None, None, None, now_ns=now, stale_after_s=30) == [
        "no frame received yet"
    ]
    assert not_ready_reasons(
        "connecting", now - 40 * 10**9, "spool full", now_ns=now, stale_after_s=30
    ) == ["connecting", "no frame for 40 s", "spool full"]
