"""Replay of a real recording instead of the market model.

Frames: every recorded frame (diff depth and any other recorded stream: bookTicker,
aggTrade, kline, ...) is handed to the connections subscribed to its stream at the
recorded pace, relative to the first frame, or ``speed`` times faster. Payloads are
byte-exact (a combined connection gets ``{"stream":"<name>","data":`` + payload + ``}``),
with the recorded ``U``/``u`` (and ``pu``) boundaries. Every symbol of the recording
plays at once, interleaved as recorded.

REST depth, per symbol (:class:`RollingBook`): the book at the replay point, anchored on
the latest recorded snapshot the replay has passed (by its receive time) and rolled
forward by the depth frames replayed since, joined by the splice rule of the recording's
market (spot ``prev = U - 1``, futures ``prev = pu``). Every recorded snapshot re-anchors
the book when the replay reaches it: the snapshot is loaded and the frames already
replayed past its ``lastUpdateId`` are applied on top. Before the first snapshot is
reached, the first snapshot is the answer. When the frames do not join the anchor (a
recorded gap, or a snapshot older than the frames kept), the anchor itself is served
until the next snapshot re-anchors the book. Futures bodies keep the recorded shape
``{"lastUpdateId":..,"E":..,"T":..,"bids":..,"asks":..}``; a rolled book carries the
``E`` and ``T`` of the last frame applied.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson

from booktape.binance import (
    Level,
    Market,
    decode_depth,
    decode_snapshot,
    is_stale,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook, Side
from booktape.errors import BooktapeError
from simulator.recordings import RecordedFrame, RecordedSnapshot, Recording

log = logging.getLogger(__name__)

Deliver = Callable[[str, bytes, bool], None]  # (stream, payload, is_depth)

_DIFF_DEPTH = re.compile(r"^[a-z0-9_.\-]+@depth(?:@\d+ms)?$")
_TRADE_TIME = re.compile(rb'"T"\s*:\s*(\d+)')


def is_diff_depth(stream: str) -> bool:
    """``<sym>@depth``, ``<sym>@depth@100ms`` (also futures' ``@0ms``...), not ``@depth20``."""
    return _DIFF_DEPTH.match(stream) is not None


@dataclass(frozen=True, slots=True)
class _Replayed:
    """A depth frame the replay has passed, kept until a later anchor no longer needs it."""

    prev_id: int  # spot U - 1, futures pu
    last_id: int  # u
    times: tuple[int, int] | None  # futures: (E, T)
    frame: bytes


def _times_of(doc_or_frame: bytes, event_time: int | None = None) -> tuple[int, int] | None:
    """Futures ``(E, T)`` of a frame (``event_time`` given) or of a snapshot body."""
    if event_time is not None:
        found = _TRADE_TIME.search(doc_or_frame, 0, 200)
        return None if found is None else (event_time, int(found.group(1)))
    doc = orjson.loads(doc_or_frame)
    if isinstance(doc.get("E"), int) and isinstance(doc.get("T"), int):
        return doc["E"], doc["T"]
    return None


def _body(
    last_update_id: int,
    bids: list[Level] | tuple[Level, ...],
    asks: list[Level] | tuple[Level, ...],
    times: tuple[int, int] | None,
) -> bytes:
    doc: dict[str, object] = {"lastUpdateId": last_update_id}
    if times is not None:
        doc["E"], doc["T"] = times
    doc["bids"] = [list(level) for level in bids]
    doc["asks"] = [list(level) for level in asks]
    return orjson.dumps(doc)


class RollingBook:
    """One symbol's REST book at the replay point (pure: fed frames and snapshots)."""

    def __init__(self, symbol: str, market: Market, first: RecordedSnapshot | None) -> None:
        self.symbol = symbol
        self.market = market
        self.anchor = first  # served when there is no rolled book
        self.book: OrderBook | None = None  # None before the first anchor or after a gap
        self._times: tuple[int, int] | None = None  # futures: E and T of the book's state
        self._kept: list[_Replayed] = []  # depth frames replayed past the anchor's id

    def on_frame(self, frame: bytes) -> None:
        """A depth frame was replayed. Raises FrameError for a frame without ids."""
        header = parse_depth_header(frame, self.market)
        times = _times_of(frame, header.event_time) if self.market.is_futures else None
        replayed = _Replayed(header.prev_id, header.last_id, times, frame)
        self._kept.append(replayed)
        if self.book is not None:
            self._apply(self.book, replayed)

    def on_snapshot(self, snapshot: RecordedSnapshot) -> None:
        """The replay reached a recorded snapshot: re-anchor on it, roll to the present."""
        decoded = decode_snapshot(snapshot.body)
        book = OrderBook()
        book.load_snapshot(decoded)
        self.anchor, self.book = snapshot, book
        self._times = _times_of(snapshot.body) if self.market.is_futures else None
        self._kept = [r for r in self._kept if r.last_id > decoded.last_update_id]
        for replayed in self._kept:
            if not self._apply(book, replayed):
                break

    def _apply(self, book: OrderBook, replayed: _Replayed) -> bool:
        """Roll ``book`` (the rolled book) by one frame; False when it does not join."""
        cur = book.update_id
        assert cur is not None
        if is_stale(cur, replayed.last_id):
            return True
        if not splices(cur, replayed.prev_id, replayed.last_id):
            log.warning(
                "replay book broken",
                extra={"symbol": self.symbol, "update_id": cur, "prev_id": replayed.prev_id},
            )
            self.book = None  # wait for the next recorded snapshot
            return False
        book.apply(decode_depth(replayed.frame, self.market))
        if replayed.times is not None:
            self._times = replayed.times
        return True

    def body(self, limit: int) -> bytes | None:
        """The depth body now, at most ``limit`` levels a side (None: nothing recorded)."""
        if self.book is not None and self.book.update_id is not None:
            bids, asks = self.book.top(limit)
            return _body(self.book.update_id, bids, asks, self._times)
        if self.anchor is None:
            return None
        snap = decode_snapshot(self.anchor.body)
        if len(snap.bids) <= limit and len(snap.asks) <= limit:
            return self.anchor.body  # verbatim
        times = _times_of(self.anchor.body) if self.market.is_futures else None
        return _body(snap.last_update_id, snap.bids[:limit], snap.asks[:limit], times)

    def levels(self) -> tuple[int | None, list[Level], list[Level]]:
        if self.book is None:
            return None, [], []
        return self.book.update_id, self.book.levels(Side.BID), self.book.levels(Side.ASK)


def _timeline(recording: Recording) -> Iterator[RecordedFrame | RecordedSnapshot]:
    """Frames and snapshots in receive order (a snapshot before a frame of the same time)."""
    snapshots = iter(recording.snapshots)
    pending = next(snapshots, None)
    for frame in recording.frames:
        while pending is not None and pending.recv_ns <= frame.recv_ns:
            yield pending
            pending = next(snapshots, None)
        yield frame
    if pending is not None:
        yield pending
        yield from snapshots


class ReplayFeed:
    """Plays a recording once; REST and truth read its books."""

    def __init__(self, recording: Recording, speed: float, deliver: Deliver) -> None:
        self.recording = recording
        self.speed = speed
        self._deliver = deliver
        firsts: dict[str, RecordedSnapshot] = {}
        for snapshot in recording.snapshots:
            firsts.setdefault(snapshot.symbol, snapshot)
        self.books: dict[str, RollingBook] = {
            s: RollingBook(s, recording.market, firsts.get(s)) for s in recording.symbols()
        }
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.frames_sent = 0

    def symbols(self) -> list[str]:
        return sorted(self.books)

    def depth_body(self, symbol: str, limit: int) -> bytes | None:
        book = self.books.get(symbol)
        return None if book is None else book.body(limit)

    async def run(self) -> None:
        """Wait for :attr:`started`, then play every frame once at the recorded pace."""
        await self.started.wait()
        recording = self.recording
        log.info(
            "replay started",
            extra={
                "market": str(recording.market),
                "symbols": self.symbols(),
                "frames": len(recording.frames),
                "snapshots": len(recording.snapshots),
                "speed": self.speed,
            },
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first_ns: int | None = None
        for item in _timeline(recording):
            first_ns = item.recv_ns if first_ns is None else first_ns
            delay = t0 + (item.recv_ns - first_ns) / 1e9 / self.speed - loop.time()
            if delay > 0.001:
                await asyncio.sleep(delay)
            if isinstance(item, RecordedSnapshot):
                self._reached(item)
            else:
                self._play(item)
                if self.frames_sent % 64 == 0:
                    await asyncio.sleep(0)  # let the senders drain at high speed
        self.finished.set()
        log.info("replay finished", extra={"frames": self.frames_sent})

    def _play(self, frame: RecordedFrame) -> None:
        is_depth = is_diff_depth(frame.stream)
        if is_depth:
            try:
                self.books[frame.symbol].on_frame(frame.frame)
            except BooktapeError as exc:
                log.warning(
                    "replay frame unreadable", extra={"symbol": frame.symbol, "error": str(exc)}
                )
        self._deliver(frame.stream, frame.frame, is_depth)
        self.frames_sent += 1

    def _reached(self, snapshot: RecordedSnapshot) -> None:
        book = self.books[snapshot.symbol]
        try:
            book.on_snapshot(snapshot)
        except BooktapeError as exc:
            log.warning(
                "replay snapshot unreadable", extra={"symbol": snapshot.symbol, "error": str(exc)}
            )
            return
        rolled = None if book.book is None else book.book.update_id
        log.debug("replay re-anchored", extra={"symbol": snapshot.symbol, "update_id": rolled})
