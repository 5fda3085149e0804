"""Chunks: which open spool file a record goes to, and when a chunk is cut.

One chunk is open per (channel, symbol). A chunk is cut:

- when the clock reaches the next multiple of ``rotation_s`` after its first record
  (aligned to the epoch, so every region cuts at the same instants: :00 of every minute);
- when the next record would take it past ``chunk_max_bytes`` (uncompressed), except within
  the millisecond of its first record, so that two chunks of a stream never share a key time;
- always at UTC midnight: a record whose UTC date differs from the chunk's first record's
  date starts a new chunk (the key's date is its first record's date).

The key (:func:`chunk_key`) carries the first record's receive time, the first depth
event's ``U`` and the last depth event's ``u`` (``0-0`` without ids).

:class:`ChunkWriter` is synchronous: :meth:`~ChunkWriter.route` decides where each record
goes without I/O (event loop); :meth:`~ChunkWriter.flush` writes what is pending (worker
thread). After a crash, :func:`recover_open_file` seals what an open file holds, its key
recomputed from its lines (:func:`summarize`); :class:`KeyClaims` keeps keys unique.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from booktape.binance import SPECS, FrameKind, classify_frame, parse_depth_header
from booktape.codec import Header, Msg, Record, Snap, decode_line, encode_header
from booktape.errors import CodecError, FrameError
from booktape.keys import MAX_ID, MS_PER_DAY, NS_PER_DAY, NS_PER_MS, RawKey
from collector.spool import SealedChunk, Spool, sealed_content_equals
from collector.types import Item

log = logging.getLogger("collector.chunks")

_MARKETS: Final = {spec.exchange: market for market, spec in SPECS.items()}


def rotation_deadline_ns(first_recv_ns: int, rotation_ns: int) -> int:
    """When a chunk whose first record came at ``first_recv_ns`` is cut on time."""
    boundary = (first_recv_ns // rotation_ns + 1) * rotation_ns
    midnight = (first_recv_ns // NS_PER_DAY + 1) * NS_PER_DAY
    return min(boundary, midnight)


def chunk_key(
    header: Header, first_recv_ns: int, first_id: int | None, last_id: int | None
) -> RawKey:
    """The object key of a chunk (``0-0`` when it holds no depth event)."""
    return RawKey.from_recv(
        header.exchange,
        header.channel,
        header.symbol,
        header.region,
        header.collector,
        first_recv_ns,
        first_id or 0,
        last_id or 0,
    )


@dataclass(eq=False, slots=True)
class OpenChunk:
    """A chunk being written: what its key needs, and its bytes on disk and pending."""

    header: Header
    first_recv_ns: int
    deadline_ns: int
    first_id: int | None = None  # U of the first depth event
    last_id: int | None = None  # u of the last depth event
    records: int = 0
    size: int = 0  # bytes routed to it, header line included: written + pending
    written: int = 0  # bytes in the open file
    pending: list[bytes] = field(default_factory=list)
    path: Path | None = None
    fd: int | None = None
    synced: bool = True  # nothing written since the last sync
    claimed_key: RawKey | None = None  # the key chosen for it (recovery), else from .key
    day_start_ns: int = 0  # UTC midnight before first_recv_ns (set after init)

    def __post_init__(self) -> None:
        self.day_start_ns = self.first_recv_ns - self.first_recv_ns % NS_PER_DAY

    @property
    def day(self) -> int:
        return self.first_recv_ns // NS_PER_DAY

    @property
    def key(self) -> RawKey:
        return chunk_key(self.header, self.first_recv_ns, self.first_id, self.last_id)


def check_item(item: Item) -> None:
    """Refuse an item no chunk can hold (a bug in a feed): raises CodecError."""
    line = item.line
    if line.find(b"\n") != len(line) - 1:
        raise CodecError(f"an item must be one line ending with a newline: {line[:80]!r}")
    if type(item.recv_ns) is not int or not 0 <= item.recv_ns <= MAX_ID:
        raise CodecError(f"invalid receive time {item.recv_ns!r}")
    for value in (item.first_id, item.last_id):
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_ID):
            raise CodecError(f"invalid update id {value!r}")


class ChunkWriter:
    """Routes items to open chunks and writes them to the spool (see the module docs)."""

    def __init__(
        self,
        spool: Spool,
        *,
        exchange: str,
        region: str,
        collector: str,
        host: str,
        rotation_s: float,
        chunk_max_bytes: int,
    ) -> None:
        self.spool = spool
        self.exchange = exchange
        self.region = region
        self.collector = collector
        self.host = host
        self.rotation_ns = max(1, round(rotation_s * 1e9))
        self.chunk_max_bytes = chunk_max_bytes
        self.chunks: dict[tuple[str, str], OpenChunk] = {}
        self._headers: dict[tuple[str, str], tuple[Header, bytes]] = {}

    def declare(self, channel: str, symbol: str, extra: dict[str, object]) -> None:
        """Give a stream's chunk headers ``extra`` fields (e.g. a Coinbase grid's interval).

        Must come before the stream's first record; raises InvalidNameError/CodecError.
        """
        stream = (channel, symbol)
        if stream in self.chunks:
            raise ValueError(f"stream {channel}/{symbol} already has records")
        header = Header(
            self.exchange, channel, symbol, self.region, self.collector, self.host, extra=extra
        )
        self._headers[stream] = (header, encode_header(header))

    def check(self, items: list[Item]) -> None:
        """:func:`check_item` and :meth:`header` for every item: raises
        CodecError/InvalidNameError for the first bad one."""
        headers = self._headers
        for item in items:
            check_item(item)
            if (item.channel, item.symbol) not in headers:
                self.header(item.channel, item.symbol)  # validates the names (then cached)

    def header(self, channel: str, symbol: str) -> tuple[Header, bytes]:
        """The header of a stream's chunks and its line; raises InvalidNameError."""
        stream = (channel, symbol)
        found = self._headers.get(stream)
        if found is None:
            header = Header(self.exchange, channel, symbol, self.region, self.collector, self.host)
            found = self._headers[stream] = (header, encode_header(header))
        return found

    def route(self, item: Item) -> OpenChunk | None:
        """Append ``item`` to its stream's chunk; return the chunk it cut, if any."""
        cut: list[OpenChunk] = []
        self.route_many([item], cut)
        return cut[0] if cut else None

    def route_many(self, items: list[Item], cut: list[OpenChunk]) -> int:
        """Append each item, in order, to its stream's chunk, and the chunks this cuts to
        ``cut``; returns the bytes routed. Runs once per record: the common case (the
        stream's chunk is open, the record inside its span, room left) is inline."""
        chunks = self.chunks
        max_bytes = self.chunk_max_bytes
        routed = 0
        for item in items:
            line = item.line
            size = len(line)
            routed += size
            chunk = chunks.get((item.channel, item.symbol))
            if (
                chunk is None
                or not chunk.day_start_ns <= item.recv_ns < chunk.deadline_ns
                or chunk.size + size > max_bytes
            ):
                chunk = self._chunk_for(item, chunk, cut)
            chunk.pending.append(line)
            chunk.size += size
            chunk.records += 1
            if item.first_id is not None and chunk.first_id is None:
                chunk.first_id = item.first_id
            if item.last_id is not None:
                chunk.last_id = item.last_id
        return routed

    def _chunk_for(self, item: Item, chunk: OpenChunk | None, cut: list[OpenChunk]) -> OpenChunk:
        """The chunk ``item`` goes to when its stream's open ``chunk`` (if any) may not take
        it as it is: that chunk, or a new one (the old one cut, appended to ``cut``)."""
        if chunk is not None:
            if not self._must_cut(chunk, item):
                return chunk
            cut.append(chunk)
        header, line = self.header(item.channel, item.symbol)
        deadline = rotation_deadline_ns(item.recv_ns, self.rotation_ns)
        chunk = self.chunks[(item.channel, item.symbol)] = OpenChunk(header, item.recv_ns, deadline)
        chunk.pending.append(line)
        chunk.size = len(line)
        return chunk

    def _must_cut(self, chunk: OpenChunk, item: Item) -> bool:
        if item.recv_ns >= chunk.deadline_ns or item.recv_ns // NS_PER_DAY != chunk.day:
            return True
        return (
            chunk.size + len(item.line) > self.chunk_max_bytes
            and item.recv_ns // NS_PER_MS != chunk.first_recv_ns // NS_PER_MS
        )

    def expire(self, now_ns: int) -> list[OpenChunk]:
        """Take out the chunks whose time is up."""
        due = [stream for stream, chunk in self.chunks.items() if chunk.deadline_ns <= now_ns]
        return [self.chunks.pop(stream) for stream in due]

    def take_all(self) -> list[OpenChunk]:
        """Take out every open chunk (shutdown)."""
        chunks = list(self.chunks.values())
        self.chunks.clear()
        return chunks

    # --- file I/O: flush (page-cache appends) runs in the event loop's thread -------------

    def flush(self, chunks: Iterable[OpenChunk]) -> int:
        """Write what is pending; returns the bytes written. Raises OSError (e.g. ENOSPC)
        with the unwritten rest still pending, so a retry continues exactly where it stopped.
        """
        total = 0
        for chunk in chunks:
            if not chunk.pending:
                continue
            if chunk.fd is None:
                h = chunk.header
                chunk.path, chunk.fd = self.spool.create_open(
                    h.exchange, h.channel, h.symbol, chunk.first_recv_ns
                )
            data = chunk.pending[0] if len(chunk.pending) == 1 else b"".join(chunk.pending)
            view = memoryview(data)
            try:
                while view:
                    n = self.spool.write(chunk.fd, view)
                    view = view[n:]
                    chunk.written += n
                    total += n
                    chunk.synced = False
                    self.spool.usage.opened(n)
            finally:
                chunk.pending = [bytes(view)] if view else []
        return total

    @staticmethod
    def dup_unsynced(chunks: Iterable[OpenChunk], *, one_per_filesystem: bool = False) -> list[int]:
        """Duplicates of the descriptors of the open files written since their last sync
        (marked synced): :func:`collector.syncfs.sync_and_close` syncs them in a worker
        thread while the writer goes on, and may close a chunk's own descriptor meanwhile
        (event loop). ``one_per_filesystem``: one descriptor per filesystem they are on
        (enough for ``syncfs``)."""
        fds = []
        devices: set[int] = set()
        for chunk in chunks:
            if chunk.fd is not None and not chunk.synced:
                chunk.synced = True
                if one_per_filesystem:
                    device = os.fstat(chunk.fd).st_dev
                    if device in devices:
                        continue
                    devices.add(device)
                fds.append(os.dup(chunk.fd))
        return fds

    @staticmethod
    def close(chunk: OpenChunk, *, abandon: bool = False) -> None:
        """Close a fully written chunk's file (before sealing), or abandon it (its open
        file is sealed by the next start's recovery; pending records are lost as in a crash).
        """
        assert abandon or not chunk.pending, "close of a chunk with unwritten records"
        if chunk.fd is not None:
            os.close(chunk.fd)
            chunk.fd = None


