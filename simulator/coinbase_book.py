"""The simulator's Coinbase market: deep level-3 books with UUID order ids, and price points.

Each product has its own order-level book, seeded from ``(seed, product)`` and so
deterministic for a given sequence of clock readings: a few thousand resting orders a
side (price ticks of 0.01, sizes with 8 decimals), which moves with the clock at
``activity`` events a second. An event adds an order (never crossing the other side),
cancels one, or partly fills the best order of a side; each event takes the next
``sequence`` number, as Coinbase's full channel does.

Bodies follow the Exchange API (:mod:`booktape.coinbase`): level 3 lists every order as
``[price, size, order_id]``, bids best first, orders of one price in time priority;
levels 1 and 2 aggregate them (``[price, size, num_orders]``, ``num_orders`` an integer),
so level 2 is always the exact aggregation of level 3 at the same sequence.

Ground truth: :meth:`CoinbaseBookModel.snapshot` is the level-3 book now; every book
served is also kept by sequence (a bounded history) for :meth:`book_at`.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

import orjson

from booktape.coinbase import L3Book, OrderEntry, aggregate_side

E8 = 100_000_000
NS_PER_S = 1_000_000_000
MAX_EVENTS_PER_ADVANCE = 100_000  # after a long idle the book catches up at most this much
_START_PRICES = {"BTC": 3_000_000, "ETH": 200_000, "LTC": 8_000, "XRP": 60}  # in cents


def price_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def size_text(e8: int) -> str:
    return f"{e8 // E8}.{e8 % E8:08d}"


def iso_time(t_ns: int) -> str:
    """Coinbase's ``time``: ISO 8601 UTC with microseconds, e.g. 2024-01-01T00:00:00.123456Z."""
    moment = datetime.fromtimestamp(t_ns // NS_PER_S, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{t_ns % NS_PER_S // 1000:06d}Z"


def start_price(base: str) -> int:
    """A product's opening mid price in cents (stable per base currency)."""
    if base in _START_PRICES:
        return _START_PRICES[base]
    return 1_000 + sum(base.encode()) * 37 % 100_000


class _Side:
    """One side: price -> {order_id: size_e8} in time priority, and the sorted prices."""

    def __init__(self, bids: bool) -> None:
        self.bids = bids
        self.levels: dict[int, dict[str, int]] = {}
        self.prices: list[int] = []  # ascending
        self.ids: list[str] = []  # for a uniform random pick
        self.where: dict[str, tuple[int, int]] = {}  # order_id -> (price, index in ids)

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.bids else self.prices[0]

    def add(self, order_id: str, price: int, size: int) -> None:
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = {}
            bisect.insort(self.prices, price)
        level[order_id] = size
        self.where[order_id] = (price, len(self.ids))
        self.ids.append(order_id)

    def remove(self, order_id: str) -> None:
        price, index = self.where.pop(order_id)
        last = self.ids.pop()
        if last != order_id:
            self.ids[index] = last
            self.where[last] = (self.where[last][0], index)
        level = self.levels[price]
        del level[order_id]
        if not level:
            del self.levels[price]
            self.prices.pop(bisect.bisect_left(self.prices, price))

    def orders(self) -> tuple[OrderEntry, ...]:
        prices = reversed(self.prices) if self.bids else iter(self.prices)
        return tuple(
            OrderEntry(price_text(p), size_text(s), oid)
            for p in prices
            for oid, s in self.levels[p].items()
        )


class CoinbaseBookModel:
    """One product's level-3 book, moving with the clock."""

    def __init__(
        self,
        product: str,
        *,
        seed: int,
        start_ns: int,
        orders_per_side: int = 3000,
        activity: float = 20.0,
        first_sequence: int = 1_000_000,
        history: int = 32,
    ) -> None:
        self.product = product
        self.orders_per_side = orders_per_side
        self.activity = activity
        self.sequence = first_sequence
        self._rng = random.Random(f"{seed}:{product}")
        self._t_ns = float(start_ns)
        self._history: OrderedDict[int, L3Book] = OrderedDict()
        self._history_size = history
        self.bids, self.asks = _Side(bids=True), _Side(bids=False)
        mid = start_price(product.split("-", maxsplit=1)[0])
        self._spread_ticks = max(1.0, orders_per_side / 10)  # mean distance from the touch
        for _ in range(orders_per_side):
            self.bids.add(self._order_id(), mid - 1 - self._offset(), self._size())
            self.asks.add(self._order_id(), mid + 1 + self._offset(), self._size())

    # --- randomness -----------------------------------------------------------------

    def _order_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _offset(self) -> int:
        return int(self._rng.expovariate(1 / self._spread_ticks))

    def _size(self) -> int:
        return max(1, int(self._rng.lognormvariate(math.log(0.2 * E8), 1.2)))

    # --- time -----------------------------------------------------------------------

    def advance_to(self, t_ns: int) -> None:
        """Apply the events due between the last reading and ``t_ns``."""
        due = int((t_ns - self._t_ns) * self.activity / NS_PER_S)
        if due <= 0:
            return
        if due > MAX_EVENTS_PER_ADVANCE:
            self._t_ns, due = float(t_ns), MAX_EVENTS_PER_ADVANCE
        else:
            self._t_ns += due * NS_PER_S / self.activity
        for _ in range(due):
            self.step()

    def step(self) -> None:
        """One event: add, cancel or partly fill; it takes the next sequence number."""
        rng = self._rng
        side = self.bids if rng.random() < 0.5 else self.asks
        other = self.asks if side is self.bids else self.bids
        count = len(side.ids)
        roll = rng.random()
        add_share = 0.45 + 0.4 * (1 - count / self.orders_per_side)  # pull towards the target
        if count < 2 or roll < add_share:
            touch = other.best()
            own = side.best()
            if touch is None:
                touch = (own or 100) + (1 if side.bids else -1)
            price = touch - 1 - self._offset() if side.bids else touch + 1 + self._offset()
            side.add(self._order_id(), max(1, price), self._size())
        elif roll < 0.9:
            side.remove(side.ids[rng.randrange(count)])
        else:
            best = side.best()
            assert best is not None
            level = side.levels[best]
            order_id = next(iter(level))
            filled = rng.randint(1, level[order_id])
            if filled >= level[order_id]:
                side.remove(order_id)
            else:
                level[order_id] -= filled
        self.sequence += 1

    # --- what is served ---------------------------------------------------------------

    def snapshot(self) -> L3Book:
        """The level-3 book now (``time`` = the model's clock)."""
        time = iso_time(int(self._t_ns))
        return L3Book(self.sequence, time, self.bids.orders(), self.asks.orders())

    def served(self, now_ns: int) -> L3Book:
        """The book now, remembered by sequence (the history :meth:`book_at` reads)."""
        book = self._history.get(self.sequence)
        if book is None:
            book = self.snapshot()
            self._history[book.sequence] = book
            while len(self._history) > self._history_size:
                self._history.popitem(last=False)
        return L3Book(book.sequence, iso_time(now_ns), book.bids, book.asks)

    def book_at(self, sequence: int) -> L3Book | None:
        """A book served at ``sequence``, if still in the history."""
        return self._history.get(sequence)

    def body(self, level: int, now_ns: int) -> bytes:
        """The ``/products/{id}/book?level=N`` body now."""
        book = self.served(now_ns)
        bids: list[tuple[str | int, ...]]
        asks: list[tuple[str | int, ...]]
        if level == 3:
            bids, asks = [tuple(e) for e in book.bids], [tuple(e) for e in book.asks]
        else:
            bids = [tuple(e) for e in aggregate_side(book.bids, bids=True)]
            asks = [tuple(e) for e in aggregate_side(book.asks, bids=False)]
            if level == 1:
                bids, asks = bids[:1], asks[:1]
        return orjson.dumps(
            {
                "bids": bids,
                "asks": asks,
                "sequence": book.sequence,
                "auction_mode": False,
                "auction": None,
                "time": book.time,
            }
        )

    def prices(self) -> tuple[int, int, int] | None:
        """(buy, sell, spot) in cents: best ask, best bid, their mid."""
        bid, ask = self.bids.best(), self.asks.best()
        if bid is None or ask is None:
            return None
        return ask, bid, (bid + ask) // 2


def fallback_prices(base: str, t_ns: int) -> tuple[int, int, int]:
    """(buy, sell, spot) in cents for a currency without a modelled ``-USD`` book."""
    spot = max(2, round(start_price(base) * (1 + 0.002 * math.sin(t_ns / NS_PER_S / 60))))
    return spot + max(1, spot // 200), spot - max(1, spot // 200), spot


def price_body(base: str, quote: str, cents: int) -> bytes:
    """A v2 price point body."""
    return orjson.dumps({"data": {"amount": price_text(cents), "base": base, "currency": quote}})
