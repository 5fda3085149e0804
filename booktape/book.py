"""The order book: apply diff-depth events, load snapshots, audit against snapshots.

Pure and exact. Prices are keyed by their exact value -- a float where the float is
exact, which is every price of up to 15 significant digits, else a
:class:`decimal.Decimal` (see :mod:`booktape.bookside`) -- so ``"0.0100"`` and ``"0.01"``
are one level, while the exchange's own strings are kept and given back unchanged. A quantity
is the new absolute amount at its level; zero removes the level.

Auditing follows how Binance books really behave:

- A REST snapshot covers only a price *window* (its deepest bid to its deepest ask). A book
  rebuilt from a snapshot plus diffs keeps levels outside that window that no diff ever
  corrects ("orphans"), so comparisons are made within the window only and
  :meth:`OrderBook.prune_outside` drops what lies beyond it.
- A snapshot's ``lastUpdateId`` can fall inside one event's ``[U, u]`` range; that event's
  levels are partly in the snapshot, so they are excluded from the comparison.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from booktape.binance import DepthEvent, DepthSnapshot, Level
from booktape.bookside import (
    INF,
    ZERO_SPELLINGS,
    BookSide,
    Key,
    LazySide,
    exact_decimal,
    is_zero_qty,
)


class Side(StrEnum):
    BID = "bid"
    ASK = "ask"


@dataclass(frozen=True, slots=True)
class LevelMismatch:
    side: Side
    price: str
    ours: str | None  # our quantity, None when we lack the level
    theirs: str | None  # the snapshot's quantity, None when it lacks the level


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing a rebuilt book with a snapshot inside its window."""

    checked: int  # levels compared (both sides, excluded levels not counted)
    excluded: int  # levels skipped because the straddling event touched them
    mismatches: tuple[LevelMismatch, ...] = field(default=())

    @property
    def matched(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True, slots=True)
class Window:
    """The price window a snapshot covers; None bounds mean the whole side is covered."""

    bid_floor: Decimal | None  # bids at or above this price are covered
    ask_ceiling: Decimal | None  # asks at or below this price are covered

    @classmethod
    def of(cls, snapshot: DepthSnapshot, limit: int | None = None) -> Window:
        """The window of a snapshot; a side shorter than ``limit`` covers the whole side."""

        def bound(levels: Sequence[Level], pick: str) -> Decimal | None:
            if limit is not None and len(levels) < limit:
                return None
            if not levels:
                return None
            return _extreme([p for p, _ in levels], pick == "min")

        return cls(bound(snapshot.bids, "min"), bound(snapshot.asks, "max"))

    def covers(self, side: Side, price: Decimal) -> bool:
        if side is Side.BID:
            return self.bid_floor is None or price >= self.bid_floor
        return self.ask_ceiling is None or price <= self.ask_ceiling

    def intersect(self, other: Window) -> Window:
        """The prices both windows cover."""
        floors = [f for f in (self.bid_floor, other.bid_floor) if f is not None]
        ceilings = [c for c in (self.ask_ceiling, other.ask_ceiling) if c is not None]
        return Window(max(floors, default=None), min(ceilings, default=None))

    def union(self, other: Window) -> Window:
        """The prices either window covers (windows always share the top of the book)."""
        floor: Decimal | None = None
        if self.bid_floor is not None and other.bid_floor is not None:
            floor = min(self.bid_floor, other.bid_floor)
        ceiling: Decimal | None = None
        if self.ask_ceiling is not None and other.ask_ceiling is not None:
            ceiling = max(self.ask_ceiling, other.ask_ceiling)
        return Window(floor, ceiling)


def _extreme(prices: list[str], lowest: bool) -> Decimal:
    """The lowest (or highest) of some price strings, exactly; each one is validated.

    ``float()`` rounds monotonically, so the extreme price is among those whose float is
    the extreme float: only those few are compared as decimals.
    """
    try:
        floats = [float(p) for p in prices]
    except (TypeError, ValueError):
        floats = []
    if not floats or not all(0.0 <= f < INF for f in floats):  # NaN fails too
        values = [exact_decimal(p, "price") for p in prices]  # raises on the bad one
        return min(values) if lowest else max(values)
    target = min(floats) if lowest else max(floats)
    ties = [exact_decimal(p, "price") for p, f in zip(prices, floats, strict=True) if f == target]
    return min(ties) if lowest else max(ties)