# --- recovery -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    """What the key of an open file left by a crash needs, read back from its lines."""

    header: Header
    length: int  # bytes of whole lines, header included (a cut last line is left out)
    records: int
    first_recv_ns: int | None  # None: the file holds no whole record
    first_id: int | None
    last_id: int | None
    undecodable: int  # lines kept verbatim that do not decode as records


def record_ids(header: Header, record: Record) -> tuple[int, int] | None:
    """The (first, last) ids a record gives its chunk's key, as the feeds set them."""
    market = _MARKETS.get(header.exchange)
    if market is not None and isinstance(record, Msg):
        if classify_frame(record.raw) is not FrameKind.DEPTH:
            return None
        try:
            event = parse_depth_header(record.raw, market)
        except FrameError:
            return None
        return event.first_id, event.last_id
    if header.exchange == "coinbase" and header.channel == "book" and isinstance(record, Snap):
        try:
            sequence = orjson.loads(record.raw).get("sequence")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return (sequence, sequence) if type(sequence) is int and sequence >= 0 else None
    return None


def summarize(data: bytes) -> ChunkSummary:
    """Read an open file's content; raises CodecError if it has no whole header line."""
    length = data.rfind(b"\n") + 1
    lines = data[:length].split(b"\n")[:-1]
    if not lines:
        raise CodecError("no whole header line")
    header = decode_line(lines[0])
    if not isinstance(header, Header):
        raise CodecError("the first line is not a header")
    first_recv = first_id = last_id = None
    undecodable = 0
    for line in lines[1:]:
        try:
            record = decode_line(line)
        except CodecError:
            undecodable += 1
            continue
        if isinstance(record, Header):
            undecodable += 1
            continue
        if first_recv is None:
            first_recv = record.t
        ids = record_ids(header, record)
        if ids is not None:
            first_id = ids[0] if first_id is None else first_id
            last_id = ids[1]
    return ChunkSummary(header, length, len(lines) - 1, first_recv, first_id, last_id, undecodable)


