"""One side of the order book (:class:`booktape.book.OrderBook`), kept two ways.

Levels are keyed by their exact price: a float where the float is exact (every price of up
to 15 significant digits), else a :class:`decimal.Decimal`; the exchange's strings are kept
and given back unchanged. :class:`BookSide` keeps its keys sorted at every update (for
readers of the top levels after each event); :class:`LazySide` sorts only when asked and
gives the best level from a heap (the merger's: it reads the best level after each event
and the whole side only at audits).

Both update loops have a C twin (booktape/_fastbook.c, built when a C compiler is there:
:data:`ACCELERATED`) that applies the common level -- a short price, a positive quantity or
a known zero spelling, exact strings -- and hands every other one back to the Python loop,
which stays the reference.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from heapq import heapify, heappop, heappush
from typing import Any, Final

from booktape.binance import Level
from booktape.cext import c_function
from booktape.errors import BookError

# (book, order, sign, levels, start, zeros) -> -1, or the index of a level left to Python
FastUpdate = Callable[[dict[Any, Any], list[Any], float, Sequence[Level], int, set[str]], int]


_C_SORTED: Final[FastUpdate | None] = c_function("_fastbook", "sorted_update")
_C_LAZY: Final[FastUpdate | None] = c_function("_fastbook", "lazy_update")
ACCELERATED: Final = _C_SORTED is not None  # the update loops run in C (else in Python)


def exact_decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise BookError(f"{what} {text!r} is not a decimal number") from exc
    if not value.is_finite() or value < 0:
        raise BookError(f"{what} {text!r} is not a finite non-negative number")
    return value


_CACHE_MAX = 1 << 12  # long price strings remembered per side (bounded)
_ZEROS_MAX = 256  # distinct spellings of a zero quantity remembered
INF = float("inf")
_SHORT = 15  # characters: a price string this short has at most 15 significant digits
_FLOAT_LOW, _FLOAT_HIGH = 1e-300, 1e300  # normal floats (subnormals hold fewer digits)
ZERO_SPELLINGS: set[str] = set()  # quantity strings known to be zero ("0.00000000", "0E-8", ...)

Key = float | Decimal  # a level's sort key (see BookSide)


def is_zero_qty(qty: str) -> bool:
    """Validate a quantity float() could not vouch for; True when it is zero."""
    zero = exact_decimal(qty, "quantity") == 0
    if zero:
        if len(ZERO_SPELLINGS) >= _ZEROS_MAX:
            ZERO_SPELLINGS.clear()
        ZERO_SPELLINGS.add(qty)
    return zero


class BookSide:
    """One side: key -> (price string, qty string), the keys kept sorted with the best last.

    A key is the price as a float (negated on the ask side, so that for both sides the
    keys ascend towards the best price and a change near the top moves few list items).
    A float is used only when it is exact: the price is the shortest decimal that rounds
    to it (every price of up to 15 significant digits), so distinct prices get distinct
    keys in the right order, and one price written two ways ("0.0100", "0.01") one key.
    A price that is not (more digits than a float holds) switches the side to
    :class:`~decimal.Decimal` keys for good.

    The hot path is :meth:`update`: a short price string is its float (:meth:`key`), and
    a quantity is zero or not by ``float()``, with a full decimal check only for what
    ``float()`` cannot vouch for (zeros, junk); no per-string cache grows with the day.
    """

    __slots__ = ("_cache", "_exact", "_fast", "_keys", "_levels", "_sign")

    def __init__(self, reverse: bool) -> None:
        self._fast: FastUpdate | None = _C_SORTED  # the C loop, if built
        self._levels: dict[Key, tuple[str, str]] = {}
        self._keys: list[Key] = []  # ascending; the best level is the last
        self._sign = 1 if reverse else -1  # bids: key = price; asks: key = -price
        self._cache: dict[str, Key] = {}  # price string -> its validated key
        self._exact = False  # True once the keys are Decimals

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._levels.clear()
        self._keys.clear()

    def key_of(self, value: Decimal) -> Key:
        """The key of a (validated) price."""
        if not self._exact:
            as_float = float(value)
            if Decimal(repr(as_float)) == value:
                return as_float * self._sign
            self._to_exact()
        return value if self._sign > 0 else value.copy_negate()

    def key(self, price: str) -> Key:
        """The key of a price string (validated).

        A price string of at most 15 characters has at most 15 significant digits, so
        ``float()`` of it is exact and is the key straight away; any other string (long,
        odd or bad) is validated as a decimal, through a bounded cache.
        """
        if not self._exact and type(price) is str and len(price) <= _SHORT:
            try:
                value = float(price)
            except ValueError:
                value = 0.0
            if _FLOAT_LOW < value < _FLOAT_HIGH:
                return value * self._sign
        key = self._cache.get(price)
        if key is None:
            key = self.key_of(exact_decimal(price, "price"))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[price] = key
        return key

    def _to_exact(self) -> None:
        """Switch to Decimal keys (a price a float cannot hold exactly was seen)."""
        self._exact = True
        self._cache.clear()
        stored = self._stored_key
        self._levels = {
            stored(self.key_of(Decimal(text))): (text, qty) for text, qty in self._levels.values()
        }
        self._order()

    def _stored_key(self, key: Key) -> Key:
        """How a key is held in ``_levels`` (here: as it is)."""
        return key

    def _order(self) -> None:
        """Rebuild the order of ``_levels`` after its keys changed."""
        self._keys = sorted(self._levels)

    def set(self, price: str, qty: str) -> None:
        self.update(((price, qty),))

    def _fast_args(self) -> tuple[list[Key], float]:
        """What the C loop works on besides the dict: the sorted keys, the keys' sign."""
        return self._keys, float(self._sign)

    def update(self, levels: Iterable[Level]) -> None:
        """Set each level's absolute quantity; zero removes it.

        The C loop takes the levels it can; from the first it leaves, that one level goes
        through the Python loop (which may raise, or switch the side to Decimal keys), and
        the C loop goes on after it, while the side keeps float keys.
        """
        fast = self._fast
        if fast is None or (type(levels) is not tuple and type(levels) is not list):
            self._py_apply(levels)
            return
        start = 0
        while not self._exact:
            order, sign = self._fast_args()
            stopped = fast(self._levels, order, sign, levels, start, ZERO_SPELLINGS)
            if stopped < 0:
                return
            start = stopped + 1
            self._py_apply(levels[stopped:start])
        self._py_apply(levels[start:])  # Decimal keys: the rest in Python

    def _py_apply(self, levels: Iterable[Level]) -> None:
        """Set each level's absolute quantity; zero removes it (the reference loop)."""
        book, keys, sign, exact = self._levels, self._keys, self._sign, self._exact
        zeros = ZERO_SPELLINGS
        for price, qty in levels:
            try:  # as in key(), inlined
                value = float(price) if len(price) <= _SHORT else 0.0
            except (TypeError, ValueError):
                value = 0.0
            if _FLOAT_LOW < value < _FLOAT_HIGH and not exact:
                key: Key = value * sign
            else:
                key = self.key(price)
                book, keys, exact = self._levels, self._keys, self._exact  # may have switched
            try:
                amount = float(qty)
            except (TypeError, ValueError):
                amount = -1.0  # junk: the check below raises BookError
            if not 0.0 < amount < INF and (qty in zeros or is_zero_qty(qty)):
                if book.pop(key, None) is not None:
                    del keys[bisect_left(keys, key)]
            else:
                if key not in book:
                    insort(keys, key)
                book[key] = (price, qty)

    def remove(self, key: Key) -> None:
        if self._levels.pop(key, None) is not None:
            del self._keys[bisect_left(self._keys, key)]

    def get(self, key: Key) -> tuple[str, str] | None:
        return self._levels.get(key)

    def best(self) -> Level | None:
        return self._levels[self._keys[-1]] if self._keys else None

    def best_key(self) -> Key | None:
        return self._keys[-1] if self._keys else None

    def iter_best_first(self) -> Iterator[Level]:
        levels = self._levels
        for key in reversed(self._keys):
            yield levels[key]

    def sorted_keys(self) -> Sequence[Key]:
        """Every key, ascending (worst level first)."""
        return self._keys

    def remove_where(self, keep: Iterable[Key]) -> int:
        """Keep only the given keys (ascending); return how many levels were removed."""
        kept = list(keep)
        removed = len(self._keys) - len(kept)
        self._levels = {k: self._levels[k] for k in kept}
        self._keys = kept
        return removed


