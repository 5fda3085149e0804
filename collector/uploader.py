"""The uploader: sealed chunks to the store, verified, oldest first, retried forever.

``upload_concurrency`` workers take the oldest sealed chunk (by its key's receive time),
``put_file`` it, and verify what the store answered: the size, and the ETag against the
file's MD5 where the ETag is a plain MD5 (a multipart ``<hex>-N`` ETag was already checked
by the S3 store). Only then is the local file deleted (its emptied folders too, unless they
are the current UTC day's, where the symbol's next chunk will be sealed).

A failed attempt (any :class:`~booktape.errors.StoreError`, a verification mismatch, or
no answer within ``attempt_timeout_s``: a frozen server must not wedge a worker) puts the
chunk back and closes a shared gate for a capped, jittered backoff (1 s doubling
to 30 s by default): a store that is down is probed by one round of attempts per backoff,
not hammered by every worker. There is no retry limit: a store down for ten minutes loses
nothing, and uploads resume by themselves. Logs: one warning when a failure streak starts,
one every ``log_interval_s`` while it lasts, one info line when it ends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from booktape.errors import (
    StoreAccessError,
    StoreError,
    StoreIntegrityError,
    StoreUnavailableError,
)
from booktape.keys import NS_PER_DAY
from booktape.stores import ObjectInfo, Store
from collector.metrics import Metrics
from collector.spool import SealedChunk, Spool, file_md5, in_thread

log = logging.getLogger("collector.uploader")

_PLAIN_MD5: Final = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped, jittered exponential backoff: the n-th failure waits about base * 2^(n-1)."""

    base_s: float = 1.0
    cap_s: float = 30.0

    def delay_s(self, failures: int, rand: float) -> float:
        """The wait after ``failures`` consecutive failures; ``rand`` in [0, 1) jitters it
        over [d/2, d)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(max(failures, 1) - 1, 32))
        return ceiling * (0.5 + rand / 2)


def verify(info: ObjectInfo, size: int, md5: str) -> None:
    """Raise StoreIntegrityError unless the store's answer matches the local file."""
    if info.size != size:
        raise StoreIntegrityError(f"{info.key}: stored {info.size} bytes, the file has {size}")
    etag = info.etag.lower()
    if _PLAIN_MD5.fullmatch(etag) and etag != md5:
        raise StoreIntegrityError(f"{info.key}: ETag {etag} is not the file's MD5 {md5}")


@dataclass(order=True, frozen=True, slots=True)
class _Entry:
    start_ns: int
    seq: int
    chunk: SealedChunk = field(compare=False)


