"""One WebSocket market-data connection, as unkind as Binance's (the asyncio shell).

Per connection, four activities run until the connection ends:

- the reader: counts every incoming PING, PONG, text and binary frame (more than
  ``max_incoming_per_second`` in a second: close 1008), answers pings, matches pongs, and
  handles SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY
  (:mod:`simulator.requests`);
- the pump (model mode): at the end of each of its depth windows — a per-connection
  phase, so boundaries differ between connections — builds the aggregated events;
- the keeper: pings every ``ping_interval`` with a payload, closes (1008) when the oldest
  unanswered ping is older than ``pong_timeout``, closes (1001) past ``max_lifetime``;
- the sender: writes the bounded send queue in order (after any added latency) and keeps
  the optional send log. A full queue means a consumer that cannot keep up: closed.

Close codes: 1008 policy violation (too many messages, invalid stream, pong timeout, slow
consumer), 1001 going away (lifetime, serverShutdown, a polite drop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from simulator.config import SimConfig
from simulator.faults import Malformed, RegionFaults, malformed_frame
from simulator.requests import handle_request
from simulator.streams import DepthBatcher, DepthStream, SlowConsumerError, parse_depth_stream
from simulator.wire import combined, server_shutdown

log = logging.getLogger(__name__)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Backend(Protocol):
    """What a connection needs from the simulator it belongs to."""

    config: SimConfig

    def depth_batcher(self, stream: DepthStream, combined: bool) -> DepthBatcher | None:
        """A batcher for a model depth stream, None in replay or for unknown symbols."""

    def subscribed(self) -> None:
        """A connection has subscribed to something (starts a waiting replay)."""


@dataclass(frozen=True, slots=True)
class LoggedFrame:
    t_ns: int  # wall-clock send time
    kind: str  # "text", "binary", "ping" or "close"
    data: bytes  # the frame's payload, verbatim


class Connection:
    """A client connection to one region; the simulator keeps it in its registry."""

    def __init__(
        self,
        *,
        conn_id: int,
        region: str,
        ws: web.WebSocketResponse,
        request: web.Request,
        backend: Backend,
        faults: RegionFaults,
        combined_frames: bool,
    ) -> None:
        cfg = backend.config
        self.id = conn_id
        self.region = region
        self.path = request.path_qs
        self.remote = request.remote or "?"
        self.opened_ns = time.time_ns()
        self.closed_ns: int | None = None
        self.close_reason = ""
        self.combined = combined_frames
        self.streams: dict[str, DepthBatcher | None] = {}
        self.sent_frames = 0
        self._ws = ws
        self._request = request
        self._backend = backend
        self._faults = faults
        self._cfg = cfg
        self._loop = asyncio.get_running_loop()
        self._opened = self._loop.time()
        self._phase = random.Random(f"{cfg.seed}:{conn_id}").random()
        self._queue: asyncio.Queue[tuple[float, bytes, bool]] = asyncio.Queue(cfg.send_queue_frames)
        self._log: deque[LoggedFrame] | None = (
            deque(maxlen=cfg.send_log_frames) if cfg.send_log else None
        )
        self._incoming: deque[float] = deque()
        self._pings: dict[bytes, float] = {}  # payload -> sent (loop time)
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._stall_timer: asyncio.TimerHandle | None = None
        self._subs_changed = asyncio.Event()
        self._due: dict[str, float] = {}
        self._skip_frames = 0  # replay: depth frames still to drop (skip-ids fault)
        self._last_frame: bytes | None = None
        self._closer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- state -----------------------------------------------------------------------

    @property
    def config(self) -> SimConfig:
        return self._cfg

    @property
    def closed(self) -> bool:
        return self.closed_ns is not None or self._closer is not None

    @property
    def stalled(self) -> bool:
        return not self._unstalled.is_set()

    def info(self) -> dict[str, object]:
        return {
            "id": self.id,
            "region": self.region,
            "path": self.path,
            "remote": self.remote,
            "streams": list(self.streams),
            "combined": self.combined,
            "opened_ns": self.opened_ns,
            "closed_ns": self.closed_ns,
            "close_reason": self.close_reason,
            "sent_frames": self.sent_frames,
            "stalled": self.stalled,
        }

    def send_log(self) -> list[LoggedFrame]:
        return list(self._log) if self._log is not None else []

    # --- the connection's life -------------------------------------------------------

    async def run(self, initial_streams: list[str]) -> None:
        """Serve the connection until it closes (the aiohttp handler awaits this)."""
        if initial_streams:
            self.subscribe(initial_streams)
        log.info(
            "connection opened",
            extra={**self._fields(), "path": self.path, "streams": len(self.streams)},
        )
        self._tasks = [
            asyncio.create_task(self._sender()),
            asyncio.create_task(self._keeper()),
            asyncio.create_task(self._pump()),
        ]
        try:
            await self._reader()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._closer is not None:
                with contextlib.suppress(Exception):
                    await self._closer
            self.closed_ns = self.closed_ns or time.time_ns()
            self.close_reason = self.close_reason or "client closed"
            log.info(
                "connection closed",
                extra={
                    **self._fields(),
                    "reason": self.close_reason,
                    "sent_frames": self.sent_frames,
                    "lifetime_s": round((self.closed_ns - self.opened_ns) / 1e9, 3),
                },
            )

    def _fields(self) -> dict[str, object]:
        return {"region": self.region, "connection": self.id, "remote": self.remote}

    async def _reader(self) -> None:
        ws = self._ws
        limit = self._cfg.max_incoming_per_second
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            now = self._loop.time()
            self._incoming.append(now)
            while self._incoming and self._incoming[0] <= now - 1.0:
                self._incoming.popleft()
            if len(self._incoming) > limit:
                self.close(WSCloseCode.POLICY_VIOLATION, "too many messages")
                return
            if msg.type is WSMsgType.PING:
                if not self.stalled:
                    await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                sent = self._pings.pop(bytes(msg.data), None)
                if sent is not None:  # an answer also answers every earlier ping
                    self._pings = {p: t for p, t in self._pings.items() if t > sent}
            elif msg.type is WSMsgType.TEXT:
                handle_request(self, msg.data)

    async def _sender(self) -> None:
        ws = self._ws
        while True:
            enqueued, data, binary = await self._queue.get()
            delay = enqueued + self._faults.ws_latency_s - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._wait_unstalled()
            await ws.send_frame(data, WSMsgType.BINARY if binary else WSMsgType.TEXT)
            self.sent_frames += 1
            self._last_frame = data
            if self._log is not None:
                self._log.append(LoggedFrame(time.time_ns(), "binary" if binary else "text", data))

    async def _wait_unstalled(self) -> None:
        if self._unstalled.is_set():
            return
        await self._unstalled.wait()
        self._pings.clear()  # a stall just ended: forget the pings it left unanswered

    async def _keeper(self) -> None:
        cfg = self._cfg
        next_ping = self._opened + cfg.ping_interval
        end_of_life = self._opened + cfg.max_lifetime
        while True:
            await self._wait_unstalled()
            now = self._loop.time()
            if now >= end_of_life:
                self.close(WSCloseCode.GOING_AWAY, "connection lifetime exceeded")
                return
            oldest = min(self._pings.values(), default=math.inf)
            if now >= oldest + cfg.pong_timeout:
                self.close(WSCloseCode.POLICY_VIOLATION, "pong timeout")
                return
            if now >= next_ping:
                payload = str(wall_ms()).encode()
                self._pings[payload] = now
                next_ping = now + cfg.ping_interval
                await self._ws.ping(payload)
                if self._log is not None:
                    self._log.append(LoggedFrame(time.time_ns(), "ping", payload))
            wake = min(next_ping, end_of_life, oldest + cfg.pong_timeout)
            await asyncio.sleep(max(0.0, wake - now))

    async def _pump(self) -> None:
        """Model mode: emit each depth stream's event at the end of its windows."""
        while True:
            batchers = [b for b in self.streams.values() if b is not None]
            if not batchers:
                self._subs_changed.clear()
                await self._subs_changed.wait()
                continue
            now = self._loop.time()
            wake = min(self._due.get(b.stream.name, now) for b in batchers)
            if wake > now:
                self._subs_changed.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: cpython#86296
                    async with asyncio.timeout(wake - now):
                        await self._subs_changed.wait()
                continue
            if self.stalled:
                await self._wait_unstalled()
                continue
            event_ms = wall_ms()
            for batcher in batchers:
                name = batcher.stream.name
                due = self._due.get(name)
                if due is None or due > now:
                    continue
                self._due[name] = self._next_due(batcher.stream, now)
                batcher.set_combined(self.combined)
                try:
                    frame = batcher.build(event_ms)
                except SlowConsumerError:
                    self.close(WSCloseCode.POLICY_VIOLATION, "slow consumer", abrupt=True)
                    return
                if frame is not None:
                    self.offer(frame)

    def _next_due(self, stream: DepthStream, now: float) -> float:
        interval = stream.interval_ms / 1000 * self._cfg.batch_scale
        anchor = self._opened + self._phase * interval
        return anchor + (math.floor((now - anchor) / interval) + 1) * interval

    # --- sending ---------------------------------------------------------------------

    def offer(self, data: bytes, binary: bool = False) -> None:
        """Queue a frame; a consumer that cannot keep up is closed."""
        if self.closed:
            return
        try:
            self._queue.put_nowait((self._loop.time(), data, binary))
        except asyncio.QueueFull:
            self.close(WSCloseCode.POLICY_VIOLATION, "slow consumer", abrupt=True)

    def deliver(self, stream: str, payload: bytes, is_depth: bool) -> None:
        """Replay: send a recorded payload if this connection subscribed to its stream."""
        if stream not in self.streams or self.closed or self.stalled:
            return
        if is_depth and self._skip_frames:
            self._skip_frames -= 1
            return
        self.offer(combined(stream, payload) if self.combined else payload)

    # --- subscriptions (called by simulator.requests) ---------------------------------

    def subscribe(self, names: list[str]) -> None:
        now = self._loop.time()
        for name in names:
            if name in self.streams:
                continue
            depth = parse_depth_stream(name)
            batcher = (
                self._backend.depth_batcher(depth, self.combined) if depth is not None else None
            )
            self.streams[name] = batcher
            if batcher is not None and depth is not None:
                self._due[name] = self._next_due(depth, now)
        self._subs_changed.set()
        self._backend.subscribed()

    def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            self.streams.pop(name, None)
            self._due.pop(name, None)
        self._subs_changed.set()

    # --- closing and faults ------------------------------------------------------------

    def close(self, code: int, reason: str, abrupt: bool = False) -> None:
        """Close the connection (once): with a close frame, or abort the TCP connection."""
        if self._closer is not None or self.closed_ns is not None:
            return
        self.close_reason = reason
        self._closer = asyncio.create_task(self._close(code, reason, abrupt))

    async def _close(self, code: int, reason: str, abrupt: bool) -> None:
        transport = self._request.transport
        if not abrupt:
            if self._log is not None:
                self._log.append(LoggedFrame(time.time_ns(), "close", f"{code} {reason}".encode()))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._ws.close(code=code, message=reason.encode())
        if transport is not None and (abrupt or not transport.is_closing()):
            transport.abort()
        self.closed_ns = time.time_ns()

    def stall(self, seconds: float | None) -> None:
        """Send nothing (not even pings) for ``seconds``, or until :meth:`unstall`."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
        self._unstalled.clear()
        self._stall_timer = (
            None if seconds is None else self._loop.call_later(seconds, self.unstall)
        )

    def unstall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._unstalled.set()

    def skip_ids(self, count: int) -> None:
        """Model: the next depth events leave out ``count`` changes; replay: drop frames."""
        batchers = [b for b in self.streams.values() if b is not None]
        for batcher in batchers:
            batcher.pending_skip += count
        if not batchers:
            self._skip_frames += count

    def inject_malformed(self, kind: Malformed) -> None:
        data, binary = malformed_frame(kind, self._last_frame)
        self.offer(data, binary)

    def announce_shutdown(self, delay: float) -> None:
        """Send ``serverShutdown`` now and close (1001) after ``delay`` seconds."""
        self.offer(server_shutdown(wall_ms()))
        self._loop.call_later(delay, self.close, WSCloseCode.GOING_AWAY, "server shutdown")
