"""Lifecycle logs: bound fields, `simulator.*` loggers, nothing per frame, no handlers."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from simulator.app import Simulator
from tests.simulator.conftest import base, fast_config, get_json, next_text

STREAM = "btcusdt@depth@100ms"


def _one(records: list[logging.LogRecord], message: str) -> logging.LogRecord:
    found = [r for r in records if r.getMessage() == message]
    assert len(found) == 1, (message, [r.getMessage() for r in records])
    return found[0]


async def test_lifecycle_events_are_logged_with_their_fields_and_frames_are_not(
    caplog: pytest.LogCaptureFixture, http: aiohttp.ClientSession
) -> None:
    caplog.set_level(logging.DEBUG, logger="simulator")
    config = fast_config(
        max_connection_attempts=1, weight_limit=10, ban_base=0.5, rate_limit_window=1e9
    )
    async with Simulator(config) as sim:
        async with http.ws_connect(f"{base(sim)}/ws/{STREAM}") as ws:
            for _ in range(10):
                await next_text(ws)
            (conn,) = sim.connections()
            sim.skip_ids(3, connection=conn.id)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{base(sim)}/ws/{STREAM}")  # past 1 attempt
        depth = f"{base(sim, 'binance_rest')}/api/v3/depth"
        statuses = [(await get_json(http, depth, symbol="BTCUSDT"))[0] for _ in range(4)]
        assert statuses == [200, 200, 429, 418]
    records = [r for r in caplog.records if r.name.startswith("simulator")]

    region = _one(records, "region up")
    assert region.name == "simulator.region"
    assert (region.region, region.port) == ("eu", sim.regions["eu"].port)
    opened = _one(records, "connection opened")
    assert opened.name == "simulator.connection"
    assert (opened.connection, opened.region, opened.remote) == (conn.id, "eu", "127.0.0.1")
    closed = _one(records, "connection closed")
    assert (closed.connection, closed.reason) == (conn.id, "client closed")
    assert closed.sent_frames >= 10
    fault = _one(records, "fault applied")
    assert fault.name == "simulator.faults"
    assert (fault.fault, fault.connections, fault.count) == ("skip_ids", 1, 3)
    limited = _one(records, "connection attempts limited")
    assert limited.levelno == logging.WARNING
    assert 0 < limited.retry_after <= 300
    assert _one(records, "weight limit hit").status == 429
    assert _one(records, "ip banned").status == 418
    _one(records, "simulator started")
    _one(records, "simulator stopped")
    assert len(records) < 12  # ten frames and more were sent: none of them was logged
    assert all(not logging.getLogger(r.name).handlers for r in records)  # the library adds none