def _neg(key: Key) -> Key:
    """A key negated exactly (a Decimal's unary minus would round to its context)."""
    return -key if type(key) is float else key.copy_negate()  # type: ignore[union-attr]


class LazySide(BookSide):
    """A side that sorts its prices only when asked (for a book read mostly at its top).

    Inside, each level is keyed by the NEGATED key of :class:`BookSide` (so the best level
    has the lowest key), and a heap of those same key objects gives the best level; the
    heap may still hold keys since removed (dropped when they reach its top, or all at once
    when they outnumber the live ones). A sorted list is made only on demand (an audit, the
    closing book). An update costs a dict operation per level, plus a heap push for a new
    price, instead of a sorted insert or delete. Outside, every method takes and gives the
    keys of :class:`BookSide`: same levels, same order, same answers.
    """

    __slots__ = ("_heap",)

    def __init__(self, reverse: bool) -> None:
        super().__init__(reverse)
        self._fast = _C_LAZY
        self._heap: list[Key] = []  # the inner keys, a heap: the best level first

    def __len__(self) -> int:
        return len(self._levels)

    def clear(self) -> None:
        self._levels.clear()
        self._heap.clear()

    def _stored_key(self, key: Key) -> Key:
        return _neg(key)

    def _order(self) -> None:
        self._heap = sorted(self._levels)

    def _fast_args(self) -> tuple[list[Key], float]:
        return self._heap, float(-self._sign)

    def update(self, levels: Iterable[Level]) -> None:
        """Set each level's absolute quantity; zero removes it."""
        super().update(levels)
        if len(self._heap) > 2 * len(self._levels) + 64:  # mostly removed keys: rebuild
            self._heap = list(self._levels)
            heapify(self._heap)

    def _py_apply(self, levels: Iterable[Level]) -> None:
        """Set each level's absolute quantity; zero removes it (the reference loop)."""
        book, heap, inner, exact = self._levels, self._heap, -self._sign, self._exact
        zeros = ZERO_SPELLINGS
        for price, qty in levels:
            try:  # as in BookSide.update
                value = float(price) if len(price) <= _SHORT else 0.0
            except (TypeError, ValueError):
                value = 0.0
            if _FLOAT_LOW < value < _FLOAT_HIGH and not exact:
                key: Key = value * inner
            else:
                key = _neg(self.key(price))
                book, heap, exact = self._levels, self._heap, self._exact  # may have switched
            try:
                amount = float(qty)
            except (TypeError, ValueError):
                amount = -1.0  # junk: the check below raises BookError
            if not 0.0 < amount < INF and (qty in zeros or is_zero_qty(qty)):
                book.pop(key, None)
            else:
                if key not in book:
                    heappush(heap, key)
                book[key] = (price, qty)

    def remove(self, key: Key) -> None:
        self._levels.pop(_neg(key), None)

    def get(self, key: Key) -> tuple[str, str] | None:
        return self._levels.get(_neg(key))

    def _top(self) -> Key | None:
        """The inner key of the best level (removed keys popped on the way)."""
        heap, book = self._heap, self._levels
        while heap:
            if heap[0] in book:
                return heap[0]
            heappop(heap)  # a level removed since
        return None

    def best_key(self) -> Key | None:
        top = self._top()
        return None if top is None else _neg(top)

    def best(self) -> Level | None:
        top = self._top()
        return None if top is None else self._levels[top]

    def iter_best_first(self) -> Iterator[Level]:
        levels = self._levels
        for key in sorted(levels):
            yield levels[key]

    def sorted_keys(self) -> Sequence[Key]:
        """Every key, ascending (worst level first); made anew at each call."""
        return [_neg(key) for key in sorted(self._levels, reverse=True)]

    def remove_where(self, keep: Iterable[Key]) -> int:
        """Keep only the given keys (ascending); return how many levels were removed."""
        kept = [_neg(key) for key in keep]
        kept.reverse()  # inner keys, ascending: a heap already
        removed = len(self._levels) - len(kept)
        self._levels = {k: self._levels[k] for k in kept}
        self._heap = kept
        return removed
