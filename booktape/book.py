"""The order book: apply diff-depth events, load snapshots, audit against snapshots.

Pure and exact. Prices are keyed by :class:`decimal.Decimal` (so ``"0.0100"`` and
``"0.01"`` are one level) while the exchange's own strings are kept and given back
unchanged. A quantity is the new absolute amount at its level; zero removes the level.

Auditing follows how Binance books really behave:

- A REST snapshot covers only a price *window* (its deepest bid to its deepest ask). A book
  rebuilt from a snapshot plus diffs keeps levels outside that window that no diff ever
  corrects ("orphans"), so comparisons are made within the window only and
  :meth:`OrderBook.prune_outside` drops what lies beyond it.
- A snapshot's ``lastUpdateId`` can fall inside one event's ``[U, u]`` range; that event's
  levels are partly in the snapshot, so they are excluded from the comparison.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from booktape.binance import DepthEvent, DepthSnapshot, Level
from booktape.errors import BookError


class Side(StrEnum):
    BID = "bid"
    ASK = "ask"


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise BookError(f"{what} {text!r} is not a decimal number") from exc
    if not value.is_finite() or value < 0:
        raise BookError(f"{what} {text!r} is not a finite non-negative number")
    return value


_CACHE_MAX = 1 << 16  # strings remembered per cache (prices per side; quantities overall)
_ZERO_QTY: dict[str, bool] = {}  # quantity string -> is zero (validated once)


def _is_zero_qty(qty: str) -> bool:
    zero = _ZERO_QTY.get(qty)
    if zero is None:
        zero = _decimal(qty, "quantity") == 0
        if len(_ZERO_QTY) >= _CACHE_MAX:
            _ZERO_QTY.clear()
        _ZERO_QTY[qty] = zero
    return zero


class _BookSide:
    """One side: price -> (price string, qty string), with prices kept sorted ascending.

    The hot path is :meth:`update`: a price string seen before maps to its Decimal key
    through a cache (prices repeat all day), and a quantity string to "is zero" likewise.
    """

    __slots__ = ("_keys", "_levels", "_prices", "_reverse")

    def __init__(self, reverse: bool) -> None:
        self._levels: dict[Decimal, tuple[str, str]] = {}
        self._prices: list[Decimal] = []  # ascending
        self._reverse = reverse  # True for bids: best is the highest price
        self._keys: dict[str, Decimal] = {}  # price string -> its validated Decimal

    def __len__(self) -> int:
        return len(self._prices)

    def clear(self) -> None:
        self._levels.clear()
        self._prices.clear()

    def set(self, price: str, qty: str) -> None:
        self.update(((price, qty),))

    def update(self, levels: Iterable[Level]) -> None:
        """Set each level's absolute quantity; zero removes it."""
        keys, book, prices = self._keys, self._levels, self._prices
        zeros = _ZERO_QTY
        for price, qty in levels:
            key = keys.get(price)
            if key is None:
                key = _decimal(price, "price")
                if len(keys) >= _CACHE_MAX:
                    keys.clear()
                keys[price] = key
            zero = zeros.get(qty)
            if zero is None:
                zero = _is_zero_qty(qty)
            if zero:
                if book.pop(key, None) is not None:
                    del prices[bisect_left(prices, key)]
            else:
                if key not in book:
                    insort(prices, key)
                book[key] = (price, qty)

    def remove(self, price: Decimal) -> None:
        if self._levels.pop(price, None) is not None:
            del self._prices[bisect_left(self._prices, price)]

    def get(self, price: Decimal) -> tuple[str, str] | None:
        return self._levels.get(price)

    def best(self) -> Level | None:
        if not self._prices:
            return None
        return self._levels[self._prices[-1] if self._reverse else self._prices[0]]

    def best_price(self) -> Decimal | None:
        if not self._prices:
            return None
        return self._prices[-1] if self._reverse else self._prices[0]

    def iter_best_first(self) -> Iterator[Level]:
        prices = reversed(self._prices) if self._reverse else iter(self._prices)
        for price in prices:
            yield self._levels[price]

    def prices(self) -> Sequence[Decimal]:
        return self._prices

    def remove_where(self, keep: Iterable[Decimal]) -> int:
        """Keep only the given prices; return how many levels were removed."""
        kept = [p for p in keep]
        removed = len(self._prices) - len(kept)
        self._levels = {p: self._levels[p] for p in kept}
        self._prices = kept
        return removed


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
            prices = [_decimal(p, "price") for p, _ in levels]
            return min(prices) if pick == "min" else max(prices)

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


