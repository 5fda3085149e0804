"""Replay of a real recording instead of the market model.

Recorded frames (depth and any other recorded stream, e.g. ``bookTicker``) are handed to
the subscribed connections at the recorded pace, relative to the first frame, or ``speed``
times faster; payloads are byte-exact (a combined connection gets
``{"stream":"<name>","data":`` + payload + ``}``), with the recorded ``U``/``u`` boundaries.

REST depth answers with the book at the current replay point: the recording's first
snapshot for the symbol, rolled forward by the depth frames replayed so far
(:class:`booktape.book.OrderBook`, joined by the splice rule), truncated to the limit.
Before the replay reaches the snapshot's receive time, the snapshot itself is the answer.
A gap in the recorded frames drops the rolled book: the first snapshot is served again
until the next recorded snapshot is reached and rolled forward instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from booktape.binance import (
    Market,
    decode_depth,
    decode_snapshot,
    is_stale,
    parse_depth_header,
    splices,
)
from booktape.book import OrderBook, Side
from booktape.errors import BooktapeError
from simulator.recordings import RecordedSnapshot, Recording

Deliver = Callable[[str, bytes, bool], None]  # (stream, payload, is_depth)


@dataclass(slots=True)
class _RollingBook:
    """One symbol's book at the replay point."""

    market: Market
    snapshot: RecordedSnapshot | None = None  # the first recorded snapshot
    book: OrderBook | None = None  # None before the snapshot's point (or after a gap)
    buffered: list[bytes] = field(default_factory=list)  # depth frames before loading

    def load(self, snapshot: RecordedSnapshot) -> None:
        book = OrderBook()
        book.load_snapshot(decode_snapshot(snapshot.body))
        self.book = book
        pending, self.buffered = self.buffered, []
        for frame in pending:
            self.apply(frame)

    def apply(self, frame: bytes) -> None:
        if self.book is None:
            self.buffered.append(frame)
            return
        header = parse_depth_header(frame, self.market)
        cur = self.book.update_id
        assert cur is not None
        if is_stale(cur, header.last_id):
            return
        if not splices(cur, header.prev_id, header.last_id):
            self.book = None  # a recorded gap: wait for the next snapshot
            return
        self.book.apply(decode_depth(frame, self.market))

    def body(self, limit: int) -> bytes | None:
        if self.book is None or self.book.update_id is None:
            if self.snapshot is None:
                return None
            snap = decode_snapshot(self.snapshot.body)
            if len(snap.bids) <= limit and len(snap.asks) <= limit:
                return self.snapshot.body
            return orjson.dumps({"lastUpdateId": snap.last_update_id,
                                 "bids": [list(lv) for lv in snap.bids[:limit]],
                                 "asks": [list(lv) for lv in snap.asks[:limit]]})
        bids, asks = self.book.top(limit)
        return orjson.dumps({"lastUpdateId": self.book.update_id,
                             "bids": [list(lv) for lv in bids],
                             "asks": [list(lv) for lv in asks]})

    def levels(self) -> tuple[int | None, list[tuple[str, str]], list[tuple[str, str]]]:
        if self.book is None:
            return None, [], []
        return self.book.update_id, self.book.levels(Side.BID), self.book.levels(Side.ASK)


class ReplayFeed:
    """Plays a recording once; REST and truth read its books."""

    def __init__(self, recording: Recording, speed: float, deliver: Deliver) -> None:
        self.recording = recording
        self.speed = speed
        self._deliver = deliver
        self.books: dict[str, _RollingBook] = {
            s: _RollingBook(recording.market) for s in recording.symbols()}
        for snapshot in recording.snapshots:
            book = self.books[snapshot.symbol]
            if book.snapshot is None:
                book.snapshot = snapshot
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
        frames = self.recording.frames
        snapshots = [(s.recv_ns, s) for s in self.recording.snapshots]
        if not frames:
            self.finished.set()
            return
        loop = asyncio.get_running_loop()
        t0, first_ns = loop.time(), frames[0].recv_ns
        next_snap = 0
        for frame in frames:
            due = t0 + (frame.recv_ns - first_ns) / 1e9 / self.speed
            delay = due - loop.time()
            if delay > 0.001:
                await asyncio.sleep(delay)
            while next_snap < len(snapshots) and snapshots[next_snap][0] <= frame.recv_ns:
                self._reached_snapshot(snapshots[next_snap][1])
                next_snap += 1
            is_depth = "@depth" in frame.stream
            if is_depth:
                book = self.books[frame.symbol]
                with contextlib.suppress(BooktapeError):
                    book.apply(frame.frame)
            self._deliver(frame.stream, frame.frame, is_depth)
            self.frames_sent += 1
            if self.frames_sent % 64 == 0:
                await asyncio.sleep(0)  # let the senders drain at high speed
        for _, snapshot in snapshots[next_snap:]:
            self._reached_snapshot(snapshot)
        self.finished.set()

    def _reached_snapshot(self, snapshot: RecordedSnapshot) -> None:
        book = self.books[snapshot.symbol]
        if book.book is None:
            with contextlib.suppress(BooktapeError):
                book.load(snapshot)
