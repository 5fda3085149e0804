"""The bounded record queue between the feeds and the spool writer.

Feeds put whole batches (one per websocket read: :meth:`RecordQueue.put_many`), which wait,
first come first served, while the queue holds ``limit`` items or more; an admitted batch
goes in whole, so the queue may pass its bound by one batch per waiting feed. The writer
sleeps until its own deadline (it writes every ``write_interval_s``), until ``wake_at``
items are queued, until a putter has to wait, or until :meth:`RecordQueue.wake`: a put does
not wake it each time (at 100 ms depth rates a wake-up per put cost as much as the frames).
It takes batches of at most a number of items and bytes. It replaces an ``asyncio.Queue`` of
single items, whose ``put``/``get`` per item cost more than the rest of a frame's path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from collector.types import Item


class RecordQueue:
    """A FIFO of items, bounded for the putters; one consumer (the spool writer)."""

    def __init__(self, limit: int, wake_at: int | None = None) -> None:
        self._items: deque[Item] = deque()
        self._limit = max(1, limit)
        self._wake_at = max(1, min(wake_at or self._limit, self._limit // 2))
        self._putters: deque[asyncio.Future[None]] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._woken = False  # wake() came while the writer was not waiting

    @property
    def limit(self) -> int:
        return self._limit

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._limit

    async def put_many(self, items: list[Item]) -> None:
        """Append ``items``; waits (in turn) while the queue is full."""
        while self.full() or self._putters:
            self.wake()  # the writer makes room
            putter = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            except BaseException:
                putter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(putter)
                if not self.full():
                    self._wake_putter()  # pass the turn on
                raise
            if not self.full():
                break
        self._items.extend(items)
        if len(self._items) >= self._wake_at:
            self.wake()
        if not self.full():
            self._wake_putter()

    async def wait(self, timeout_s: float) -> bool:
        """Wait until ``wake_at`` items are queued or :meth:`wake` is called (at most
        ``timeout_s``); True if items are queued."""
        if len(self._items) < self._wake_at and not self._woken and timeout_s > 0:
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await getter
            except TimeoutError:
                pass
            finally:
                self._getter = None
        self._woken = False
        return bool(self._items)

    def wake(self) -> None:
        """Wake the writer waiting in :meth:`wait`."""
        getter = self._getter
        if getter is None:
            self._woken = True
        elif not getter.done():
            getter.set_result(None)

    def take(self, max_items: int, max_bytes: int) -> list[Item]:
        """Up to ``max_items`` items (and about ``max_bytes`` of lines), oldest first."""
        items = self._items
        if len(items) <= max_items:
            batch = list(items)
            if sum(len(item.line) for item in batch) <= max_bytes:
                items.clear()
                self._wake_putter()
                return batch
        batch = []
        size = 0
        while items and len(batch) < max_items and size < max_bytes:
            item = items.popleft()
            batch.append(item)
            size += len(item.line)
        self._wake_putter()
        return batch

    def _wake_putter(self) -> None:
        while self._putters:
            putter = self._putters.popleft()
            if not putter.done():
                putter.set_result(None)
                return