class KeyClaims:
    """The keys of each stream's recent chunks, so that no two chunks get the same key.

    Only a clock stepping back can make a stream's new chunk start in the millisecond of
    an earlier one with the same ids; such a chunk moves to the next free millisecond
    (logged) rather than overwrite the other object.

    Per stream (exchange, channel, symbol, region, collector) the hashes of its last
    ``per_stream`` keys are kept: a clock step back of up to ``per_stream`` rotations is
    covered whatever the number of symbols, and the memory is fixed once every stream has
    rotated that many times (a few hundred bytes a stream). Sealed files not yet uploaded
    are checked on disk too (``on_disk``). Two keys of a stream with the same 64-bit hash
    would cost a needless 1 ms move, nothing else.
    """

    def __init__(self, spool: Spool, per_stream: int = 16) -> None:
        self._spool = spool
        self._per_stream = per_stream
        self._recent: dict[tuple[str, ...], list[int]] = {}

    @staticmethod
    def _stream(key: RawKey) -> tuple[str, ...]:
        return (key.exchange, key.channel, key.symbol, key.region, key.collector)

    def _taken(self, key: RawKey) -> bool:
        return hash(key.key) in self._recent.get(self._stream(key), ())

    def remember(self, key: RawKey) -> None:
        recent = self._recent.setdefault(self._stream(key), [])
        digest = hash(key.key)
        if digest not in recent:
            recent.append(digest)
            if len(recent) > self._per_stream:
                del recent[0]

    def claim(self, key: RawKey, *, on_disk: bool = False) -> RawKey:
        """``key`` or the next free millisecond (``on_disk``: also avoid sealed files)."""
        wanted = key
        while self._taken(key) or (on_disk and self._spool.sealed_path(key).exists()):
            if key.time_ms + 1 >= MS_PER_DAY:
                raise CodecError(f"no free key after {wanted.key}")
            key = dataclasses.replace(key, time_ms=key.time_ms + 1)
        if key != wanted:
            log.warning("chunk key taken, moved by 1 ms", extra={"key": wanted.key, "now": key.key})
        self.remember(key)
        return key


