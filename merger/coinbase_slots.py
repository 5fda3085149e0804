"""Coinbase slot selection: raw chunks of one product- or currency-day -> one pick per slot.

Pure bookkeeping (no I/O): :class:`SlotLog` reads decoded chunks one at a time (pass 1 of
the merge) and remembers, for every usable response, only what the choice needs (slot,
times, sequence, a digest of the book); :meth:`SlotLog.select` then picks per slot and
lists the missing ones. The merge (merger.coinbase) re-reads the chosen records to write
them (pass 2), so a day of level-3 books is never held in memory at once.

Rules (README "Coinbase canonical output"):

- usable = a ``snap`` record with HTTP status 200 whose ``slot`` lies in the day and whose
  body parses (book: its head here, every entry when it is written -- a chosen body that
  fails then is rejected and the slot chosen again; prices: an amount). Non-200
  responses and unparseable bodies are counted per source, never used.
- the pick for a slot (for prices: a slot and a kind) is the usable response nearest its
  slot, distance = ``|(q + t) / 2 - slot|`` (the midpoint of request and response times
  estimates when the server built it); ties go to the first source in name order. A
  response of a lower book level is used only where no response of the day's highest
  level exists for the slot. Equal ``sequence`` means the same book: responses that share
  a sequence are compared (the ``audit``), and a difference is reported as a mismatch.
- the expected grid: every ``interval_ns`` from the first to the last expected slot, in
  the phase of the recorded slots. The first is the day's first grid slot when the
  product was already recorded the day before, else the first slot any source recorded
  (a response of any status or a ``miss`` record). The last is the day's last grid slot
  when the day is over, else the last slot any source recorded (a day still being
  recorded ends where the recording is now). Missing slots = expected slots without a
  pick; picks off the grid are kept and counted (``off_grid``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from booktape.codec import Conn, DataRecord, Snap
from booktape.coinbase import PRICE_KINDS, PricePoint, book_sequence, parse_price
from booktape.errors import FrameError
from booktape.keys import NS_PER_DAY


def price_of(body: bytes, base: str) -> PricePoint:
    """A price point body for ``base``; raises FrameError (another base included)."""
    point = parse_price(body)
    if point.base != base:
        raise FrameError(f"price body is for {point.base!r}, not {base!r}")
    return point


def book_digest(body: bytes) -> tuple[int, bytes]:
    """(sequence, digest of both sides): "the same book" means equal entries, time aside.

    Only the body's head is checked here (booktape.coinbase.book_sequence); the entries
    are parsed in full when the snapshot is written (pass 2), which rejects a bad one.
    """
    sequence = book_sequence(body)
    doc = orjson.loads(body)
    return sequence, hashlib.sha256(orjson.dumps([doc["bids"], doc["asks"]])).digest()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A usable response: where to find it again and what the choice needs."""

    slot: int  # ns of the grid slot it answers
    kind: str  # "" for books; buy/sell/spot for prices
    source: str  # region.collector
    key: str  # the raw object holding it
    index: int  # its position among the object's data records
    q: int  # request ns
    t: int  # response ns
    level: int  # book level (0 for prices)
    sequence: int | None  # book sequence (None for prices)
    digest: bytes  # book digest (prices: the amount)

    @property
    def distance(self) -> int:
        return abs((self.q + self.t) // 2 - self.slot)


@dataclass(slots=True)
class SourceTally:
    """What one source recorded for the day's slots."""

    responses: int = 0  # snap records for the day's slots, any status
    usable: int = 0
    non_200: int = 0
    unparseable: int = 0  # status 200 but not a book / price body
    missed: int = 0  # conn "miss" records: the collector says it skipped the slot
    sequences: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive missing grid slots (inclusive)."""

    first: int
    last: int
    slots: int


@dataclass(slots=True)
class Selection:
    picks: list[Candidate]  # by (slot, kind)
    expected_from: int | None
    expected_to: int | None
    expected: int
    present: int
    missing: list[Run]
    off_grid: int
    own_gaps: dict[str, int]  # source -> expected slots it has no usable response for
    audit_checked: int = 0
    audit_mismatched: int = 0
    first_mismatch: dict[str, object] | None = None

    @property
    def missing_slots(self) -> int:
        return sum(run.slots for run in self.missing)


class SlotLog:
    """Pass 1 of a Coinbase product- or currency-day (see the module docstring)."""

    def __init__(self, channel: str, symbol: str, date_start_ns: int) -> None:
        self.channel = channel  # "book" or "prices"
        self.symbol = symbol
        self.day_start = date_start_ns
        self.candidates: list[Candidate] = []
        self.sources: dict[str, SourceTally] = {}
        self.attempted: set[int] = set()  # slots of the day any source tried
        self.intervals: set[int] = set()
        self.levels: set[int] = set()
        self.header_level: int | None = None  # the current chunk header's level
        self.other_day = 0  # responses to slots of another day (late answers at midnight)
        self._seen: set[tuple[str, int, str, bytes]] = set()

    def _in_day(self, slot: int) -> bool:
        return self.day_start <= slot < self.day_start + NS_PER_DAY

    def add_chunk(
        self, key: str, source: str, header: Mapping[str, Any], records: Sequence[DataRecord]
    ) -> None:
        """Take one decoded chunk of ``source``: its header extra, its records in order."""
        tally = self.sources.setdefault(source, SourceTally())
        interval_ns, level = header.get("interval_ns"), header.get("level")
        if type(interval_ns) is int and interval_ns > 0:
            self.intervals.add(interval_ns)
        self.header_level = level if type(level) is int else None
        for index, record in enumerate(records):
            if isinstance(record, Conn) and record.ev == "miss":
                slot = record.info.get("slot")
                if type(slot) is int and self._in_day(slot):
                    tally.missed += 1
                    self.attempted.add(slot)
            elif isinstance(record, Snap):
                self._add_snap(key, source, index, record, tally)

    def _add_snap(self, key: str, source: str, index: int, rec: Snap, tally: SourceTally) -> None:
        slot = rec.extra.get("slot")
        if type(slot) is not int:
            return
        if not self._in_day(slot):
            self.other_day += 1
            return
        identity = (source, rec.t, rec.r, rec.raw)
        if identity in self._seen:
            return  # the same response recorded twice
        self._seen.add(identity)
        self.attempted.add(slot)
        tally.responses += 1
        if rec.extra.get("status", 200) != 200:
            tally.non_200 += 1
            return
        try:
            candidate = self._candidate(key, source, index, rec, slot)
        except FrameError:
            tally.unparseable += 1
            return
        tally.usable += 1
        if candidate.sequence is not None:
            tally.sequences.append(candidate.sequence)
        self.candidates.append(candidate)

    def _candidate(self, key: str, source: str, index: int, rec: Snap, slot: int) -> Candidate:
        if self.channel == "book":
            level = rec.extra.get("level", self.header_level)
            level = level if type(level) is int else 2
            sequence, digest = book_digest(rec.raw)
            self.levels.add(level)
            return Candidate(slot, "", source, key, index, rec.q, rec.t, level, sequence,
                             digest)  # fmt: skip
        kind = rec.extra.get("kind")
        if not isinstance(kind, str):
            kind = rec.r.rstrip("/").rsplit("/", 1)[-1]
        if kind not in PRICE_KINDS:
            raise FrameError(f"unknown price kind {kind!r}")
        point = price_of(rec.raw, self.symbol)
        return Candidate(
            slot, kind, source, key, index, rec.q, rec.t, 0, None, point.amount.encode()
        )

    def reject(self, candidate: Candidate) -> None:
        """Drop a candidate whose body failed the full parse (counted as unparseable)."""
        self.candidates.remove(candidate)
        tally = self.sources[candidate.source]
        tally.usable -= 1
        tally.unparseable += 1
        if candidate.sequence is not None:
            tally.sequences.remove(candidate.sequence)

    def select(self, *, started_before: bool, day_over: bool) -> Selection:
        """Pick one response per slot (and kind); list the expected slots without one."""
        order = {source: n for n, source in enumerate(sorted(self.sources))}
        best: dict[tuple[int, str], Candidate] = {}
        for c in self.candidates:
            rank = (-c.level, c.distance, order[c.source], c.t, c.key, c.index)
            held = best.get((c.slot, c.kind))
            if held is None or rank < (-held.level, held.distance, order[held.source], held.t,
                                       held.key, held.index):  # fmt: skip
                best[(c.slot, c.kind)] = c
        picks = [best[k] for k in sorted(best)]
        grid = self._grid(started_before=started_before, day_over=day_over)
        kinds = sorted({c.kind for c in picks})
        complete = {s for s in {c.slot for c in picks} if all((s, k) in best for k in kinds)}
        missing_slots = [s for s in grid if s not in complete]
        grid_set = set(grid)
        usable_by_source: dict[str, set[int]] = {s: set() for s in self.sources}
        for c in self.candidates:
            usable_by_source[c.source].add(c.slot)
        selection = Selection(
            picks=picks,
            expected_from=grid[0] if grid else None,
            expected_to=grid[-1] if grid else None,
            expected=len(grid),
            present=len(grid) - len(missing_slots),
            missing=runs(missing_slots, self.interval),
            off_grid=len({c.slot for c in picks} - grid_set),
            own_gaps={s: len(grid_set - got) for s, got in sorted(usable_by_source.items())},
        )
        if self.channel == "book":
            self._audit(selection, order)
        return selection

    @property
    def interval(self) -> int | None:
        """The grid interval: the finest the headers name, else the finest slot spacing."""
        if self.intervals:
            return min(self.intervals)
        slots = sorted(self.attempted)
        steps = [b - a for a, b in itertools.pairwise(slots) if b > a]
        return min(steps) if steps else None

    def _grid(self, *, started_before: bool, day_over: bool) -> list[int]:
        if not self.attempted:
            return []
        first, last, step = min(self.attempted), max(self.attempted), self.interval
        if step is None:
            return [first]
        day_end = self.day_start + NS_PER_DAY
        start = self.day_start + (first - self.day_start) % step if started_before else first
        end = day_end - 1 - (day_end - 1 - first) % step if day_over else last
        return list(range(start, end + 1, step))

    def _audit(self, selection: Selection, order: dict[str, int]) -> None:
        """Responses sharing a sequence must hold the same book."""
        by_sequence: dict[int, list[Candidate]] = {}
        for c in self.candidates:
            if c.sequence is not None:
                by_sequence.setdefault(c.sequence, []).append(c)
        for sequence in sorted(by_sequence):
            group = sorted(by_sequence[sequence], key=lambda c: (order[c.source], c.t, c.key))
            for other in group[1:]:
                selection.audit_checked += 1
                if other.digest != group[0].digest:
                    selection.audit_mismatched += 1
                    if selection.first_mismatch is None:
                        selection.first_mismatch = {
                            "sequence": sequence,
                            "key": other.key,
                            "differs_from": group[0].key,
                        }


def runs(slots: Iterable[int], step: int | None) -> list[Run]:
    """Group ascending grid slots into runs of consecutive ones."""
    out: list[Run] = []
    for slot in slots:
        if out and step is not None and slot == out[-1].last + step:
            out[-1] = Run(out[-1].first, slot, out[-1].slots + 1)
        else:
            out.append(Run(slot, slot, 1))
    return out