def _is_zero(qty: str) -> bool:
    try:
        amount = float(qty)
    except (TypeError, ValueError):
        amount = -1.0
    return not 0.0 < amount < INF and (qty in ZERO_SPELLINGS or is_zero_qty(qty))


@dataclass(slots=True)
class _SideView:
    """A snapshot's side in the keys of one book side (for compare and heal)."""

    theirs: dict[Key, Level]  # its non-zero levels
    skip: set[Key]  # the prices the straddling event touches
    inside: Key | None  # keys >= this are in the snapshot's window (None: all)
    known: Key | None  # keys >= this are in the book's coverage (None: all)


def _bound(window: Window | None, side: Side) -> Decimal | None:
    if window is None:
        return None
    return window.bid_floor if side is Side.BID else window.ask_ceiling


def _view(
    book_side: BookSide,
    side: Side,
    levels: Sequence[Level],
    *,
    straddling: DepthEvent | None,
    window: Window,
    coverage: Window | None,
) -> _SideView:
    """Key everything once the side's key kind is settled (a key may switch it)."""
    touched = () if straddling is None else straddling.bids if side is Side.BID else straddling.asks
    exact = book_side._exact
    while True:
        key, key_of = book_side.key, book_side.key_of
        inside, known = _bound(window, side), _bound(coverage, side)
        view = _SideView(
            {key(p): (p, q) for p, q in levels if not _is_zero(q)},
            {key(p) for p, _ in touched},
            key_of(inside) if inside is not None else None,
            key_of(known) if known is not None else None,
        )
        if book_side._exact == exact:
            return view
        exact = book_side._exact  # keys made before the switch are stale: once more