def recover_open_file(spool: Spool, path: Path, keys: KeyClaims) -> SealedChunk | OpenChunk | None:
    """Seal an open file left by a crash (blocking: call from a worker thread).

    Returns the sealed chunk; or the chunk still to seal when sealing failed (ENOSPC...),
    for the sealer to retry; or None when there is nothing to keep: no whole record, or the
    same content already sealed (the crash came between the rename and the unlink). A file
    without a readable header is moved to ``quarantine/``.
    """
    data = path.read_bytes()
    try:
        summary = summarize(data)
    except CodecError as exc:
        if data.find(b"\n") < 0:  # not even a whole header: nothing was acknowledged
            spool.discard_open(path)
            return None
        dest = spool.quarantine(path)
        log.error("unreadable open chunk quarantined", extra={"path": str(dest), "error": str(exc)})
        return None
    if summary.records == 0:
        spool.discard_open(path)
        return None
    first_ns = summary.first_recv_ns
    if first_ns is None:  # no record decodes: the file name holds the first receive time
        first_ns = int(path.stem.split("-")[0])
    key = chunk_key(summary.header, first_ns, summary.first_id, summary.last_id)
    if sealed_content_equals(spool.sealed_path(key), data[: summary.length]):
        spool.discard_open(path)
        return None
    key = keys.claim(key, on_disk=True)
    extra = {
        "key": key.key,
        "records": summary.records,
        "dropped_bytes": len(data) - summary.length,  # a cut last line, never acknowledged
        "undecodable_lines": summary.undecodable,
    }
    try:
        sealed = spool.seal(path, summary.length, key)
    except OSError as exc:
        log.error(
            "sealing a recovered chunk failed, will retry", extra={**extra, "error": str(exc)}
        )
        chunk = OpenChunk(summary.header, first_ns, first_ns, summary.first_id, summary.last_id)
        chunk.records, chunk.path, chunk.claimed_key = summary.records, path, key
        chunk.size = chunk.written = summary.length
        return chunk
    log.info("open chunk recovered", extra=extra)
    return sealed
