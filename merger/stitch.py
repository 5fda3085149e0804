"""Stitch the loaded streams of one symbol-day into the canonical stream (pure, no I/O).

Usage::

    stitcher = stitch(feed, market=market, log=log, primary="eu", start=yesterday_close)
    for item in stitcher:          # BookImage | StreamEvent, in canonical order
        writer.add(item)
    closing = stitcher.closing     # BookImage | None, set once the iteration is exhausted

What it does (DESIGN.md "Canonical output", issue 4):

- Streams (connections) are tried in preference order: those of the primary region first,
  then the others, each group by name. From a book at ``cur`` the first stream in that order
  whose next useful event splices (``prev <= cur < u``) gives the next event, so the
  stitcher stays on the preferred stream while it is continuous and fills its holes from any
  other; events with ``u <= cur`` are duplicates and dropped.
- The day starts with a full book image: ``start`` (the previous day's closing book,
  reason ``previous_day``) when some event splices onto its id, else the first recorded
  snapshot (any region) onto which some event splices (reason ``start``). Events before
  that anchor are counted in ``log.unusable_before_anchor``.
- Where no stream has an event that splices onto ``cur``, the gap is unrecoverable: the book
  re-anchors on the first recorded snapshot with ``lastUpdateId >= cur`` onto which some
  event splices (reason ``reanchor``) and a :class:`~merger.model.Gap` is logged. Events
  skipped over by the jump are counted as unusable too. When no snapshot allows going on,
  the day ends there and the events left are counted as unusable.
- Two images never follow each other: an image is held back until an event follows it, and
  a later image replaces one still held back.
- Audit: each recorded snapshot whose ``lastUpdateId`` L falls in a continuous stretch
  (``book.update_id <= L < u`` of the next event) is compared with the rebuilt book within
  its window, excluding the levels of the event straddling L; the book then learns the
  levels beyond its known window from it (:meth:`OrderBook.heal`). Crossed books are
  counted after every event (reported, not fixed).
- ``log.events``, ``log.filled`` (per source), ``log.audit``, ``log.crossed_books``,
  ``log.unrecoverable`` and ``log.unusable_before_anchor`` are updated as items are yielded.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from booktape.binance import DepthEvent, DepthSnapshot, Market, decode_depth, splices
from booktape.book import Comparison, OrderBook, Side, Window
from booktape.errors import FrameError
from merger.feed import NEVER, Feed
from merger.load import Loaded
from merger.model import BookImage, CanonicalItem, Gap, GapLog, SourceSnapshot, StreamEvent

__all__ = ["Stitcher", "stitch", "stream_order"]

MISMATCH_LEVELS = 5  # levels shown in the first audit mismatch
MAX_AUDIT_POINTS = 10_000  # audit points kept for the report


def stream_order(names: Sequence[str], primary: str | None) -> list[str]:
    """Preference order of streams: the primary region's first, then the rest, by name."""

    def rank(name: str) -> tuple[bool, str]:
        region = name.split(".", 1)[0]
        return (primary is None or region != primary, name)

    return sorted(names, key=rank)


class _Cursors:
    """The head of every stream's queue; picks the event that continues a book at ``cur``."""

    def __init__(self, feed: Feed, primary: str | None) -> None:
        self._feed = feed
        self._primary = primary
        self._version = -1
        self._queues: list[deque[StreamEvent]] = []

    def _ordered(self) -> list[deque[StreamEvent]]:
        feed = self._feed
        if feed.version != self._version:
            self._version = feed.version
            names = stream_order(list(feed.streams), self._primary)
            self._queues = [feed.streams[name] for name in names]
        return self._queues

    def drop(self, upto: int, passed: set[tuple[int, int]] | None) -> None:
        """Drop every queued event with ``u <= upto``, noting ``(prev, u)`` in ``passed``."""
        for queue in self._ordered():
            while queue and queue[0].header.last_id <= upto:
                head = queue.popleft().header
                if passed is not None:
                    passed.add((head.prev_id, head.last_id))

    def pick(self, cur: int) -> StreamEvent | None:
        """Consume and return the first event (in preference order) that splices onto cur."""
        feed = self._feed
        if feed.fill(cur):
            self.drop(cur, None)  # stale events of streams pick does not visit
        while True:
            for queue in self._ordered():
                while queue and queue[0].header.last_id <= cur:
                    queue.popleft()
                if queue and queue[0].header.prev_id <= cur:
                    if feed.catch_up(queue[0].recv_ns):
                        break  # a preferred stream may have it now: look again
                    return queue.popleft()
            else:
                return None

    def continues(self, cur: int) -> bool:
        """Whether any stream has an event with ``prev <= cur < u`` not yet consumed."""
        self._feed.fill(cur)
        for queue in self._ordered():
            for event in queue:
                if event.header.last_id > cur:
                    if splices(cur, event.header.prev_id, event.header.last_id):
                        return True
                    break
        return False

    def advance(self, upto: int, passed: set[tuple[int, int]] | None) -> None:
        """Read through ``upto`` chunk by chunk, dropping the events with ``u <= upto``.

        Events at or below a snapshot met on the way are kept: it may be the anchor.
        """
        feed = self._feed

        def frontier() -> int:
            snap = feed.next_snapshot()
            return upto if snap is None else min(upto, snap.snapshot.last_update_id)

        while True:
            self.drop(frontier(), passed)
            if feed.settled >= upto or not feed.more():
                break
        feed.fill(upto)
        self.drop(frontier(), passed)

    def drain(self, passed: set[tuple[int, int]]) -> None:
        """Read and drop everything left."""
        while True:
            self.drop(NEVER, passed)
            if not self._feed.more():
                return


