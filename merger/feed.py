"""The events and snapshots of one symbol-day, read chunk by chunk as the stitcher walks.

The merger never holds a whole day: :class:`Feed` reads each source's chunks in key order
only as far as the stitcher's book has come, plus a look-ahead, and the stitcher drops what
it has passed. Memory is bounded by the book and a few chunks per source, whatever the
length of the day.

Reading rule. For a book at update id ``cur`` the stitcher needs, from every source, every
event that might splice onto ``cur`` (``prev <= cur < u``) and every snapshot whose
``lastUpdateId`` is near ``cur``. A source's ids grow with its receive time, so
:meth:`Feed.fill` reads a source until some chunk holds an event with ``u > cur``, then
``lookahead`` chunks more: a connection that lags another of the same source (a rotation's
overlap), or a snapshot answered a little after the events it covers, is read before the
stitcher can need it. A snapshot recorded more than the look-ahead after its ids were
streamed may be seen too late to audit; it is never wrong, only unused.

A :class:`Feed` made :meth:`from_loaded` holds a whole in-memory day (tests, small tools)
and never reads.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from booktape.keys import RawKey, parse_raw_key
from merger.load import ChunkReader, Loaded
from merger.model import SourceSnapshot, StreamEvent

__all__ = ["Feed", "Fetcher"]

LOOKAHEAD: Final = 1  # chunks read past the first one that goes beyond the book
CATCH_UP_NS: Final = 10**9  # before a standby's event is taken, read every source this far
NEVER: Final = 2**63  # an id no book reaches


class Fetcher(Protocol):
    """Gets an object's bytes (blocking); may start fetching the next keys early."""

    def get(self, key: str) -> bytes: ...

    def prefetch(self, key: str) -> None: ...


def _start_ns(key: RawKey) -> int:
    """Receive time of a chunk's first record, from its key."""
    midnight = dt.datetime.combine(key.date, dt.time(), tzinfo=dt.UTC)
    return int(midnight.timestamp()) * 10**9 + key.time_ms * 10**6


@dataclass(slots=True)
class _Source:
    """One source's chunks. Kept per chunk for the whole day: its key, its start and its
    reach (~150 bytes), not its parsed key (parsed again when the chunk is read)."""

    keys: list[str]
    starts: array[int]  # each chunk's first receive time
    read: int = 0  # chunks read so far
    reach: list[int] = field(default_factory=list)  # running max of u, per chunk read

    @classmethod
    def of(cls, chunks: list[tuple[str, RawKey]]) -> _Source:
        return cls([key for key, _ in chunks], array("q", [_start_ns(k) for _, k in chunks]))

    @property
    def exhausted(self) -> bool:
        return self.read >= len(self.keys)

    @property
    def ahead(self) -> int:
        return self.reach[-1] if self.reach else -1

    def ready_below(self, lookahead: int) -> int:
        """fill(upto) needs no read for any ``upto`` below this."""
        if self.exhausted:
            return NEVER
        at = self.read - 1 - lookahead
        return self.reach[at] if at >= 0 else -1


