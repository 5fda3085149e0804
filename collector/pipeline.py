"""The durability pipeline: bounded queue -> spool on local disk -> sealed chunks -> uploads.

Feeds ``put`` items (one encoded record line each) into a bounded queue; ``put`` waits
when it is full, so backpressure reaches the socket readers and never the store. Three
stages run under :meth:`Pipeline.run`:

- the writer wakes every ``write_interval_s`` (sooner when ``batch_items`` records are
  queued, a putter waits, or :meth:`Pipeline.flush` is called), routes each queued record
  to its stream's open chunk (:class:`~collector.chunks.ChunkWriter`), appends what each
  chunk holds with one ``os.write`` (in the event loop's thread: see ``_write_out``),
  starts a background sync of the open files written since the last one every
  ``fsync_interval_s`` (one ``syncfs`` of the spool's filesystem on Linux, else an fsync
  per file), and cuts chunks on time, size and UTC midnight (a tick cuts them
  even when nothing arrives). A failing write (ENOSPC...) keeps the records in memory and
  is retried every ``write_retry_s``; the queue fills and ``put`` waits meanwhile.
  Nothing is dropped on purpose.
- the sealer compresses each cut chunk into ``sealed/<key>``, up to ``SEAL_BATCH`` chunks
  behind one durability barrier (:meth:`~collector.spool.Spool.seal_many`);
- the uploader (:class:`~collector.uploader.Uploader`) uploads, verifies, deletes.

A record is on disk (in the page cache: it survives ``kill -9``) at most
``write_interval_s`` (0.5 s) after its ``put``, and once :meth:`Pipeline.flush` returns after
it; an open file's data older than about ``fsync_interval_s`` (5 s) more is on stable storage
(power loss); a sealed chunk is durable (synced, renamed, synced) before it counts as sealed.
:meth:`Pipeline.recover` seals and queues what a crash left; :meth:`Pipeline.shutdown`
drains, seals and uploads within a deadline. Over ``spool_max_bytes`` the spool is "full":
metric, health reason and an error log at most once a ``log_interval_s``, while recording
goes on as long as the disk allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from booktape.errors import BooktapeError
from booktape.stores import Store
from collector.chunks import ChunkWriter, KeyClaims, OpenChunk, recover_open_file
from collector.config import CollectorSettings
from collector.metrics import Metrics
from collector.recordqueue import RecordQueue
from collector.spool import SealedChunk, SealJob, Spool, in_thread
from collector.syncfs import HAVE_SYNCFS, sync_and_close
from collector.types import Item
from collector.uploader import Backoff, Uploader

log = logging.getLogger("collector.pipeline")

#: Chunks sealed together, behind one durability barrier (Spool.seal_many): at the minute's
#: turn all ~1,500 spot symbols' chunks are cut at once.
SEAL_BATCH = 64


class PipelineClosedError(BooktapeError):
    """``put`` after ``shutdown``: the record was not accepted."""


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """Tuning that is not user configuration (tests shorten the times)."""

    tick_s: float = 0.5  # how often chunks whose time is up are cut without new records
    fsync_interval_s: float | None = 5.0  # sync open files this often (None: only on seal)
    batch_items: int = 2048  # at most this many records routed at once (bounds a loop stall)
    batch_bytes: int = 4 << 20
    write_interval_s: float = 0.5  # write what is pending this often (flush(): at once)
    # or as soon as this much is pending: bounds the records held between writes at high
    # rates. Each write is one os.write per chunk with data, ~20 us on ext4 whatever its
    # size: at 1,000 symbols and ~100 MB/s, 8 MiB meant a write-out every ~85 ms and
    # ~12,000 writes/s (CPU per frame 5.9-6.2 us); 32 MiB: 5.0-5.7 us. Real all-spot rates
    # (~7 MB/s) reach neither: they write every write_interval_s.
    write_bytes: int = 32 << 20
    write_retry_s: float = 1.0  # after a failed spool write (ENOSPC)
    seal_retry_s: float = 1.0
    backoff: Backoff = dataclasses.field(default_factory=Backoff)  # upload retries
    upload_timeout_s: float = 300.0  # one upload attempt, the store's own retries included
    log_interval_s: float = 60.0  # repeat a lasting error (spool full, uploads) this often
    uploads_unready_after_s: float = 30.0  # failing uploads make health() not ready
    zstd_level: int = 1  # vs 3: ~15 % less CPU per seal of ~1 MB, objects ~2 % smaller here


@dataclass(frozen=True, slots=True)
class PipelineHealth:
    """What /readyz and operators need to know about the pipeline."""

    spool_bytes: int
    spool_chunks: int
    spool_full: bool
    uploads_failing_since_ns: int | None
    last_upload_ns: int | None
    pending_uploads: int
    queue_depth: int
    reason: str | None  # why not ready; None when ready


class Pipeline:
    """Implements :class:`collector.types.RecordSink`; see the module docstring."""

    def __init__(
        self,
        settings: CollectorSettings,
        store: Store,
        metrics: Metrics,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        host: str | None = None,
        options: PipelineOptions | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.options = opts = options or PipelineOptions()
        self.spool = spool or Spool(settings.spool_dir, zstd_level=opts.zstd_level)
        self._clock_ns = clock_ns
        self._writer = ChunkWriter(
            self.spool,
            exchange=settings.exchange_name,
            region=settings.region,
            collector=settings.collector,
            host=host or socket.gethostname(),
            rotation_s=settings.rotation_s,
            chunk_max_bytes=settings.chunk_max_bytes,
        )
        self._uploader = Uploader(
            store,
            self.spool,
            metrics,
            concurrency=settings.upload_concurrency,
            clock_ns=clock_ns,
            backoff=opts.backoff,
            attempt_timeout_s=opts.upload_timeout_s,
            log_interval_s=opts.log_interval_s,
            on_change=self._refresh,
        )
        self._queue = RecordQueue(settings.queue_items, wake_at=opts.batch_items)
        self._seal_queue: asyncio.Queue[OpenChunk | None] = asyncio.Queue()
        self._keys = KeyClaims(self.spool)
        self._cut: list[OpenChunk] = []
        self._putting = 0
        self._put_count = 0
        self._written = 0  # items written to the spool
        self._flushing = 0  # callers waiting in flush()
        self._fsync_task: asyncio.Task[None] | None = None
        self._written_cond = asyncio.Condition()
        self._closing = False
        self._running = False
        self._writer_done = asyncio.Event()
        self._sealer_done = asyncio.Event()
        self._write_error: str | None = None
        self._errors_logged: dict[str, float] = {}
        self._full = False

    # --- the RecordSink side ----------------------------------------------------------

    def declare_stream(self, channel: str, symbol: str, extra: dict[str, object]) -> None:
        """Header ``extra`` fields for one stream's chunks, before its first record."""
        self._writer.declare(channel, symbol, extra)

    async def put(self, item: Item) -> None:
        """Queue one record; waits while the queue is full. Raises PipelineClosedError
        after shutdown, CodecError/InvalidNameError for an item no chunk can hold."""
        await self.put_many([item])

    async def put_many(self, items: list[Item], *, checked: bool = False) -> None:
        """Queue records in order; waits while the queue is full (then the whole batch goes
        in, even past the bound). Raises as :meth:`put`, before queueing any of them.
        ``checked``: see :meth:`collector.types.RecordSink.put_many` (the per-item check,
        ~0.45 µs, is skipped)."""
        if self._closing:
            raise PipelineClosedError("the pipeline is shutting down: record not accepted")
        if not checked:
            self._writer.check(items)
        self._putting += 1
        try:
            await self._queue.put_many(items)
        finally:
            self._putting -= 1
        self._put_count += len(items)

    async def flush(self) -> None:
        """Wait until every item put before this call is written to its spool file (the
        writer writes at once while someone waits here)."""
        target = self._put_count
        self._flushing += 1
        self._queue.wake()
        try:
            async with self._written_cond:
                await self._written_cond.wait_for(lambda: self._written >= target)
        finally:
            self._flushing -= 1

    # --- lifecycle --------------------------------------------------------------------

    async def recover(self) -> int:
        """Seal the open files a crash left and queue every sealed chunk for upload.

        Call once, before :meth:`run` and before any ``put``; returns the chunks queued.
        """
        if self._running or self._writer.chunks or self._put_count:
            raise RuntimeError("recover() must run before run() and put()")
        sealed, strangers = await in_thread(self.spool.list_sealed)
        for path in strangers:
            log.warning("not a chunk, left in the spool", extra={"path": str(path)})
        for chunk in sealed:
            self._keys.remember(chunk.key)
        recovered: list[SealedChunk | OpenChunk] = []
        for path in await in_thread(self.spool.list_open):
            found = await in_thread(recover_open_file, self.spool, path, self._keys)
            if found is not None:
                recovered.append(found)
        for found in [*recovered, *sealed]:
            if isinstance(found, SealedChunk):
                self._uploader.add(found)
            else:
                self._seal_queue.put_nowait(found)  # sealing failed: run() retries it
        self.metrics.chunks_sealed.inc(sum(isinstance(c, SealedChunk) for c in recovered))
        self._refresh()
        if recovered or sealed:
            usage = self.spool.usage.snapshot()
            log.info(
                "spool recovered",
                extra={"sealed_now": len(recovered), "chunks": usage.chunks, "bytes": usage.bytes},
            )
        return len(recovered) + len(sealed)

    async def run(self) -> None:
        """Run the writer, the sealer and the uploader until cancelled."""
        if self._running:
            raise RuntimeError("the pipeline is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._write_loop(), name="spool-writer")
                tg.create_task(self._seal_loop(), name="spool-sealer")
                tg.create_task(self._uploader.run(), name="uploader")
        finally:
            self._running = False

    async def shutdown(self, deadline_s: float) -> bool:
        """Stop accepting records, write and seal everything, upload within ``deadline_s``.

        True if nothing is left pending; what is not uploaded stays sealed in the spool
        for the next start. Runs the stages itself if :meth:`run` is not running.
        """
        if not self._closing:
            self._closing = True
            log.info("pipeline shutting down", extra={"queued": len(self._queue)})
            self._queue.wake()  # the writer
        await asyncio.sleep(0)  # let a run() task created just before us start first
        owned = None if self._running else asyncio.create_task(self.run(), name="pipeline")
        waiter = asyncio.create_task(self._drain())
        try:
            await asyncio.wait(
                [waiter, *([owned] if owned else [])],
                timeout=deadline_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            drained = self._drained()
            waiter.cancel()
            for task in (waiter, owned):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._refresh()
        usage = self.spool.usage.snapshot()
        extra = {"spool_chunks": usage.chunks, "spool_bytes": usage.bytes}
        if drained:
            log.info("pipeline stopped, spool drained", extra=extra)
        else:
            log.warning("pipeline stopped with chunks left in the spool", extra=extra)
        return drained

    async def _drain(self) -> None:
        await self._writer_done.wait()
        await self._sealer_done.wait()
        await self._uploader.wait_idle()

    def _drained(self) -> bool:
        return (
            self._writer_done.is_set()
            and self._sealer_done.is_set()
            and self._uploader.pending == 0
        )

    # --- writer -------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            await self._write_until_closed()
        finally:  # cancelled without shutdown: the open files stay for recover()
            self._abandon()
            if self._fsync_task is not None:  # its thread ends before we go on
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([self._fsync_task])
        self._writer_done.set()
        self._seal_queue.put_nowait(None)

    async def _write_until_closed(self) -> None:
        loop = asyncio.get_running_loop()
        opts = self.options
        queue = self._queue
        next_tick = loop.time() + opts.tick_s
        next_write = loop.time() + opts.write_interval_s
        next_fsync = loop.time() + (opts.fsync_interval_s or 0)
        cut = self._cut  # chunks taken out, to write and hand to the sealer
        routed = held = 0  # items routed, bytes routed since the last write
        while True:
            if not (self._flushing and (queue or routed > self._written)):
                until = min(next_tick, next_write) if not self._closing else loop.time() + 0.01
                await queue.wait(until - loop.time())
            now = loop.time()
            final = self._closing and self._putting == 0
            due = final or self._flushing or now >= next_write
            while queue:  # all of it when a write is due, else a batch
                batch = queue.take(opts.batch_items, opts.batch_bytes)
                held += self._writer.route_many(batch, cut)
                routed += len(batch)
                if not due:
                    break
            if now >= next_tick:
                next_tick = now + opts.tick_s
                cut += self._writer.expire(self._clock_ns())
                self._refresh()
            final = final and not queue
            if final:
                cut += self._writer.take_all()
            if due or cut or held >= opts.write_bytes:
                await self._write_out(cut)
                next_write, held = loop.time() + opts.write_interval_s, 0
                for chunk in cut:
                    self._writer.close(chunk)
                    self._seal_queue.put_nowait(chunk)
                cut.clear()
                if routed > self._written:
                    self._refresh()
                    self._written = routed
                    async with self._written_cond:
                        self._written_cond.notify_all()
            if opts.fsync_interval_s and loop.time() >= next_fsync:
                next_fsync = loop.time() + opts.fsync_interval_s
                self._fsync_open()
            if final:
                return

    def _abandon(self) -> None:
        """Close the open files as they are; say what could not be written."""
        chunks = [*self._cut, *self._writer.take_all()]
        self._cut.clear()
        held = sum(len(p) for c in chunks for p in c.pending)
        for chunk in chunks:
            self._writer.close(chunk, abandon=True)
        if held or self._queue:
            log.error(
                "writer stopped with records not on disk: they are lost",
                extra={"held_bytes": held, "queued": len(self._queue)},
            )

    async def _write_out(self, cut: list[OpenChunk]) -> None:
        """Write every pending record; on failure keep them and retry until it works.

        The writes run in the event loop's thread: a worker thread would take the GIL
        back after each ``os.write`` (up to a switch interval, 5 ms, while the loop is
        busy), which made a thousand small appends take longer than the reading. They are
        few (one per chunk every ``write_interval_s``) and go to the page cache.
        """
        chunks = [c for c in (*cut, *self._writer.chunks.values()) if c.pending]
        while chunks:
            try:
                self._writer.flush(chunks)
                break
            except OSError as exc:
                held = sum(len(p) for c in chunks for p in c.pending)
                self._write_error = f"spool write failing ({exc.strerror or exc}): recording paused"
                self._log_error(
                    "write",
                    "spool write failed; records held in memory, retrying",
                    {"errno": exc.errno, "error": str(exc), "held_bytes": held},
                )
                await asyncio.sleep(self.options.write_retry_s)
        if self._write_error is not None:
            self._write_error = None
            self._errors_logged.pop("write", None)
            log.warning("spool writes resumed")

    def _fsync_open(self) -> None:
        """Start a sync of the open files written since the last one, in a worker thread
        that works on duplicated descriptors: the writer does not wait for it. On Linux it
        is one ``syncfs`` of the spool's filesystem (:func:`~collector.syncfs.sync_and_close`;
        1,500 fsyncs every 5 s cost ~0.03 core), elsewhere an fsync per file. Skipped while
        the previous one still runs."""
        if self._fsync_task is not None and not self._fsync_task.done():
            return
        chunks = self._writer.chunks.values()
        fds = self._writer.dup_unsynced(chunks, one_per_filesystem=HAVE_SYNCFS)
        if fds:
            self._fsync_task = asyncio.create_task(self._fsync_fds(fds), name="spool-fsync")

    async def _fsync_fds(self, fds: list[int]) -> None:
        try:
            await in_thread(sync_and_close, fds)
        except OSError as exc:
            self._log_error("fsync", "sync of open chunks failed", {"error": str(exc)})

    # --- sealer -------------------------------------------------------------------------

    async def _seal_loop(self) -> None:
        """Seal what is queued, up to ``SEAL_BATCH`` chunks at a time (one group commit
        each: :meth:`~collector.spool.Spool.seal_many`), until the ``None`` of shutdown."""
        queue = self._seal_queue
        done = False
        while not done:
            batch = [await queue.get()]
            while len(batch) < SEAL_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            chunks = [chunk for chunk in batch if chunk is not None]
            done = len(chunks) < len(batch)
            if chunks:
                await self._seal(chunks)
        self._sealer_done.set()

    async def _seal(self, chunks: list[OpenChunk]) -> None:
        """Seal ``chunks``, retrying those that failed every ``seal_retry_s`` until done."""
        jobs = []
        for chunk in chunks:
            assert chunk.path is not None, "a cut chunk was written"
            key = chunk.claimed_key or self._keys.claim(chunk.key)
            jobs.append((chunk, SealJob(chunk.path, chunk.written, key)))
        while jobs:
            results = await in_thread(self.spool.seal_many, [job for _, job in jobs])
            failed: list[tuple[OpenChunk, SealJob]] = []
            first_error: dict[str, object] = {}
            for (chunk, job), result in zip(jobs, results, strict=True):
                if isinstance(result, OSError):
                    failed.append((chunk, job))
                    first_error = first_error or {"key": job.key.key, "error": str(result)}
                    continue
                self.metrics.chunks_sealed.inc()
                log.debug(
                    "chunk sealed",
                    extra={"key": job.key.key, "records": chunk.records, "bytes": chunk.written,
                           "compressed": result.size},
                )  # fmt: skip
                self._uploader.add(result)
            jobs = failed
            if failed:
                extra = {**first_error, "chunks": len(failed)}
                self._log_error("seal", "sealing a chunk failed, retrying", extra)
                await asyncio.sleep(self.options.seal_retry_s)
        self._errors_logged.pop("seal", None)
        self._refresh()

    # --- state ----------------------------------------------------------------------------

    def _log_error(self, what: str, message: str, extra: dict[str, object]) -> None:
        """Log a lasting error once, then at most once per ``log_interval_s``."""
        now = time.monotonic()
        last = self._errors_logged.get(what)
        if last is None or now - last >= self.options.log_interval_s:
            self._errors_logged[what] = now
            log.error(message, extra=extra)

    def _refresh(self) -> None:
        """Update the spool metrics and the spool-full state (logged once a minute)."""
        usage = self.spool.usage.snapshot()
        limit = self.settings.spool_max_bytes
        self.metrics.spool_bytes.set(usage.bytes)
        self.metrics.spool_chunks.set(usage.chunks)
        full = usage.bytes > limit
        self.metrics.spool_full.set(1 if full else 0)
        if full:
            self._log_error(
                "full",
                "spool full: recording goes on while the disk allows",
                {"spool_bytes": usage.bytes, "spool_max_bytes": limit,
                 "pending_uploads": self._uploader.pending},
            )  # fmt: skip
        elif self._full:
            log.warning("spool below its bound again", extra={"spool_bytes": usage.bytes})
        self._full = full

    def health(self) -> PipelineHealth:
        """A snapshot for /readyz; ``reason`` says why the pipeline is not ready."""
        usage = self.spool.usage.snapshot()
        limit = self.settings.spool_max_bytes
        full = usage.bytes > limit
        since = self._uploader.failing_since_ns
        reason = None
        if self._write_error is not None:
            reason = self._write_error
        elif full:
            reason = f"spool full: {usage.bytes} bytes over the {limit} byte bound"
        elif since is not None:
            failing_s = (self._clock_ns() - since) / 1e9
            if failing_s >= self.options.uploads_unready_after_s:
                reason = f"uploads failing for {failing_s:.0f} s: {self._uploader.last_error}"
        return PipelineHealth(
            spool_bytes=usage.bytes,
            spool_chunks=usage.chunks,
            spool_full=full,
            uploads_failing_since_ns=since,
            last_upload_ns=self._uploader.last_upload_ns,
            pending_uploads=self._uploader.pending,
            queue_depth=len(self._queue),
            reason=reason,
        )