@dataclass(frozen=True, slots=True)
class _Anchor:
    image: BookImage
    snapshot: DepthSnapshot
    limit: int | None
    recorded: SourceSnapshot | None  # None for the previous day's closing book


def _image_of(snap: SourceSnapshot, reason: str) -> _Anchor:
    body = snap.snapshot
    image = BookImage(
        local_ts=snap.recv_ns,
        last_update_id=body.last_update_id,
        bids=body.bids,
        asks=body.asks,
        source=snap.source,
        reason=reason,
        key=snap.key,
    )
    return _Anchor(image, body, snap.limit, snap)


def _mismatch_record(snap: SourceSnapshot, comparison: Comparison) -> dict[str, object]:
    return {
        "update_id": snap.snapshot.last_update_id,
        "key": snap.key,
        "source": snap.source,
        "levels": [
            {"side": m.side.value, "price": m.price, "ours": m.ours, "theirs": m.theirs}
            for m in comparison.mismatches[:MISMATCH_LEVELS]
        ],
    }


class Stitcher:
    """The canonical stream of one symbol-day; iterate it once, then read ``closing``."""

    def __init__(
        self,
        feed: Feed | Loaded,
        *,
        market: Market,
        log: GapLog,
        primary: str | None = None,
        start: BookImage | None = None,
    ) -> None:
        self._feed = feed if isinstance(feed, Feed) else Feed.from_loaded(feed)
        self._market = market
        self._log = log
        self._start = start
        self._cursors = _Cursors(self._feed, primary)
        self._book = OrderBook(lazy_order=True)  # read at its top after each event
        self._anchor_snapshot: SourceSnapshot | None = None
        self._last_ts = 0  # receive ns of the last applied event (or of the anchor)
        self._iterated = False
        self.closing: BookImage | None = None  # the book at the end, once exhausted

    def __iter__(self) -> Iterator[CanonicalItem]:
        return self.items()

    # --- anchors -------------------------------------------------------------------

    def _first_snapshot_from(self, cur: int, passed: set[tuple[int, int]]) -> SourceSnapshot | None:
        """The first recorded snapshot with ``lastUpdateId >= cur`` that events continue.

        Events passed over on the way (``u`` up to the snapshot's id) are noted in
        ``passed``: whatever snapshot is found, they can no longer be applied.
        """
        feed, cursors = self._feed, self._cursors
        while True:
            snap = feed.next_snapshot()
            if snap is None:
                if not feed.more():
                    return None
                if feed.next_snapshot() is None:  # later snapshots lie past what is settled
                    cursors.drop(max(cur, feed.settled), passed)
                continue
            last_id = snap.snapshot.last_update_id
            if last_id < cur:
                feed.take_snapshot()
                continue
            if feed.catch_up(snap.recv_ns):
                continue  # what was recorded by then may hold a lower snapshot: look again
            cursors.advance(last_id, passed)
            if feed.next_snapshot() is not snap:
                continue  # reading on found one with a lower id: try that first
            if cursors.continues(last_id):
                return snap
            feed.take_snapshot()

    def _first_anchor(self, passed: set[tuple[int, int]]) -> _Anchor | None:
        start = self._start
        if start is not None and self._cursors.continues(start.last_update_id):
            image = dataclasses.replace(start, reason="previous_day")
            body = DepthSnapshot(start.last_update_id, start.bids, start.asks)
            self._cursors.advance(start.last_update_id, None)  # yesterday's, not unusable
            return _Anchor(image, body, None, None)
        first = self._first_snapshot_from(0, passed)
        return _image_of(first, "start") if first is not None else None

    def _load(self, anchor: _Anchor) -> None:
        self._book.load_snapshot(anchor.snapshot, limit=anchor.limit)
        self._anchor_snapshot = anchor.recorded
        self._last_ts = anchor.image.local_ts
        feed = self._feed
        while (snap := feed.next_snapshot()) is not None and (
            snap.snapshot.last_update_id < anchor.image.last_update_id
        ):
            feed.take_snapshot()

    # --- audit ---------------------------------------------------------------------

    def _audit(self, snap: SourceSnapshot, straddling: DepthEvent | None) -> None:
        """Compare the book with a snapshot within its window; then heal and prune."""
        book, audit = self._book, self._log.audit
        comparison = book.compare(snap.snapshot, straddling, limit=snap.limit)
        audit.checked += 1
        if len(audit.points) < MAX_AUDIT_POINTS:
            audit.points.append((snap.recv_ns, snap.snapshot.last_update_id, comparison.matched))
        if comparison.matched:
            audit.matched += 1
        else:
            audit.mismatched += 1
            if audit.first_mismatch is None:
                audit.first_mismatch = _mismatch_record(snap, comparison)
        book.heal(snap.snapshot, straddling, limit=snap.limit)
        window = Window.of(snap.snapshot, snap.limit)
        book.prune_outside(window)  # orphans: what no snapshot vouches for any more
        book.coverage = window if book.coverage is None else book.coverage.intersect(window)

    def _audit_before(self, event: DepthEvent) -> None:
        """Audit every snapshot with ``book.update_id <= L < u`` of the event to apply."""
        book, feed = self._book, self._feed
        assert book.update_id is not None
        while (snap := feed.next_snapshot()) is not None:
            last_id = snap.snapshot.last_update_id
            if last_id >= event.header.last_id:
                return
            feed.take_snapshot()
            if last_id < book.update_id or snap is self._anchor_snapshot:
                continue
            self._audit(snap, event if last_id > book.update_id else None)

    def _audit_at_rest(self) -> None:
        """Audit the snapshots taken exactly at the book's id when no event follows it."""
        book, feed = self._book, self._feed
        while (snap := feed.next_snapshot()) is not None and (
            snap.snapshot.last_update_id <= (book.update_id or 0)
        ):
            feed.take_snapshot()
            if snap.snapshot.last_update_id == book.update_id and snap is not self._anchor_snapshot:
                self._audit(snap, None)

    # --- the walk ------------------------------------------------------------------

    def items(self) -> Iterator[CanonicalItem]:
        """Yield the day's book images and applied events in canonical order (once)."""
        if self._iterated:
            raise RuntimeError("a Stitcher can be iterated only once")
        self._iterated = True
        log = self._log
        passed: set[tuple[int, int]] = set()
        anchor = self._first_anchor(passed)
        if anchor is None:
            self._cursors.drain(passed)
            log.unusable_before_anchor += len(passed)
            self._feed.finish()
            return
        log.unusable_before_anchor += len(passed)
        self._load(anchor)
        pending: BookImage | None = anchor.image
        while True:
            cur = self._book.update_id
            assert cur is not None
            picked = self._cursors.pick(cur)
            if picked is None:
                self._audit_at_rest()
                reanchor = self._reanchor(cur)
                if reanchor is None:
                    break
                pending = reanchor.image  # folds an image no event followed
                continue
            try:
                event = decode_depth(picked.frame, self._market, picked.header)
            except FrameError as exc:
                log.corrupt.append({"key": picked.stream, "error": f"update {cur + 1}: {exc}"})
                continue
            self._audit_before(event)
            self._book.apply(event)
            self._last_ts = picked.recv_ns
            log.events += 1
            log.filled[picked.source] = log.filled.get(picked.source, 0) + 1
            log.crossed_books += self._book.is_crossed()
            if log.first_ts is None:
                log.first_ts = pending.local_ts if pending is not None else picked.recv_ns
            log.last_ts = picked.recv_ns
            if pending is not None:
                yield pending
                pending = None
            picked.decoded = event  # with its levels: the writer needs no decode
            yield picked
        left: set[tuple[int, int]] = set()
        self._cursors.drain(left)
        log.unusable_before_anchor += len(left)
        self._feed.finish()
        if pending is not None:
            yield pending
        self.closing = self._closing()

    def _reanchor(self, cur: int) -> _Anchor | None:
        """At an unrecoverable gap after ``cur``: load the next usable snapshot, log the gap."""
        passed: set[tuple[int, int]] = set()
        snap = self._first_snapshot_from(cur, passed)
        self._log.unusable_before_anchor += len(passed)
        if snap is None:
            return None
        anchor = _image_of(snap, "reanchor")
        last_id = snap.snapshot.last_update_id
        self._log.unrecoverable.append(
            Gap(
                from_update_id=cur + 1,
                to_update_id=last_id,
                from_ts=self._last_ts,
                to_ts=snap.recv_ns,
                reanchored_on={"key": snap.key, "lastUpdateId": last_id},
            )
        )
        self._load(anchor)
        return anchor

    def _closing(self) -> BookImage | None:
        book = self._book
        if book.update_id is None:
            return None
        return BookImage(
            local_ts=self._last_ts,
            last_update_id=book.update_id,
            bids=tuple(book.levels(Side.BID)),
            asks=tuple(book.levels(Side.ASK)),
            source="closing",
            reason="closing",
        )


def stitch(
    loaded: Feed | Loaded,
    *,
    market: Market,
    log: GapLog,
    primary: str | None = None,
    start: BookImage | None = None,
) -> Stitcher:
    """The canonical stream of a loaded symbol-day: iterate it, then read ``.closing``."""
    return Stitcher(loaded, market=market, log=log, primary=primary, start=start)
