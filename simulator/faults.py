"""Fault injection: what can go wrong, as plain state the servers consult (no I/O here).

Region-wide faults live in :class:`RegionFaults` (one per region); connection faults are
applied by :class:`simulator.connection.Connection` itself. The Python API is on
:class:`simulator.app.Simulator`, the HTTP one in :mod:`simulator.control`.

- **region down** for a window: the region's listening socket is closed, so new
  WebSocket and REST connections are refused at the TCP level (what an outage or a dead
  load balancer looks like to a client), and its open connections are dropped without a
  close frame. The socket is reopened on the same port when the window ends.
- **drop**: one or all connections, abruptly (TCP abort, no close frame) or with a close
  frame (code 1001).
- **stall**: the socket stays open but nothing is sent, not even pings or pongs, and no
  deadlines are enforced, for a while or until the connection is dropped. Depth events
  resume from where they stopped (one large aggregated event) if the change log still
  holds them; replayed frames offered during a stall are lost.
- **skip ids**: the connection's next depth event leaves out its first N changes, so its
  ``U`` jumps past ``previous u + 1`` (a real gap on that connection only). In replay,
  the next N depth frames of that connection are dropped instead.
- **malformed** frames: invalid JSON, a truncated frame (a copy of the last frame sent,
  cut in half), a binary frame, or a copy of the last frame whose ``E`` has 5,000 digits
  (JSON, but past what ``int()`` converts), injected between the normal frames (no ids
  consumed).
- **REST errors**: the next N REST requests get a status (5xx with Binance's -1001 body,
  or 429 with Retry-After), before any other handling.
- **latency**: extra delay added to every WebSocket frame (pipelined: throughput is
  unchanged) and to every REST response.
- **serverShutdown**: the ``serverShutdown`` event is sent on every connection, which is
  closed (code 1001) after ``shutdown_delay``.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class Malformed(StrEnum):
    INVALID_JSON = "invalid_json"
    TRUNCATED = "truncated"
    BINARY = "binary"
    HUGE_NUMBER = "huge_number"


def malformed_frame(kind: Malformed, last_frame: bytes | None) -> tuple[bytes, bool]:
    """The bytes to inject and whether they go in a binary frame."""
    sample = last_frame or b'{"e":"depthUpdate","E":0,"s":"BTCUSDT","U":1,"u":1,"b":[],"a":[]}'
    if kind is Malformed.INVALID_JSON:
        return b'{"e":"depthUpdate","E":' + b"\x7b,,]" + b"}", False
    if kind is Malformed.TRUNCATED:
        return sample[: max(1, len(sample) // 2)], False
    if kind is Malformed.HUGE_NUMBER:  # JSON, but its "E" has more digits than int() takes
        return re.sub(rb'"E":[0-9]+', b'"E":' + b"9" * 5_000, sample, count=1), False
    return sample, True


@dataclass(slots=True)
class RegionFaults:
    """The region-wide faults in force."""

    rest_errors: deque[int] = field(default_factory=deque)  # statuses for the next requests
    ws_latency_s: float = 0.0
    rest_latency_s: float = 0.0
    down_until: float = 0.0  # loop time the outage ends (0 = up)

    def next_rest_error(self) -> int | None:
        return self.rest_errors.popleft() if self.rest_errors else None

    def clear(self) -> None:
        self.rest_errors.clear()
        self.ws_latency_s = self.rest_latency_s = 0.0
