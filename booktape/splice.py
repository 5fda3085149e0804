"""Splicing redundant recordings of one update-id sequence (pure).

Several sources (connections, collectors, regions) recorded the same symbol with their own
batch boundaries and their own holes. From a book at id ``cur``, ANY event with
``prev <= cur < u`` applies, whichever source recorded it (:func:`booktape.binance.splices`).
:class:`Splicer` walks the sources in id order with one cursor each and, at every step,
picks the first source in priority order whose next useful event splices onto ``cur``:
it stays on the preferred source while that one is continuous and fills its holes from the
others. When no source has such an event, the gap is real and only a snapshot can bridge it
(:meth:`Splicer.resume_after` tells where the recordings go on).

Events are given as ``(prev, u)`` pairs in each source's own order (ascending ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IdRange = tuple[int, int]  # (prev, u): previous id (spot U-1, futures pu) and final id


@dataclass(frozen=True, slots=True)
class Pick:
    source: int  # index into the sources
    index: int  # index of the event within that source


class Splicer:
    """Choose, step by step, the event that continues a book at ``cur``."""

    def __init__(self, sources: Sequence[Sequence[IdRange]], priority: Sequence[int] | None = None):
        self._sources = sources
        self._cursors = [0] * len(sources)
        self._order = list(priority) if priority is not None else list(range(len(sources)))
        if sorted(self._order) != list(range(len(sources))):
            raise ValueError("priority must be a permutation of the source indexes")

    def _skip_stale(self, source: int, cur: int) -> int:
        events = self._sources[source]
        index = self._cursors[source]
        while index < len(events) and events[index][1] <= cur:
            index += 1
        self._cursors[source] = index
        return index

    def pick(self, cur: int) -> Pick | None:
        """The event to apply next from a book at ``cur``, or None at a real gap or the end.

        Events at or before ``cur`` (``u <= cur``) are skipped as already applied.
        """
        for source in self._order:
            index = self._skip_stale(source, cur)
            events = self._sources[source]
            if index < len(events) and events[index][0] <= cur:
                return Pick(source, index)
        return None

    def take(self, pick: Pick) -> IdRange:
        """Consume a picked event and return its ``(prev, u)``."""
        self._cursors[pick.source] = pick.index + 1
        return self._sources[pick.source][pick.index]

    def resume_after(self, cur: int) -> Pick | None:
        """At a gap: the pending event with the smallest ``prev`` (where recording resumes)."""
        best: Pick | None = None
        best_prev = 0
        for source in self._order:
            index = self._skip_stale(source, cur)
            events = self._sources[source]
            if index < len(events) and (best is None or events[index][0] < best_prev):
                best, best_prev = Pick(source, index), events[index][0]
        return best
