"""Health and metrics over HTTP (aiohttp): ``/healthz``, ``/readyz``, ``/metrics``.

- ``/healthz``: 200 while the event loop answers (liveness: restart the pod if not).
- ``/readyz``: 200 ``{"ready":true}`` when connected, frames are recent and uploads are
  healthy; otherwise 503 with the reasons, e.g. ``{"ready":false,"reasons":["spool full"]}``.
- ``/metrics``: Prometheus text exposition of :class:`collector.metrics.Metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson
from aiohttp import web

from collector.metrics import Metrics

ReadyCheck = Callable[[], Sequence[str]]  # returns the reasons for not being ready


class HealthServer:
    """A small aiohttp server; ``start()`` returns the bound port (0 picks a free one)."""

    def __init__(self, host: str, port: int, metrics: Metrics, not_ready: ReadyCheck) -> None:
        self._host, self._port = host, port
        self._metrics = metrics
        self._not_ready = not_ready
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        self._runner = web.AppRunner(app, access_log=None)
        self.port: int | None = None

    async def start(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses  # [(host, port, ...)] of the bound sockets
        self.port = int(addresses[0][1]) if addresses else self._port
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = list(self._not_ready())
        body = orjson.dumps({"ready": not reasons, "reasons": reasons})
        return web.Response(
            body=body, status=200 if not reasons else 503, content_type="application/json"
        )

    async def _metrics_handler(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
