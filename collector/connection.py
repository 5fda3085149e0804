"""One Binance combined-stream websocket connection: receive, record, check continuity.

The read loop is the hot path. It takes every message the connection has received so far
in one call (:meth:`collector.wsreader.BatchConnection.recv_batch`: the server's frames
are parsed in batches, not one ``recv()`` each), reads the clock once for the batch (the
receive time of all its frames), turns the batch into items and hands them to the sink
in one ``put_many``. A depth frame in Binance's own spot layout takes the fast path
(:func:`booktape.fastframe.spot_depth`: header read and JSON proven in one pass, the
frame spliced verbatim after :func:`booktape.codec.msg_prefix`); any other frame takes
the general one (:func:`booktape.binance.classify_frame`,
:func:`~booktape.binance.parse_depth_header`, :func:`booktape.codec.encode_msg`). Both
give the same bytes for the same frame. Nothing is decoded and re-encoded; no model is built.

What goes where:

- a depth event: one ``msg`` record for its symbol, carrying ``U`` and ``u``; if its
  previous id does not continue the symbol's previous event on this connection, a
  ``conn`` ``break`` record first (that symbol only);
- replies, error frames and ``serverShutdown``: ``msg`` records for every symbol of the
  connection (they are part of each symbol's story);
- anything else (another event, a truncated or non-JSON frame, a binary frame): kept (a
  ``bad`` record when it is not JSON) for the symbol its ``"stream"`` names, else for every
  symbol; counted in ``bad_frames``;
- ``conn`` records ``open``, ``subscribe`` and ``close`` (with code and reason) for every
  symbol concerned.

Per-symbol frame metrics (frames, bytes, last id, last frame time) are brought up to date
every ``METRICS_EVERY_NS`` (1 s) while frames flow and when the connection ends, not per
frame (:mod:`collector.streamtrack`).

Staleness: the connection is replaced when nothing arrived from the server -- no frame and
no ping, no byte at all -- for ``stale_after_s`` while the reader was waiting for the
network (time spent waiting on a full record queue does not count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from booktape.binance import (
    FrameKind,
    Market,
    classify_frame,
    combined_path,
    depth_stream,
    is_continuous,
    parse_depth_header,
    stream_symbol,
)
from booktape.codec import encode_bad, encode_conn, encode_msg, msg_prefix
from booktape.errors import FrameError
from booktape.fastframe import spot_depth
from collector.metrics import Metrics
from collector.streamtrack import METRICS_EVERY_NS, StreamTrack, TrackMetrics
from collector.types import Item, RecordSink
from collector.wsreader import BatchConnection

log = logging.getLogger("collector.connection")

_BAD = b'{"k":"bad"'  # how encode_msg starts a record for a frame that is not JSON

#: Time between two requests we send (SUBSCRIBE...): under 5 incoming messages a second.
REQUEST_SPACING_S = 0.25


class Listener(Protocol):
    """What the feed learns from a connection (called synchronously, never awaited)."""

    def on_depth(self, conn: FeedConnection, symbol: str, prev_id: int) -> None:
        """A depth event of ``symbol`` (its previous id) was read; ``conn.tracks[symbol]``
        is up to date."""

    def on_frames(self, conn: FeedConnection, recv_ns: int, newest_event_ms: int) -> None:
        """A batch received at ``recv_ns`` held depth events, the newest with exchange time
        ``newest_event_ms`` (once a batch, after its ``on_depth`` calls)."""

    def on_break(self, conn: FeedConnection, symbol: str) -> None: ...

    def on_shutdown_notice(self, conn: FeedConnection) -> None: ...


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Websocket settings shared by every connection of a feed."""

    ws_base: str
    market: Market
    depth_speed_ms: int
    stale_after_s: float
    region: str
    ping_interval_s: float = 20.0  # our own keep-alive (the server pings us every 20 s too)
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    max_frame_bytes: int = 1 << 22
    max_queue_frames: int = 1024


