"""The Binance feed: connections for every symbol, rotations, reconnects, snapshots, listing.

Symbols are split into *slots* of ``streams_per_connection``; each slot is served by one
combined-stream connection at a time, by two during a rotation. Per symbol the feed knows
its *primary* connection: the one whose continuous run of events, joined to the runs
before it, makes the symbol's recording gap-free since its *coverage* began (the previous
id of the first event of that run). Coverage restarts when a connection is (re)opened or
the primary breaks continuity; then, once >= 2 events are buffered, a snapshot is asked
for (:mod:`collector.snapshots`), whose freshness is judged against the coverage start.

Rotation (make-before-break), ahead of the 24 h cut at a random age in
``[lifetime_min_s, lifetime_max_s]`` or at once on ``serverShutdown``: a successor
connection for the same streams is opened while the old one goes on recording; each
symbol moves to the successor as soon as the successor's run starts at or before the
last id the old one recorded (:func:`booktape.binance.covers_handover`): the union of
both recordings is then continuous. When every symbol has moved, the old connection is
closed. If the old one ends first, the symbols that had not moved are treated as
reconnected (new coverage, snapshots); if the successor fails, the old one stays and the
rotation is retried after a backoff. A handover that takes longer than
``handover_timeout_s`` is logged and the old connection is kept until it closes.

Unplanned ends (server close, drop, stale) are reconnects: paced by the process-wide
attempt limit and a jittered backoff per slot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from booktape.binance import WEIGHT_LIMIT_PER_MINUTE, covers_handover
from booktape.codec import encode_conn
from collector.backoff import AttemptPacer, Backoff, classify_connect_error, fatal_in
from collector.config import ALL, CollectorSettings
from collector.connection import ConnectionOptions, FeedConnection
from collector.metrics import Metrics
from collector.snapshots import SnapshotScheduler, SnapshotTimers, WeightBudget
from collector.symbols import ListingUnavailableError, diff_listing, fetch_trading_symbols
from collector.types import Item, RecordSink

log = logging.getLogger("collector.feed")

HEALTHY_AFTER_S = 10.0  # a connection that lived this long (with frames) resets the backoff
OFFSET_WINDOW_NS = 1_000_000_000  # clock offset: the smallest of each second's frames


@dataclass(frozen=True, slots=True)
class FeedHealth:
    connected: bool  # every symbol has a live connection
    connections: int
    last_frame_ns: int | None
    rest_banned_until_ns: int | None
    reason: str | None  # why not ready, None when connected


@dataclass(frozen=True, slots=True)
class FeedTuning:
    """Timers and limits that are Binance's facts or internal choices, settable for tests."""

    handover_timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    weight_limit: int = WEIGHT_LIMIT_PER_MINUTE
    weight_window_s: float = 60.0
    ping_interval_s: float = 20.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    listing_retry_s: float = 60.0
    snapshots: SnapshotTimers = field(default_factory=SnapshotTimers)


@dataclass(slots=True)
class _SymbolState:
    slot: _Slot  # the slot serving the symbol (on_depth: one lookup a frame)
    primary: FeedConnection | None = None
    coverage_first_prev: int | None = None
    coverage_events: int = 0
    snapshot_due: bool = True


@dataclass(eq=False, slots=True)
class _Slot:
    symbols: list[str]
    backoff: Backoff
    conn: FeedConnection | None = None
    successor: FeedConnection | None = None
    handover_done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def live(self) -> list[FeedConnection]:
        return [c for c in (self.conn, self.successor) if c is not None and c.is_open]


