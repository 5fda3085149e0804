"""Stitch the loaded streams of one symbol-day into the canonical stream (pure, no I/O).

Usage::

    stitcher = stitch(loaded, market=market, log=log, primary="eu", start=yesterday_close)
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
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from booktape.binance import DepthEvent, DepthSnapshot, Market, decode_depth, splices
from booktape.book import Comparison, OrderBook, Side
from booktape.errors import FrameError
from merger.load import Loaded
from merger.model import BookImage, CanonicalItem, Gap, GapLog, SourceSnapshot, StreamEvent

__all__ = ["Stitcher", "stitch", "stream_order"]

MISMATCH_LEVELS = 5  # levels shown in the first audit mismatch


def stream_order(names: Sequence[str], primary: str | None) -> list[str]:
    """Preference order of streams: the primary region's first, then the rest, by name."""

    def rank(name: str) -> tuple[bool, str]:
        region = name.split(".", 1)[0]
        return (primary is None or region != primary, name)

    return sorted(names, key=rank)


class _Cursors:
    """One read position per stream; picks the event that continues a book at ``cur``."""

    def __init__(self, streams: Sequence[Sequence[StreamEvent]]) -> None:
        self._streams = streams
        self._pos = [0] * len(streams)
        self._last_ids = [[e.header.last_id for e in events] for events in streams]

    def _skip_stale(self, index: int, cur: int) -> int:
        events, pos = self._streams[index], self._pos[index]
        while pos < len(events) and events[pos].header.last_id <= cur:
            pos += 1
        self._pos[index] = pos
        return pos

    def pick(self, cur: int) -> StreamEvent | None:
        """Consume and return the first event (in preference order) that splices onto cur."""
        for index, events in enumerate(self._streams):
            pos = self._skip_stale(index, cur)
            if pos < len(events) and events[pos].header.prev_id <= cur:
                self._pos[index] = pos + 1
                return events[pos]
        return None

    def continues(self, cur: int) -> bool:
        """Whether any stream has an event with ``prev <= cur < u`` not yet consumed."""
        for index, (events, last_ids) in enumerate(zip(self._streams, self._last_ids, strict=True)):
            at = bisect_right(last_ids, cur, lo=self._pos[index])
            if at < len(events) and splices(cur, events[at].header.prev_id, last_ids[at]):
                return True
        return False

    def skip_to(self, upto: int | None) -> set[tuple[int, int]]:
        """Move every stream past the events with ``u <= upto`` (all when None).

        Returns the ``(prev, u)`` of the events passed over (never applied).
        """
        passed: set[tuple[int, int]] = set()
        for index, events in enumerate(self._streams):
            pos = self._pos[index]
            while pos < len(events) and (upto is None or events[pos].header.last_id <= upto):
                passed.add((events[pos].header.prev_id, events[pos].header.last_id))
                pos += 1
            self._pos[index] = pos
        return passed


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
        loaded: Loaded,
        *,
        market: Market,
        log: GapLog,
        primary: str | None = None,
        start: BookImage | None = None,
    ) -> None:
        self._market = market
        self._log = log
        self._start = start
        names = stream_order(list(loaded.streams), primary)
        self._cursors = _Cursors([loaded.streams[name] for name in names])
        self._snapshots = loaded.snapshots
        self._snapshot_ids = [s.snapshot.last_update_id for s in loaded.snapshots]
        self._book = OrderBook()
        self._audit_at = 0  # index of the next snapshot to audit
        self._anchor_snapshot: SourceSnapshot | None = None
        self._last_ts = 0  # receive ns of the last applied event (or of the anchor)
        self._iterated = False
        self.closing: BookImage | None = None  # the book at the end, once exhausted

    def __iter__(self) -> Iterator[CanonicalItem]:
        return self.items()

    # --- anchors -------------------------------------------------------------------

    def _first_snapshot_from(self, cur: int) -> SourceSnapshot | None:
        """The first recorded snapshot with ``lastUpdateId >= cur`` that events continue."""
        for at in range(bisect_left(self._snapshot_ids, cur), len(self._snapshots)):
            if self._cursors.continues(self._snapshot_ids[at]):
                return self._snapshots[at]
        return None

    def _first_anchor(self) -> _Anchor | None:
        start = self._start
        if start is not None and self._cursors.continues(start.last_update_id):
            image = dataclasses.replace(start, reason="previous_day")
            body = DepthSnapshot(start.last_update_id, start.bids, start.asks)
            return _Anchor(image, body, None, None)
        first = self._first_snapshot_from(0)
        return _image_of(first, "start") if first is not None else None

    def _load(self, anchor: _Anchor) -> None:
        self._book.load_snapshot(anchor.snapshot, limit=anchor.limit)
        self._anchor_snapshot = anchor.recorded
        self._audit_at = bisect_left(self._snapshot_ids, anchor.image.last_update_id)
        self._last_ts = anchor.image.local_ts

    # --- audit ---------------------------------------------------------------------

    def _audit_before(self, event: DepthEvent) -> None:
        """Audit every snapshot with ``book.update_id <= L < u`` of the event to apply."""
        book, audit = self._book, self._log.audit
        assert book.update_id is not None
        while self._audit_at < len(self._snapshots):
            snap = self._snapshots[self._audit_at]
            last_id = snap.snapshot.last_update_id
            if last_id >= event.header.last_id:
                return
            self._audit_at += 1
            if last_id < book.update_id or snap is self._anchor_snapshot:
                continue
            straddling = event if last_id > book.update_id else None
            comparison = book.compare(snap.snapshot, straddling, limit=snap.limit)
            audit.checked += 1
            if comparison.matched:
                audit.matched += 1
            else:
                audit.mismatched += 1
                if audit.first_mismatch is None:
                    audit.first_mismatch = _mismatch_record(snap, comparison)
            book.heal(snap.snapshot, straddling, limit=snap.limit)

    # --- the walk ------------------------------------------------------------------

    def items(self) -> Iterator[CanonicalItem]:
        """Yield the day's book images and applied events in canonical order (once)."""
        if self._iterated:
            raise RuntimeError("a Stitcher can be iterated only once")
        self._iterated = True
        log = self._log
        anchor = self._first_anchor()
        if anchor is None:
            log.unusable_before_anchor += len(self._cursors.skip_to(None))
            return
        skipped = self._cursors.skip_to(anchor.image.last_update_id)
        if anchor.recorded is not None:
            log.unusable_before_anchor += len(skipped)
        self._load(anchor)
        pending: BookImage | None = anchor.image
        while True:
            cur = self._book.update_id
            assert cur is not None
            picked = self._cursors.pick(cur)
            if picked is None:
                reanchor = self._reanchor(cur)
                if reanchor is None:
                    break
                pending = reanchor.image  # folds an image no event followed
                continue
            try:
                event = decode_depth(picked.frame, self._market)
            except FrameError as exc:
                log.corrupt.append({"key": picked.stream, "error": f"update {cur + 1}: {exc}"})
                continue
            self._audit_before(event)
            self._book.apply(event)
            self._last_ts = picked.recv_ns
            log.events += 1
            log.filled[picked.source] = log.filled.get(picked.source, 0) + 1
            log.crossed_books += self._book.is_crossed()
            if pending is not None:
                yield pending
                pending = None
            yield picked
        log.unusable_before_anchor += len(self._cursors.skip_to(None))
        if pending is not None:
            yield pending
        self.closing = self._closing()

    def _reanchor(self, cur: int) -> _Anchor | None:
        """At an unrecoverable gap after ``cur``: load the next usable snapshot, log the gap."""
        snap = self._first_snapshot_from(cur)
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
        self._log.unusable_before_anchor += len(self._cursors.skip_to(last_id))
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
    loaded: Loaded,
    *,
    market: Market,
    log: GapLog,
    primary: str | None = None,
    start: BookImage | None = None,
) -> Stitcher:
    """The canonical stream of a loaded symbol-day: iterate it, then read ``.closing``."""
    return Stitcher(loaded, market=market, log=log, primary=primary, start=start)