class OrderBook:
    """A price-level book with the update id it is at (``None`` before a snapshot).

    ``coverage`` is the price window the book knows: a book loaded from a snapshot knows
    only that snapshot's window, since diffs correct a level only when it changes. Levels
    deeper than that are unknown until a later snapshot fills them in (:meth:`heal`).
    ``None`` means the book makes no claim (built from levels alone).

    ``lazy_order``: sort each side's prices only when a reader needs more than the best
    level (:meth:`levels`, :meth:`top`, an audit). Faster to update, slower for a caller
    that reads the top levels after every event: for the merger, which reads the best
    levels after every event and the whole book only at audits.
    """

    def __init__(self, *, lazy_order: bool = False) -> None:
        side = LazySide if lazy_order else BookSide
        self._bids = side(reverse=True)
        self._asks = side(reverse=False)
        self.update_id: int | None = None
        self.coverage: Window | None = None

    def _side(self, side: Side) -> BookSide:
        return self._bids if side is Side.BID else self._asks

    # --- building ------------------------------------------------------------------

    def load_snapshot(self, snapshot: DepthSnapshot, limit: int | None = None) -> None:
        """Reset the book to a snapshot's levels and id; it then covers the snapshot's window.

        ``limit`` is the depth the snapshot was requested with (a shorter side is complete).
        """
        self._bids.clear()
        self._asks.clear()
        self._bids.update(snapshot.bids)
        self._asks.update(snapshot.asks)
        self.update_id = snapshot.last_update_id
        self.coverage = Window.of(snapshot, limit)

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Set absolute quantities; a zero quantity removes the level."""
        self._bids.update(bids)
        self._asks.update(asks)

    def apply(self, event: DepthEvent) -> None:
        """Apply an event and move the book to its ``u`` (the caller checks splicing)."""
        self.apply_levels(event.bids, event.asks)
        self.update_id = event.header.last_id

    # --- reading -------------------------------------------------------------------

    def best_bid(self) -> Level | None:
        return self._bids.best()

    def best_ask(self) -> Level | None:
        return self._asks.best()

    def is_crossed(self) -> bool:
        """Whether the best bid is at or above the best ask (a locked or crossed book)."""
        bid, ask = self._bids.best_key(), self._asks.best_key()
        if bid is None or ask is None:
            return False
        if self._bids._exact or self._asks._exact:  # keys of two kinds: compare the prices
            return Decimal(self._bids.best()[0]) >= Decimal(self._asks.best()[0])  # type: ignore[index]
        return bid >= -ask

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best ``n`` levels of each side, best first, as exchange strings."""
        return (
            [lvl for _, lvl in zip(range(n), self._bids.iter_best_first(), strict=False)],
            [lvl for _, lvl in zip(range(n), self._asks.iter_best_first(), strict=False)],
        )

    def levels(self, side: Side) -> list[Level]:
        """Every level of a side, best first."""
        return list(self._side(side).iter_best_first())

    def depth(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)

    # --- auditing ------------------------------------------------------------------

    def compare(
        self,
        snapshot: DepthSnapshot,
        straddling: DepthEvent | None = None,
        limit: int | None = None,
    ) -> Comparison:
        """Compare with a snapshot within its price window.

        ``straddling`` is the event whose ``[U, u]`` contains the snapshot's
        ``lastUpdateId`` without ending on it: its levels are partly in the snapshot and
        are not compared. ``limit`` is the depth limit the snapshot was requested with.
        Mismatches are listed per side (bids, then asks) by ascending price.
        """
        window = Window.of(snapshot, limit)
        if self.coverage is not None:
            window = window.intersect(self.coverage)
        mismatches: list[LevelMismatch] = []
        checked = excluded = 0
        for side, theirs_levels in ((Side.BID, snapshot.bids), (Side.ASK, snapshot.asks)):
            ours_side = self._side(side)
            view = _view(
                ours_side, side, theirs_levels, straddling=straddling, window=window, coverage=None
            )
            theirs, inside = view.theirs, view.inside
            ours_keys = ours_side.sorted_keys()
            start = 0 if inside is None else bisect_left(ours_keys, inside)
            keys = set(ours_keys[start:])
            keys.update(k for k in theirs if inside is None or k >= inside)
            for key in sorted(keys, reverse=side is Side.ASK):  # ascending price
                if key in view.skip:
                    excluded += 1
                    continue
                checked += 1
                ours = ours_side.get(key)
                their = theirs.get(key)
                if (
                    ours is None
                    or their is None
                    or (ours[1] != their[1] and Decimal(ours[1]) != Decimal(their[1]))
                ):
                    mismatches.append(
                        LevelMismatch(
                            side,
                            (ours or their or ("?", ""))[0],
                            ours[1] if ours else None,
                            their[1] if their else None,
                        )
                    )
        return Comparison(checked, excluded, tuple(mismatches))

    def heal(
        self,
        snapshot: DepthSnapshot,
        straddling: DepthEvent | None = None,
        limit: int | None = None,
    ) -> int:
        """Take the levels the book does not know from a snapshot, and widen its coverage.

        Within the snapshot's window but outside the book's coverage, the snapshot's levels
        are the exchange's (except those of the straddling event, which moved after the
        book's id). Known levels are never touched: disagreements there are for
        :meth:`compare` to report. Returns how many levels were added or removed.
        """
        window = Window.of(snapshot, limit)
        coverage = self.coverage
        if coverage is None:
            return 0
        changed = 0
        for side, theirs_levels in ((Side.BID, snapshot.bids), (Side.ASK, snapshot.asks)):
            ours_side = self._side(side)
            view = _view(
                ours_side,
                side,
                theirs_levels,
                straddling=straddling,
                window=window,
                coverage=coverage,
            )
            if view.known is None:
                continue  # the book knows the whole side already
            theirs, inside, known, skip = view.theirs, view.inside, view.known, view.skip

            def unknown(
                key: Key, inside: Key | None = inside, known: Key = known, skip: set[Key] = skip
            ) -> bool:
                return (inside is None or key >= inside) and key < known and key not in skip

            for key in [k for k in ours_side.sorted_keys() if unknown(k) and k not in theirs]:
                ours_side.remove(key)
                changed += 1
            for key, (text, qty) in theirs.items():
                if unknown(key) and ours_side.get(key) != (text, qty):
                    ours_side.set(text, qty)
                    changed += 1
        self.coverage = coverage.union(window)
        return changed

    def prune_outside(self, window: Window) -> int:
        """Drop levels outside a snapshot's window (orphans); return how many were dropped."""
        removed = 0
        for side in (Side.BID, Side.ASK):
            book_side = self._side(side)
            bound = _bound(window, side)
            if bound is None:
                continue
            threshold = book_side.key_of(bound)
            keys = book_side.sorted_keys()
            removed += book_side.remove_where(keys[bisect_left(keys, threshold) :])
        return removed