def _straddled(event: DepthEvent | None) -> dict[Side, set[Decimal]]:
    """The prices an event straddling a snapshot touches, per side."""
    if event is None:
        return {Side.BID: set(), Side.ASK: set()}
    return {
        Side.BID: {_decimal(p, "price") for p, _ in event.bids},
        Side.ASK: {_decimal(p, "price") for p, _ in event.asks},
    }


def _nonzero(levels: Sequence[Level]) -> dict[Decimal, tuple[str, str]]:
    return {_decimal(p, "price"): (p, q) for p, q in levels if _decimal(q, "quantity") != 0}


class OrderBook:
    """A price-level book with the update id it is at (``None`` before a snapshot).

    ``coverage`` is the price window the book knows: a book loaded from a snapshot knows
    only that snapshot's window, since diffs correct a level only when it changes. Levels
    deeper than that are unknown until a later snapshot fills them in (:meth:`heal`).
    ``None`` means the book makes no claim (built from levels alone).
    """

    def __init__(self) -> None:
        self._bids = _BookSide(reverse=True)
        self._asks = _BookSide(reverse=False)
        self.update_id: int | None = None
        self.coverage: Window | None = None

    def _side(self, side: Side) -> _BookSide:
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
        bid, ask = self._bids.best_price(), self._asks.best_price()
        return bid is not None and ask is not None and bid >= ask

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
        """
        window = Window.of(snapshot, limit)
        if self.coverage is not None:
            window = window.intersect(self.coverage)
        skip = _straddled(straddling)
        mismatches: list[LevelMismatch] = []
        checked = excluded = 0
        for side, theirs_levels in ((Side.BID, snapshot.bids), (Side.ASK, snapshot.asks)):
            ours_side = self._side(side)
            theirs = _nonzero(theirs_levels)
            keys = {p for p in theirs if window.covers(side, p)}
            keys.update(p for p in ours_side.prices() if window.covers(side, p))
            for key in sorted(keys):
                if key in skip[side]:
                    excluded += 1
                    continue
                checked += 1
                ours = ours_side.get(key)
                their = theirs.get(key)
                if ours is None or their is None or Decimal(ours[1]) != Decimal(their[1]):
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
        skip = _straddled(straddling)
        changed = 0
        for side, theirs_levels in ((Side.BID, snapshot.bids), (Side.ASK, snapshot.asks)):
            ours_side = self._side(side)
            theirs = _nonzero(theirs_levels)

            def unknown(price: Decimal, side: Side = side) -> bool:
                return (
                    window.covers(side, price)
                    and not coverage.covers(side, price)
                    and price not in skip[side]
                )

            for price in [p for p in ours_side.prices() if unknown(p) and p not in theirs]:
                ours_side.remove(price)
                changed += 1
            for price, (text, qty) in theirs.items():
                if unknown(price) and ours_side.get(price) != (text, qty):
                    ours_side.set(text, qty)
                    changed += 1
        self.coverage = coverage.union(window)
        return changed

    def prune_outside(self, window: Window) -> int:
        """Drop levels outside a snapshot's window (orphans); return how many were dropped."""
        removed = 0
        for side in (Side.BID, Side.ASK):
            book_side = self._side(side)
            removed += book_side.remove_where(
                p for p in book_side.prices() if window.covers(side, p)
            )
        return removed