class Feed:
    """Per-connection event queues and a snapshot heap, filled on demand."""

    def __init__(
        self,
        sources: dict[str, list[tuple[str, RawKey]]],
        reader: ChunkReader | None,
        fetcher: Fetcher | None,
        *,
        lookahead: int = LOOKAHEAD,
        catch_up_ns: int = CATCH_UP_NS,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> None:
        self.streams: dict[str, deque[StreamEvent]] = {}
        self.version = 0  # changes when a new stream appears
        self._snapshots: list[tuple[int, int, str, int, SourceSnapshot]] = []
        self._seen_snapshots: set[tuple[str, int, int, int]] = set()
        self._tiebreak = itertools.count()
        self._sources = {name: _Source.of(chunks) for name, chunks in sources.items()}
        self._reader = reader
        self._fetcher = fetcher
        self._lookahead = lookahead
        self._catch_up_ns = catch_up_ns
        self._on_chunk = on_chunk
        self._total = sum(len(c) for c in sources.values())
        self._done = 0
        self._ready = -1
        self._next_start = -1  # receive time of the first unread chunk of any source
        self._update_ready()
        for source in self._sources.values():
            self._prefetch(source)

    @classmethod
    def from_loaded(cls, loaded: Loaded) -> Feed:
        """A feed holding a whole in-memory day."""
        feed = cls({}, None, None)
        for name, events in loaded.streams.items():
            feed.streams[name] = deque(events)
        feed._add_snapshots(loaded.snapshots, dedupe=False)  # load_symbol_day did
        feed.version = 1
        return feed

    # --- reading -------------------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        return all(s.exhausted for s in self._sources.values())

    def fill(self, upto: int) -> bool:
        """Read until every source is past ``upto`` plus the look-ahead; True if it read."""
        if upto < self._ready:
            return False
        before = self._done
        for source in self._sources.values():
            while not source.exhausted and source.ahead <= upto:
                self._read(source)
            first_past = bisect_right(source.reach, upto)
            while not source.exhausted and source.read < first_past + 1 + self._lookahead:
                self._read(source)
        self._update_ready()
        return self._done != before

    def catch_up(self, t_ns: int) -> bool:
        """Read every chunk that starts by ``t_ns`` (plus ``catch_up_ns``); True if it read.

        The stitcher calls it before taking a standby's event received at ``t_ns``, so a
        preferred stream that lags a little is read first and keeps its preference.
        """
        limit = t_ns + self._catch_up_ns
        if limit < self._next_start:
            return False  # no unread chunk starts by then
        before = self._done
        for source in self._sources.values():
            while not source.exhausted and source.starts[source.read] <= limit:
                self._read(source)
        if self._done == before:
            return False
        self._update_ready()
        return True

    @property
    def settled(self) -> int:
        """Ids up to here are read from every source, look-ahead included (see the rule)."""
        return self._ready - 1

    def finish(self) -> None:
        """Write the per-source statistics into the log (once every chunk is read)."""
        if self._reader is not None:
            self._reader.finish()

    def more(self) -> bool:
        """Read the next chunk in receive-time order (of all sources); False when all are read."""
        open_sources = [s for s in self._sources.values() if not s.exhausted]
        if not open_sources:
            return False
        self._read(min(open_sources, key=lambda s: s.starts[s.read]))
        self._update_ready()
        return True

    def _update_ready(self) -> None:
        readies = [s.ready_below(self._lookahead) for s in self._sources.values()]
        self._ready = min(readies, default=NEVER)
        starts = [s.starts[s.read] for s in self._sources.values() if not s.exhausted]
        self._next_start = min(starts, default=NEVER)

    def _read(self, source: _Source) -> None:
        assert self._reader is not None
        assert self._fetcher is not None
        key = source.keys[source.read]
        data = self._fetcher.get(key)
        source.read += 1
        self._prefetch(source)
        content = self._reader.read(key, parse_raw_key(key), data)  # parsed by plan_sources
        del data
        reach = source.ahead
        streams = self.streams
        name, queue = "", None
        for event in content.events:
            if event.stream != name or queue is None:
                name = event.stream
                queue = streams.get(name)
                if queue is None:
                    queue = streams[name] = deque()
                    self.version += 1
            queue.append(event)
            reach = max(reach, event.header.last_id)
        source.reach.append(reach)
        self._add_snapshots(content.snapshots)
        self._done += 1
        if self._on_chunk is not None:
            self._on_chunk(self._done, self._total)

    def _prefetch(self, source: _Source) -> None:
        if self._fetcher is not None and not source.exhausted:
            self._fetcher.prefetch(source.keys[source.read])

    # --- snapshots -----------------------------------------------------------------

    def _add_snapshots(self, snapshots: list[SourceSnapshot], *, dedupe: bool = True) -> None:
        for snap in snapshots:
            identity = (snap.source, snap.recv_ns, len(snap.line), hash(snap.line))
            if dedupe and identity in self._seen_snapshots:
                continue  # the same record in a resealed chunk
            self._seen_snapshots.add(identity)
            entry = (snap.snapshot.last_update_id, snap.recv_ns, snap.key, next(self._tiebreak))
            heapq.heappush(self._snapshots, (*entry, snap))

    def next_snapshot(self) -> SourceSnapshot | None:
        """The snapshot with the lowest ``lastUpdateId`` not yet taken."""
        return self._snapshots[0][4] if self._snapshots else None

    def take_snapshot(self) -> SourceSnapshot:
        return heapq.heappop(self._snapshots)[4]