class Uploader:
    """Uploads sealed chunks until cancelled; see the module docstring."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        metrics: Metrics,
        *,
        concurrency: int,
        clock_ns: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
        attempt_timeout_s: float = 300.0,
        log_interval_s: float = 60.0,
        on_change: Callable[[], None] = lambda: None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.concurrency = concurrency
        self.backoff = backoff or Backoff()
        self.attempt_timeout_s = attempt_timeout_s
        self.failing_since_ns: int | None = None  # first failure of the current streak
        self.last_upload_ns: int | None = None
        self.last_error: str | None = None
        self._clock_ns = clock_ns
        self._log_interval_s = log_interval_s
        self._on_change = on_change
        self._rand = rand
        self._queue: asyncio.PriorityQueue[_Entry] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._streak = 0  # failed rounds in a row
        self._retry_at = 0.0  # loop time before which nobody tries
        self._logged_at = 0.0

    @property
    def pending(self) -> int:
        """Sealed chunks not yet uploaded (queued or in flight)."""
        return self._queue.qsize() + self._in_flight

    def add(self, chunk: SealedChunk) -> None:
        """Queue a sealed chunk; the oldest (by key time) goes first."""
        self._queue.put_nowait(_Entry(chunk.key.start_ns, next(self._seq), chunk))
        self._idle.clear()

    async def wait_idle(self) -> None:
        """Return once nothing is queued or in flight."""
        await self._idle.wait()

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for n in range(self.concurrency):
                tg.create_task(self._worker(), name=f"upload-{n}")

    async def _worker(self) -> None:
        while True:
            entry = await self._queue.get()
            self._in_flight += 1
            done = False
            try:
                await self._wait_gate()
                done = await self._attempt(entry.chunk)
            finally:
                self._in_flight -= 1
                if not done and entry.chunk.path.exists():  # a stat: cheap enough here
                    self._queue.put_nowait(entry)  # also when cancelled: keep the count true
                if self.pending == 0:
                    self._idle.set()

    async def _wait_gate(self) -> None:
        loop = asyncio.get_running_loop()
        # The gate moves while we sleep (another worker failed): look again after waking.
        while (delay := self._retry_at - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    async def _attempt(self, chunk: SealedChunk) -> bool:
        """One upload; True when the chunk is done with (uploaded, or vanished)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        key = chunk.key.key
        try:
            md5 = chunk.md5
            if md5 is None:
                md5 = await in_thread(file_md5, chunk.path)
            try:
                async with asyncio.timeout(self.attempt_timeout_s):
                    info = await self.store.put_file(key, chunk.path)
            except TimeoutError:
                raise StoreUnavailableError(
                    f"put {key!r}: no answer within {self.attempt_timeout_s} s"
                ) from None
            verify(info, chunk.size, md5)
        except (StoreError, OSError) as exc:
            if not await in_thread(chunk.path.exists):
                log.error("sealed chunk vanished from the spool", extra={"key": key})
                self.spool.usage.removed_sealed(chunk.size)
                self._on_change()
                return True
            self._failed(key, exc)
            return False
        self._succeeded(key, chunk.size, loop.time() - started)
        past_day = chunk.key.start_ns // NS_PER_DAY < self._clock_ns() // NS_PER_DAY
        try:  # today's folders stay for the symbol's next chunk (see Spool.remove_sealed)
            await in_thread(self.spool.remove_sealed, chunk, prune=past_day)
        except OSError as exc:
            log.error("cannot delete an uploaded chunk", extra={"key": key, "error": str(exc)})
        self._on_change()
        return True

    def _succeeded(self, key: str, size: int, elapsed_s: float) -> None:
        self.metrics.uploads.inc()
        self.metrics.upload_seconds.observe(elapsed_s)
        self.last_upload_ns = self._clock_ns()
        log.debug("chunk uploaded", extra={"key": key, "bytes": size})
        if self.failing_since_ns is not None:
            log.info(
                "uploads resumed",
                extra={
                    "failed_rounds": self._streak,
                    "outage_s": round((self.last_upload_ns - self.failing_since_ns) / 1e9, 3),
                },
            )
        self.failing_since_ns = None
        self.last_error = None
        self._streak = 0
        self._retry_at = 0.0

    def _failed(self, key: str, exc: BaseException) -> None:
        self.metrics.upload_failures.inc()
        now = asyncio.get_running_loop().time()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if now >= self._retry_at:  # the first failure of this round of attempts
            self._streak += 1
            delay = self.backoff.delay_s(self._streak, self._rand())
            self._retry_at = now + delay
        level = logging.ERROR if isinstance(exc, StoreAccessError) else logging.WARNING
        if self.failing_since_ns is None:
            self.failing_since_ns = self._clock_ns()
            self._logged_at = now
            log.log(level, "upload failed, retrying", extra={"key": key, "error": self.last_error})
        elif now - self._logged_at >= self._log_interval_s:
            self._logged_at = now
            log.log(
                level,
                "uploads still failing",
                extra={
                    "key": key,
                    "error": self.last_error,
                    "failing_s": round((self._clock_ns() - self.failing_since_ns) / 1e9, 1),
                    "pending": self.pending,
                },
            )