class FeedConnection:
    """A combined-stream connection for a set of symbols; ``run()`` until it ends."""

    def __init__(
        self,
        conn_id: str,
        symbols: Iterable[str],
        *,
        options: ConnectionOptions,
        sink: RecordSink,
        metrics: Metrics,
        listener: Listener,
        clock_ns: Callable[[], int],
    ) -> None:
        self.id = conn_id
        self.symbols: list[str] = list(dict.fromkeys(symbols))
        # Symbols whose stream names were validated (open and subscribe records put): the
        # fast path's items need no per-item check (see _records).
        self._subscribed = set(self.symbols)
        self.tracks: dict[str, StreamTrack] = {}
        self.opened_ns: int | None = None
        self.ended = asyncio.Event()
        self.shutdown_notice = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.last_frame_ns: int | None = None
        self.frames = 0
        self._opt = options
        self._sink = sink
        self._metrics = metrics
        self._listener = listener
        self._clock_ns = clock_ns
        self._ws: BatchConnection | None = None
        self._our_reason: str | None = None  # why we closed it, if we did
        self._waiting_since: float | None = None
        self._request_id = 0
        self._last_request = 0.0
        self._request_lock = asyncio.Lock()
        self._track_metrics = TrackMetrics(metrics)
        self._metrics_due_ns = 0
        self._newest_event_ms = -1  # of the batch being read (general path)

    # --- state ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self.ended.is_set()

    @property
    def url(self) -> str:
        streams = [depth_stream(s, self._opt.depth_speed_ms) for s in self.symbols]
        return self._opt.ws_base + combined_path(streams)

    def _fields(self, **more: object) -> dict[str, object]:
        return {"connection": self.id, "region": self._opt.region, **more}

    # --- opening and running -------------------------------------------------------

    async def open(self, why: str) -> None:
        """Connect; websockets and OS errors propagate (see collector.backoff)."""
        opt = self._opt
        ws = await connect(
            self.url,
            create_connection=BatchConnection,
            compression=None,
            open_timeout=opt.open_timeout_s,
            ping_interval=opt.ping_interval_s,
            ping_timeout=opt.ping_interval_s,
            close_timeout=opt.close_timeout_s,
            max_size=opt.max_frame_bytes,
            max_queue=opt.max_queue_frames,
        )
        assert isinstance(ws, BatchConnection)
        self._ws = ws
        self.opened_ns = self._clock_ns()
        self._metrics.connections.inc()
        log.info("connection open", extra=self._fields(streams=len(self.symbols), why=why))
        for symbol in self.symbols:
            info = {
                "url": opt.ws_base,
                "stream": depth_stream(symbol, opt.depth_speed_ms),
                "streams": len(self.symbols),
                "why": why,
            }
            await self._put(symbol, encode_conn(self.opened_ns, self.id, "open", info))

    async def run(self) -> None:
        """Read until the connection ends; then write the close records."""
        ws = self._ws
        assert ws is not None, "open() first"
        watchdog = asyncio.create_task(self._watch_stale(ws))
        try:
            await self._read(ws)
        except ConnectionClosed as exc:
            frame = exc.rcvd
            self.close_code = frame.code if frame is not None else 1006
            self.close_reason = self._our_reason or (frame.reason if frame is not None else "")
        except asyncio.CancelledError:
            self.close_reason = self._our_reason = "shutdown"
            await self._finish(ws, cancelled=True)
            raise
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await self._finish(ws, cancelled=False)

    async def _finish(self, ws: BatchConnection, *, cancelled: bool) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        self._metrics.connections.dec()
        self._flush_metrics()
        with contextlib.suppress(Exception):  # (asyncio.timeout: see snapshots._next_due)
            async with asyncio.timeout(1.0):
                await ws.close(1000, self._our_reason or "")
        ws.transport.abort()
        info: dict[str, object] = {"code": self.close_code, "reason": self.close_reason}
        info["by"] = "client" if self._our_reason else "server"
        log.info("connection closed", extra=self._fields(**info, frames=self.frames))
        line = encode_conn(self._clock_ns(), self.id, "close", info)
        try:
            async with asyncio.timeout(1.0 if cancelled else None):
                await self._put_all(line)
        except TimeoutError:
            log.warning("close records not written at shutdown", extra=self._fields())

    async def close(self, reason: str) -> None:
        """Close from our side (rotated, stale, ...); ``run()`` writes the records."""
        if self._ws is None or self.ended.is_set():
            return
        self._our_reason = reason
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._opt.close_timeout_s):
                await self._ws.close(1000, reason)
        self._ws.transport.abort()

    async def _watch_stale(self, ws: BatchConnection) -> None:
        stale = self._opt.stale_after_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, stale / 4))
            waiting = self._waiting_since
            if waiting is None:
                continue  # we are busy with a frame (or waiting on the sink): not stale
            if loop.time() - max(waiting, ws.last_arrival) > stale:
                log.warning("connection stale", extra=self._fields(after_s=stale))
                self._our_reason = "stale"
                ws.transport.abort()
                return

    # --- the hot path --------------------------------------------------------------

    async def _read(self, ws: BatchConnection) -> None:
        loop = asyncio.get_running_loop()
        sink = self._sink
        while True:
            self._waiting_since = loop.time()
            frames, binary = await ws.recv_batch()
            self._waiting_since = None
            recv_ns = self._clock_ns()
            self.last_frame_ns = recv_ns
            self.frames += len(frames)
            items, checked = self._records(frames, binary, recv_ns)
            await sink.put_many(items, checked=checked)

    def _records(
        self, frames: list[bytes], binary: list[int], recv_ns: int
    ) -> tuple[list[Item], bool]:
        """The items of one batch of messages, all received at ``recv_ns``, in order, and
        whether they hold what the sink's per-item check checks by construction.

        The fast path (a spot depth frame in Binance's layout) is written out here rather
        than through :meth:`_depth`: it is the per-frame cost of the whole collector. Its
        items need no check in the sink: the line is ``msg_prefix`` + a frame proven to be
        JSON without a line break + ``}\n``, the ids are proven in range, the receive time
        is checked once (by ``msg_prefix``), and the symbol is one this connection
        subscribed to (its names passed the sink's check with its ``open`` or
        ``subscribe`` record). A batch with any other item is checked as usual.
        """
        items: list[Item] = []
        append = items.append
        prefix = msg_prefix(recv_ns, self.id)
        tracks = self.tracks
        subscribed = self._subscribed
        on_depth = self._listener.on_depth
        self._newest_event_ms = newest = -1
        checked = True  # the receive time: msg_prefix above refuses one out of range
        if self._opt.market is not Market.SPOT or binary:
            checked = False
            for index, frame in enumerate(frames):
                self._general(frame, recv_ns, index in binary, items)
        else:
            for frame in frames:
                fast = spot_depth(frame)
                if fast is None:
                    checked = False
                    self._general(frame, recv_ns, False, items)
                    continue
                symbol, first, last, event_time = fast
                if symbol not in subscribed:
                    checked = False
                track = tracks.get(symbol)
                if track is None or track.last_id != first - 1:  # None != any id
                    self._new_run(symbol, first, first - 1, last, recv_ns=recv_ns, items=items)
                    track = tracks[symbol]
                else:
                    track.run_events += 1
                    track.last_id = last
                append(Item(symbol, b"".join((prefix, frame, b"}\n")), recv_ns, first, last))
                track.frames += 1
                track.frame_bytes += len(frame)
                track.last_recv_ns = recv_ns
                if event_time > newest:  # noqa: PLR1730 -- max() is a call, per frame
                    newest = event_time
                on_depth(self, symbol, first - 1)
        newest = max(newest, self._newest_event_ms)
        if newest >= 0:
            self._listener.on_frames(self, recv_ns, newest)
        if recv_ns >= self._metrics_due_ns:
            self._flush_metrics(recv_ns)
        return items, checked

    def _general(self, frame: bytes, recv_ns: int, binary: bool, items: list[Item]) -> None:
        """Any frame the fast path does not take: futures, replies, bad frames..."""
        kind = FrameKind.OTHER if binary else classify_frame(frame)
        if kind is FrameKind.DEPTH:
            try:
                header = parse_depth_header(frame, self._opt.market)
            except FrameError:
                self._other(frame, recv_ns, binary, items)
                return
            line = encode_msg(recv_ns, self.id, frame)
            if line.startswith(_BAD):  # a readable header, but not JSON (truncated)
                self._other(frame, recv_ns, binary, items, line)
            else:
                h = header
                self._depth(
                    h.symbol, h.first_id, h.prev_id, h.last_id, h.event_time, frame, line, recv_ns,
                    items,
                )  # fmt: skip
        elif kind is FrameKind.OTHER:
            self._other(frame, recv_ns, binary, items)
        else:
            self._all(encode_msg(recv_ns, self.id, frame), recv_ns, items)
            self._control(kind, frame)

    def _new_run(
        self, symbol: str, first_id: int, prev_id: int, last_id: int, *, recv_ns: int,
        items: list[Item],
    ) -> None:  # fmt: skip
        """A symbol's first event on this connection, or one that does not continue the
        previous one (a ``break`` record first)."""
        track = self.tracks.get(symbol)
        if track is None:
            track = self.tracks[symbol] = StreamTrack()
        broke = track.last_id is not None and not is_continuous(track.last_id, prev_id)
        if broke:
            info = {
                "expected_prev": track.last_id,
                "got_prev": prev_id,
                "U": first_id,
                "u": last_id,
            }
            items.append(Item(symbol, encode_conn(recv_ns, self.id, "break", info), recv_ns))
            log.warning("continuity break", extra=self._fields(symbol=symbol, **info))
            self._metrics.breaks.labels(symbol).inc()
            self._listener.on_break(self, symbol)
        if track.last_id is None or broke:
            track.run_first_prev, track.run_events = prev_id, 1
        else:
            track.run_events += 1
        track.last_id = last_id

    def _depth(  # noqa: PLR0917 -- the hot path: no header object per frame
        self, symbol: str, first: int, prev: int, last: int, event_time: int, frame: bytes,
        line: bytes, recv_ns: int, items: list[Item],
    ) -> None:  # fmt: skip
        """A depth event of ``symbol`` (either path): continuity, its item, its counts."""
        track = self.tracks.get(symbol)
        if track is None or track.last_id is None or track.last_id != prev:
            self._new_run(symbol, first, prev, last, recv_ns=recv_ns, items=items)
            track = self.tracks[symbol]
        else:
            track.run_events += 1
            track.last_id = last
        items.append(Item(symbol, line, recv_ns, first, last))
        track.frames += 1
        track.frame_bytes += len(frame)
        track.last_recv_ns = recv_ns
        self._newest_event_ms = max(self._newest_event_ms, event_time)
        self._listener.on_depth(self, symbol, prev)

    def _flush_metrics(self, now_ns: int | None = None) -> None:
        """Hand the per-symbol counts to the metrics (:class:`TrackMetrics`): at most every
        METRICS_EVERY_NS on the hot path, and when the connection ends."""
        if now_ns is not None:
            self._metrics_due_ns = now_ns + METRICS_EVERY_NS
        self._track_metrics.flush(self.tracks)

    def _other(
        self,
        frame: bytes,
        recv_ns: int,
        binary: bool,
        items: list[Item],
        line: bytes | None = None,
    ) -> None:
        """A frame that is not a valid depth event: kept, attributed if possible."""
        self._metrics.bad_frames.inc()
        if line is None:
            line = (
                encode_bad(recv_ns, self.id, frame, binary=True)
                if binary
                else encode_msg(recv_ns, self.id, frame)
            )
        symbol = stream_symbol(frame)
        if symbol is not None and symbol in self.symbols:
            items.append(Item(symbol, line, recv_ns))
        else:
            self._all(line, recv_ns, items)

    def _control(self, kind: FrameKind, frame: bytes) -> None:
        if kind is FrameKind.SHUTDOWN:
            log.warning("server shutdown announced", extra=self._fields())
            self.shutdown_notice.set()
            self._listener.on_shutdown_notice(self)
        elif kind is FrameKind.ERROR:
            log.error(
                "error frame", extra=self._fields(frame=frame[:300].decode("utf-8", "replace"))
            )
        else:
            log.info("reply", extra=self._fields(frame=frame[:300].decode("utf-8", "replace")))

    # --- records -------------------------------------------------------------------

    def _all(self, line: bytes, t_ns: int, items: list[Item]) -> None:
        items.extend(Item(symbol, line, t_ns) for symbol in self.symbols)

    async def _put(self, symbol: str, line: bytes, t_ns: int | None = None) -> None:
        await self._sink.put(Item(symbol, line, t_ns if t_ns is not None else self._clock_ns()))

    async def _put_all(self, line: bytes, t_ns: int | None = None) -> None:
        items: list[Item] = []
        self._all(line, t_ns if t_ns is not None else self._clock_ns(), items)
        await self._sink.put_many(items)

    # --- live requests -------------------------------------------------------------

    async def _request(self, method: str, symbols: list[str]) -> int:
        """Send SUBSCRIBE/UNSUBSCRIBE, spaced to stay under 5 incoming messages a second."""
        assert self._ws is not None
        async with self._request_lock:
            loop = asyncio.get_running_loop()
            wait = self._last_request + REQUEST_SPACING_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._request_id += 1
            params = [depth_stream(s, self._opt.depth_speed_ms) for s in symbols]
            message = {"method": method, "params": params, "id": self._request_id}
            await self._ws.send(orjson.dumps(message).decode())
            self._last_request = loop.time()
            return self._request_id

    async def subscribe(self, symbols: list[str]) -> None:
        """Add symbols live; a ``subscribe`` record for each."""
        symbols = [s for s in symbols if s not in self.symbols]
        if not symbols or not self.is_open:
            return
        try:
            request_id = await self._request("SUBSCRIBE", symbols)
        except ConnectionClosed:
            return  # the replacement connection's URL will name them
        self.symbols.extend(symbols)
        now = self._clock_ns()
        for symbol in symbols:
            stream = depth_stream(symbol, self._opt.depth_speed_ms)
            info = {"stream": stream, "id": request_id, "streams": len(self.symbols)}
            await self._put(symbol, encode_conn(now, self.id, "subscribe", info), now)
        self._subscribed.update(symbols)  # their names passed the sink's check just now
        log.info("subscribed", extra=self._fields(symbols=symbols))

    async def unsubscribe(self, symbols: list[str], reason: str) -> None:
        """Remove symbols live; a ``close`` record with ``reason`` for each."""
        symbols = [s for s in symbols if s in self.symbols]
        if not symbols:
            return
        if self.is_open:
            with contextlib.suppress(ConnectionClosed):
                await self._request("UNSUBSCRIBE", symbols)
        self._flush_metrics()  # the counts of the symbols whose tracks go
        for symbol in symbols:
            self.symbols.remove(symbol)
            self._subscribed.discard(symbol)
            self.tracks.pop(symbol, None)
        now = self._clock_ns()
        for symbol in symbols:
            await self._put(symbol, encode_conn(now, self.id, "close", {"reason": reason}), now)
        log.info("unsubscribed", extra=self._fields(symbols=symbols, reason=reason))
