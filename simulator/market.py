"""The market model: per symbol a price-level book that moves like a real one (pure, no I/O).

Time advances in 10 ms slots by :meth:`SymbolModel.advance_to`; the same seed and the same
slot sequence give the same changes, so a test can step a minute of market in a fraction of
a second without waiting. Each change to a level gets the next update id of its symbol (one
sequence per symbol, shared by every connection and by REST snapshots); several ids may
touch the same level.

What moves the book, per slot:

- a bursty Poisson flow of single-level actions (the intensity follows a mean-reverting
  log process, so some 100 ms windows are quiet and some are busy): quantity changes and
  removals at the touch, and adds/removals along the ladder, mostly 10-50 bps from the
  mid, some much deeper;
- occasional ladder refreshes (a market maker pulls and re-places tens of levels at once);
- trades that sweep the best levels of one side (the mid walks through them).

The figures it is tuned to (real BTCUSDT ``@depth@100ms``, see DESIGN.md) are checked by
``tests/simulator/test_market.py``. Prices are integer ticks and quantities integer lots
inside; :mod:`simulator.wire` renders them as Binance's 8-decimal strings.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left, insort

from simulator.symbols import E8, SymbolSpec, parse_e8

BID = 0
ASK = 1
SLOT_MS = 10
FIRST_UPDATE_ID = 50_000_000_000


# Where actions happen, in bps from the mid: (share, low, high); shaped after the real data.
_DISTANCE_BANDS: tuple[tuple[float, float, float], ...] = (
    (0.04, 0.0, 1.0),
    (0.15, 1.0, 10.0),
    (0.66, 10.0, 50.0),
    (0.08, 50.0, 200.0),
    (0.04, 200.0, 1000.0),
    (0.03, 1000.0, 5000.0),
)
_MEAN_IDS_PER_SLOT = 6.0  # x 100 slots/s = the base id rate before bursts and trades
_INTENSITY_RHO = 0.97  # slot-to-slot memory of the log intensity (~330 ms)
_INTENSITY_SIGMA = 1.4  # stationary sd of the log intensity
_TOUCH_SHARE = 0.40  # share of actions at the touch
_TRADE_PER_SLOT = 0.02  # ~2 sweeping trades a second
_REFRESH_PER_SLOT = 0.004  # ~0.4 ladder refreshes a second
_FAIR_BPS_PER_MINUTE = 3.0  # sd of the fair price's random walk over a minute
_FAIR_JUMPS_PER_SLOT = 0.1  # the fair price moves in ~10 small jumps a second


class SymbolModel:
    """One symbol's true book, its update id and its change log."""

    def __init__(
        self,
        spec: SymbolSpec,
        *,
        seed: int,
        start_ms: int,
        first_update_id: int = FIRST_UPDATE_ID,
        log_capacity: int = 300_000,
        keep_full_log: bool = False,
    ) -> None:
        self.spec = spec
        self._rng = random.Random(f"{seed}:{spec.symbol}")
        self.time_ms = start_ms - start_ms % SLOT_MS
        self.update_id = first_update_id - 1  # the id of the last change applied
        self._levels: tuple[dict[int, int], dict[int, int]] = ({}, {})  # ticks -> lots
        self._sorted: tuple[list[int], list[int]] = ([], [])  # ascending ticks per side
        # The change log: entry i is update id log_start + i; key = ticks * 2 + side.
        self._log_keys = array("q")
        self._log_qty = array("q")
        self.log_start = first_update_id
        self._log_capacity = log_capacity
        self._keep_full_log = keep_full_log
        self._intensity = 0.0
        price_e8 = parse_e8(spec.start_price)
        start = price_e8 // spec.tick_e8
        # a median order of ~3000 quote units (0.05 BTC at 60000)
        self._median_lots = max(1.0, 3000 * E8 * E8 / (price_e8 * spec.lot_e8))
        self._bps_ticks = start / 10_000  # ticks per basis point at the start price
        self._fair = float(start)  # the price the touch is pulled to (a random walk)
        jumps_per_minute = _FAIR_JUMPS_PER_SLOT * 60_000 / SLOT_MS
        self._fair_step = _FAIR_BPS_PER_MINUTE * self._bps_ticks / math.sqrt(jumps_per_minute)
        self._seed_book(start)
        # the initial book is the state before the first id: forget how it was built
        self.update_id = first_update_id - 1
        self._log_keys = array("q")
        self._log_qty = array("q")

    # --- reading -----------------------------------------------------------------------

    def best(self, side: int) -> int | None:
        ticks = self._sorted[side]
        if not ticks:
            return None
        return ticks[-1] if side == BID else ticks[0]

    def depth(self) -> tuple[int, int]:
        return len(self._sorted[BID]), len(self._sorted[ASK])

    def levels(self, side: int, limit: int | None = None) -> list[tuple[int, int]]:
        """(ticks, lots) best first, at most ``limit`` levels."""
        ticks = self._sorted[side]
        count = len(ticks) if limit is None else min(limit, len(ticks))
        book = self._levels[side]
        chosen = ticks[len(ticks) - count :][::-1] if side == BID else ticks[:count]
        return [(t, book[t]) for t in chosen]

    def changes(self, after_id: int, up_to_id: int) -> tuple[array[int], array[int]]:
        """The log entries for ids ``after_id + 1 .. up_to_id`` (keys, quantities).

        A key is ``ticks * 2 + side``. Raises LookupError when the log no longer holds
        ``after_id + 1`` (the caller has fallen too far behind).
        """
        if after_id + 1 < self.log_start:
            raise LookupError(f"{self.spec.symbol}: update id {after_id + 1} left the log")
        lo = after_id + 1 - self.log_start
        hi = up_to_id + 1 - self.log_start
        return self._log_keys[lo:hi], self._log_qty[lo:hi]

    # --- moving ------------------------------------------------------------------------

    def advance_to(self, t_ms: int) -> None:
        """Run every 10 ms slot up to ``t_ms`` (a no-op for times already passed)."""
        while self.time_ms + SLOT_MS <= t_ms:
            self.time_ms += SLOT_MS
            self._slot()
        if not self._keep_full_log and len(self._log_qty) > self._log_capacity * 3 // 2:
            drop = len(self._log_qty) - self._log_capacity
            del self._log_keys[:drop]
            del self._log_qty[:drop]
            self.log_start += drop

    def _set(self, side: int, ticks: int, lots: int) -> None:
        book = self._levels[side]
        if lots <= 0:
            if book.pop(ticks, None) is None:
                return
            ladder = self._sorted[side]
            del ladder[bisect_left(ladder, ticks)]
            lots = 0
        else:
            if ticks not in book:
                insort(self._sorted[side], ticks)
            book[ticks] = lots
        self.update_id += 1
        self._log_keys.append(ticks * 2 + side)
        self._log_qty.append(lots)

    def _qty(self) -> int:
        lots = self._median_lots * math.exp(self._rng.gauss(0.0, 2.0))
        return max(1, min(int(lots), int(self._median_lots * 10_000)))

    def _distance_ticks(self) -> int:
        pick = self._rng.random()
        for share, low, high in _DISTANCE_BANDS:
            if pick < share:
                bps = (
                    low + (high - low) * self._rng.random()
                    if low == 0
                    else math.exp(self._rng.uniform(math.log(low), math.log(high)))
                )
                return max(1, int(bps * self._bps_ticks))
            pick -= share
        return max(1, int(_DISTANCE_BANDS[-1][2] * self._bps_ticks))

    def _mid(self) -> int:
        bid, ask = self.best(BID), self.best(ASK)
        if bid is None or ask is None:
            return bid if bid is not None else ask if ask is not None else 1
        return (bid + ask) // 2

    def _seed_book(self, start: int) -> None:
        self._set(BID, start, self._qty())
        self._set(ASK, start + 1, self._qty())
        for side in (BID, ASK):
            target = self.spec.levels_per_side
            while len(self._sorted[side]) < target:
                self._add_at_distance(side)

    def _add_at_distance(self, side: int) -> None:
        distance = self._distance_ticks()
        if side == BID:
            ask = self.best(ASK)
            ticks = self._mid() - distance
            if ticks <= 0 or (ask is not None and ticks >= ask):
                return
        else:
            bid = self.best(BID)
            ticks = self._mid() + distance
            if bid is not None and ticks <= bid:
                return
        self._set(side, ticks, self._qty())

    def _remove_near_distance(self, side: int) -> None:
        ladder = self._sorted[side]
        if len(ladder) < 2:
            return
        distance = self._distance_ticks()
        target = self._mid() - distance if side == BID else self._mid() + distance
        index = min(bisect_left(ladder, target), len(ladder) - 1)
        if index > 0 and abs(ladder[index - 1] - target) < abs(ladder[index] - target):
            index -= 1
        self._set(side, ladder[index], 0)

    def _slot(self) -> None:
        rng = self._rng
        eps = rng.gauss(0.0, 1.0) * _INTENSITY_SIGMA * math.sqrt(1 - _INTENSITY_RHO**2)
        self._intensity = _INTENSITY_RHO * self._intensity + eps
        rate = (
            self.spec.activity
            * _MEAN_IDS_PER_SLOT
            * math.exp(self._intensity - _INTENSITY_SIGMA**2 / 2)
        )
        for _ in range(_poisson(rng, rate)):
            if rng.random() < _TOUCH_SHARE:
                self._touch_action()
            else:
                self._ladder_action()
        if rng.random() < _FAIR_JUMPS_PER_SLOT:
            self._fair += rng.gauss(0.0, self._fair_step)
            self._follow_fair()
        if rng.random() < _TRADE_PER_SLOT * max(0.2, self.spec.activity):
            self._trade()
        if rng.random() < _REFRESH_PER_SLOT * max(0.2, self.spec.activity):
            self._refresh()
        if rng.random() < 0.5:
            self._requote()

    def _touch_action(self) -> None:
        rng = self._rng
        side = rng.randrange(2)
        bid, ask = self.best(BID), self.best(ASK)
        if bid is not None and ask is not None and ask - bid > 1 and rng.random() < 0.7:
            # improve the touch towards the fair price, never crossing
            offset = int(rng.expovariate(0.7))
            if side == BID:
                target = min(ask - 1, math.floor(self._fair) - offset)
                if target > bid:
                    self._set(BID, target, self._qty())
                    return
            else:
                target = max(bid + 1, math.ceil(self._fair) + offset)
                if target < ask:
                    self._set(ASK, target, self._qty())
                    return
        levels = self.levels(side, 4)
        if not levels:
            return
        ticks, lots = levels[min(len(levels) - 1, int(rng.expovariate(1.2)))]
        if rng.random() < 0.25 and len(self._sorted[side]) > 10:
            self._set(side, ticks, 0)
        else:
            change = max(1, int(lots * rng.uniform(0.05, 0.6)))
            self._set(side, ticks, lots + change if rng.random() < 0.55 else max(1, lots - change))

    def _ladder_action(self) -> None:
        side = self._rng.randrange(2)
        count = len(self._sorted[side])
        target = self.spec.levels_per_side
        p_remove = min(0.9, max(0.1, 0.5 + 4.0 * (count - target) / target))
        if self._rng.random() < p_remove:
            self._remove_near_distance(side)
        else:
            self._add_at_distance(side)

    def _trade(self) -> None:
        rng = self._rng
        side = rng.randrange(2)  # the side consumed: BID = a sell hits the bids
        swept = 0
        while rng.random() < 0.45 and swept < 8 and len(self._sorted[side]) > 10:
            best = self.best(side)
            assert best is not None
            self._set(side, best, 0)
            swept += 1
        best = self.best(side)
        if best is not None:
            lots = self._levels[side][best]
            self._set(side, best, max(0, lots - max(1, int(lots * rng.random()))))

    def _follow_fair(self) -> None:
        """Aggressive orders sweep the side the fair price moved through; makers requote."""
        swept = False
        for side in (ASK, BID):
            for _ in range(40):
                best = self.best(side)
                if best is None or len(self._sorted[side]) <= 10:
                    break
                if (best > self._fair) if side == ASK else (best < self._fair):
                    break
                self._set(side, best, 0)
                swept = True
        if swept:
            self._requote()

    def _requote(self) -> None:
        """Makers close a wide spread around the fair price."""
        bid, ask = self.best(BID), self.best(ASK)
        if bid is None or ask is None or ask - bid <= 1:
            return
        target = min(ask - 1, math.floor(self._fair))
        if target > bid:
            self._set(BID, target, self._qty())
            bid = target
        target = max(bid + 1, math.floor(self._fair) + 1)
        if target < ask:
            self._set(ASK, target, self._qty())

    def _refresh(self) -> None:
        side = self._rng.randrange(2)
        count = max(2, int(self._rng.lognormvariate(math.log(18), 0.8)))
        for _ in range(min(count, 400)):
            self._remove_near_distance(side)
            self._add_at_distance(side)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 40:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class MarketModel:
    """Every simulated symbol, advanced together."""

    def __init__(
        self,
        specs: list[SymbolSpec],
        *,
        seed: int,
        start_ms: int,
        first_update_id: int = FIRST_UPDATE_ID,
        log_capacity: int = 300_000,
        keep_full_log: bool = False,
    ) -> None:
        self.symbols: dict[str, SymbolModel] = {
            spec.symbol: SymbolModel(
                spec,
                seed=seed,
                start_ms=start_ms,
                first_update_id=first_update_id,
                log_capacity=log_capacity,
                keep_full_log=keep_full_log,
            )
            for spec in specs
        }

    def advance_to(self, t_ms: int) -> None:
        for model in self.symbols.values():
            model.advance_to(t_ms)