async def _first(*events: asyncio.Event, within: float | None = None) -> None:
    """Wait until one of ``events`` is set, or ``within`` seconds."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class BinanceFeed:
    """Records diff-depth streams of the configured symbols; see the module docstring."""

    def __init__(
        self,
        settings: CollectorSettings,
        sink: RecordSink,
        metrics: Metrics,
        *,
        session: aiohttp.ClientSession,
        clock_ns: Callable[[], int] = time.time_ns,
        rand: random.Random | None = None,
        tuning: FeedTuning | None = None,
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._metrics = metrics
        self._session = session
        self._clock_ns = clock_ns
        self._rand = rand or random.Random()
        self._tuning = tuning or FeedTuning()
        t = self._tuning
        self._options = ConnectionOptions(
            ws_base=settings.ws_base,
            market=settings.market,
            depth_speed_ms=settings.depth_speed_ms,
            stale_after_s=settings.stale_after_s,
            region=settings.region,
            ping_interval_s=t.ping_interval_s,
            open_timeout_s=t.open_timeout_s,
            close_timeout_s=t.close_timeout_s,
        )
        self._pacer = AttemptPacer(settings.connect_attempts_per_5min)
        self.budget = WeightBudget(
            settings.weight_share,
            metrics,
            limit=t.weight_limit,
            window_s=t.weight_window_s,
            clock_ns=clock_ns,
        )
        self.snapshots = SnapshotScheduler(
            market=settings.market,
            rest_base=settings.rest_base,
            limit=settings.snapshot_limit,
            interval_s=settings.snapshot_interval_s,
            session=session,
            budget=self.budget,
            sink=sink,
            metrics=metrics,
            first_prev=self._first_prev,
            clock_ns=clock_ns,
            timers=t.snapshots,
            rand=self._rand,
        )
        self._states: dict[str, _SymbolState] = {}
        self._slots: list[_Slot] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._boot = f"{clock_ns() // 1_000_000_000:x}"
        self._seq = 0
        self._last_frame_ns: int | None = None
        self._offset_min: int | None = None
        self._offset_until = 0

    # --- the public surface -------------------------------------------------------

    async def run(self) -> None:
        """Record until cancelled; FeedFatalError when the exchange refuses our requests."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self.snapshots.run())
                if self.settings.symbols == (ALL,):
                    symbols = await self._read_listing(retry=True)
                    tasks.create_task(self._refresh_listing())
                else:
                    symbols = list(self.settings.symbols)
                await self._add(symbols)
        except BaseExceptionGroup as group:
            fatal = fatal_in(group)
            if fatal is not None:
                raise fatal from group
            raise

    def health(self) -> FeedHealth:
        conns = {c.id for slot in self._slots for c in slot.live()}
        missing = [
            s for s, st in self._states.items() if st.primary is None or not st.primary.is_open
        ]
        reason: str | None = None
        if not self._states:
            reason = "no symbols yet (reading the listing)"
        elif missing:
            reason = f"{len(missing)} of {len(self._states)} symbols without a live connection"
            reason += f" ({', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''})"
        banned = self.budget.banned_until_ns if self.budget.banned() else None
        return FeedHealth(reason is None, len(conns), self._last_frame_ns, banned, reason)

    def symbols(self) -> list[str]:
        """The symbols being recorded now."""
        return sorted(self._states)

    async def apply_listing(self, listed: list[str]) -> None:
        """Subscribe new listings and close delisted symbols (``ALL`` refresh)."""
        change = diff_listing(self._states, listed)
        if change:
            log.info(
                "listing changed",
                extra={"added": list(change.added), "removed": list(change.removed)},
            )
        for symbol in change.removed:
            await self._remove(symbol)
        await self._add(list(change.added))

    # --- symbols and slots --------------------------------------------------------

    async def _add(self, symbols: list[str]) -> None:
        assert self._tasks is not None, "run() first"
        per = self.settings.streams_per_connection
        pending = [s for s in symbols if s not in self._states]
        for slot in self._slots:
            room = per - len(slot.symbols)
            if room <= 0 or not slot.symbols or not pending:
                continue
            part, pending = pending[:room], pending[room:]
            self._attach(slot, part)
            for conn in slot.live():
                await conn.subscribe(part)
        while pending:
            part, pending = pending[:per], pending[per:]
            slot = _Slot(
                [], Backoff(self._tuning.backoff_base_s, self._tuning.backoff_cap_s, self._rand)
            )
            self._attach(slot, part)
            self._slots.append(slot)
            self._tasks.create_task(self._run_slot(slot))

    def _attach(self, slot: _Slot, symbols: list[str]) -> None:
        slot.symbols.extend(symbols)
        for symbol in symbols:
            primary = slot.conn if slot.conn is not None and slot.conn.is_open else None
            self._states[symbol] = _SymbolState(slot, primary)

    async def _remove(self, symbol: str) -> None:
        state = self._states.pop(symbol, None)
        self.snapshots.forget(symbol)
        if state is None:
            return
        slot = state.slot
        slot.symbols.remove(symbol)
        for conn in (slot.conn, slot.successor):
            if conn is not None and symbol in conn.symbols:
                await conn.unsubscribe([symbol], "delisted")
        slot.changed.set()

    async def _read_listing(self, *, retry: bool) -> list[str]:
        backoff = Backoff(self._tuning.backoff_base_s, self._tuning.backoff_cap_s, self._rand)
        return await fetch_trading_symbols(
            market=self.settings.market,
            rest_base=self.settings.rest_base,
            session=self._session,
            budget=self.budget,
            metrics=self._metrics,
            clock_ns=self._clock_ns,
            retry=backoff if retry else None,
        )

    async def _refresh_listing(self) -> None:
        delay = self.settings.symbols_refresh_s
        while True:
            await asyncio.sleep(delay)
            try:
                listed = await self._read_listing(retry=False)
            except ListingUnavailableError as exc:
                log.warning("listing refresh failed", extra={"error": str(exc)})
                delay = min(self._tuning.listing_retry_s, self.settings.symbols_refresh_s)
                continue
            delay = self.settings.symbols_refresh_s
            await self.apply_listing(listed)

    # --- one slot's connections ---------------------------------------------------

    async def _run_slot(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            conn = await self._start(slot, tasks, "start")
            rotate_at = loop.time() + self._lifetime(conn)
            while slot.symbols:
                slot.changed.clear()
                wait = max(0.0, rotate_at - loop.time())
                await _first(conn.ended, conn.shutdown_notice, slot.changed, within=wait)
                if not slot.symbols:
                    break
                if conn.ended.is_set():
                    self._metrics.reconnects.inc()
                    await self._pause(slot, conn)
                    conn = await self._start(slot, tasks, "reconnect")
                    rotate_at = loop.time() + self._lifetime(conn)
                elif conn.shutdown_notice.is_set() or loop.time() >= rotate_at:
                    why = "shutdown" if conn.shutdown_notice.is_set() else "lifetime"
                    conn, rotated = await self._rotate(slot, conn, tasks, why)
                    if rotated:
                        rotate_at = loop.time() + self._lifetime(conn)
                    else:  # keep the old connection; try again after a backoff
                        await _first(conn.ended, within=slot.backoff.next_delay())
            await conn.close("no symbols left")

    def _lifetime(self, conn: FeedConnection) -> float:
        del conn  # one draw per connection, in the order they open
        return self._rand.uniform(self.settings.lifetime_min_s, self.settings.lifetime_max_s)

    async def _pause(self, slot: _Slot, conn: FeedConnection) -> None:
        """Wait before replacing a connection that ended: longer after short lives."""
        opened = conn.opened_ns or 0
        if conn.frames and self._clock_ns() - opened >= HEALTHY_AFTER_S * 1e9:
            slot.backoff.reset()
        delay = slot.backoff.next_delay()
        log.info(
            "reconnecting",
            extra={"connection": conn.id, "reason": conn.close_reason, "delay_s": round(delay, 3)},
        )
        await asyncio.sleep(delay)

    async def _connect(self, slot: _Slot, why: str) -> FeedConnection:
        """Open a connection for the slot's symbols; retries until it works or is fatal."""
        while True:
            await self._pacer.acquire()
            self._seq += 1
            conn = FeedConnection(
                f"{self._boot}-{self._seq}",
                slot.symbols,
                options=self._options,
                sink=self._sink,
                metrics=self._metrics,
                listener=self,
                clock_ns=self._clock_ns,
            )
            try:
                await conn.open(why)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                retry = classify_connect_error(exc)  # raises FeedFatalError when fatal
                delay = max(slot.backoff.next_delay(), retry.after_s or 0.0)
                log.warning(
                    "connect failed",
                    extra={
                        "connection": conn.id,
                        "region": self.settings.region,
                        "error": retry.reason,
                        "delay_s": round(delay, 3),
                    },
                )
                await asyncio.sleep(delay)
                continue
            missing = [s for s in slot.symbols if s not in conn.symbols]
            if missing:  # listed while we were connecting
                await conn.subscribe(missing)
            return conn

    async def _start(self, slot: _Slot, tasks: asyncio.TaskGroup, why: str) -> FeedConnection:
        """A fresh connection that becomes the primary of all its symbols."""
        conn = await self._connect(slot, why)
        slot.conn = conn
        for symbol in conn.symbols:
            if symbol in self._states:
                self._states[symbol] = _SymbolState(slot, conn)
        tasks.create_task(conn.run())
        return conn

    async def _rotate(
        self, slot: _Slot, old: FeedConnection, tasks: asyncio.TaskGroup, why: str
    ) -> tuple[FeedConnection, bool]:
        """Make before break; returns the connection to keep and whether it is a new one."""
        log.info("rotation started", extra={"connection": old.id, "why": why})
        new = await self._connect(slot, f"rotate:{why}")
        await self._put_all(old, "rotate", {"phase": "start", "successor": new.id, "why": why})
        slot.successor = new
        slot.handover_done.clear()
        tasks.create_task(new.run())
        for symbol in new.symbols:
            self._check_handover(slot, symbol)
        deadline: float | None = self._tuning.handover_timeout_s
        while True:
            await _first(slot.handover_done, old.ended, new.ended, within=deadline)
            if new.ended.is_set():
                log.warning("rotation failed: successor ended", extra={"connection": new.id})
                for symbol in slot.symbols:
                    state = self._states.get(symbol)
                    if state is not None and state.primary is new:
                        state.primary = old  # the old run never stopped: still continuous
                slot.successor = None
                return old, False
            if slot.handover_done.is_set():
                slot.successor, slot.conn = None, new
                await self._put_all(new, "rotate", {"phase": "done", "predecessor": old.id})
                self._metrics.rotations.inc()
                log.info("rotation done", extra={"connection": new.id, "predecessor": old.id})
                await old.close("rotated")
                return new, True
            if old.ended.is_set():
                moved = 0
                for symbol in slot.symbols:
                    state = self._states.get(symbol)
                    if state is not None and state.primary is not new:
                        moved += 1
                        self._adopt_after_loss(symbol, state, new)
                self._metrics.reconnects.inc()
                log.warning(
                    "old connection ended before the handover",
                    extra={"connection": old.id, "symbols_not_joined": moved},
                )
                slot.successor, slot.conn = None, new
                return new, True
            log.warning(
                "handover incomplete: keeping the old connection until it closes",
                extra={"connection": old.id, "successor": new.id},
            )
            deadline = None

    def _adopt_after_loss(self, symbol: str, state: _SymbolState, new: FeedConnection) -> None:
        track = new.tracks.get(symbol)
        state.primary = new
        state.coverage_first_prev = track.run_first_prev if track else None
        state.coverage_events = track.run_events if track else 0
        state.snapshot_due = True
        self._maybe_snapshot(symbol, state, "reconnect")

    def _check_handover(self, slot: _Slot, symbol: str) -> None:
        old, new = slot.conn, slot.successor
        state = self._states.get(symbol)
        if old is None or new is None or state is None or state.primary is not old:
            return
        new_track = new.tracks.get(symbol)
        if new_track is None or new_track.run_first_prev is None:
            return
        old_track = old.tracks.get(symbol)
        if (
            old_track is None
            or old_track.last_id is None
            or covers_handover(old_track.last_id, new_track.run_first_prev)
        ):
            state.primary = new
            if all(self._states[s].primary is new for s in slot.symbols if s in self._states):
                slot.handover_done.set()

    async def _put_all(self, conn: FeedConnection, ev: str, info: dict[str, object]) -> None:
        now = self._clock_ns()
        line = encode_conn(now, conn.id, ev, info)
        for symbol in conn.symbols:
            await self._sink.put(Item(symbol, line, now))

    # --- what connections tell us (synchronous, on the read path) ------------------

    def on_depth(self, conn: FeedConnection, symbol: str, prev_id: int) -> None:
        state = self._states.get(symbol)
        if state is None:
            return
        if state.slot.successor is not None:
            self._check_handover(state.slot, symbol)
        if state.primary is not conn:
            return
        if state.coverage_first_prev is None:
            state.coverage_first_prev = prev_id
        state.coverage_events += 1
        if state.snapshot_due:  # per frame: the call only when a snapshot is wanted
            self._maybe_snapshot(symbol, state, "events buffered")

    def on_frames(self, conn: FeedConnection, recv_ns: int, newest_event_ms: int) -> None:
        """Per batch: the last frame time, and the clock offset (the smallest of each
        second's frames; a batch's smallest is that of its newest event)."""
        del conn
        self._last_frame_ns = recv_ns
        offset = recv_ns - newest_event_ms * 1_000_000
        if self._offset_min is None or offset < self._offset_min:
            self._offset_min = offset
        if recv_ns >= self._offset_until:
            self._metrics.clock_offset.set(self._offset_min / 1e9)
            self._offset_min, self._offset_until = None, recv_ns + OFFSET_WINDOW_NS

    def on_break(self, conn: FeedConnection, symbol: str) -> None:
        state = self._states.get(symbol)
        if state is not None and state.primary is conn:
            state.coverage_first_prev, state.coverage_events = None, 0
            state.snapshot_due = True

    def on_shutdown_notice(self, conn: FeedConnection) -> None:
        """The slot's loop wakes on ``conn.shutdown_notice`` and rotates."""

    def _maybe_snapshot(self, symbol: str, state: _SymbolState, why: str) -> None:
        if state.snapshot_due and state.coverage_events >= 2:
            state.snapshot_due = False
            self.snapshots.request(symbol, why)

    def _first_prev(self, symbol: str) -> int | None:
        state = self._states.get(symbol)
        return state.coverage_first_prev if state is not None else None
