"""Raw objects: records written into one zstd object, and read back (format: :mod:`booktape.codec`).

:class:`RecordWriter` writes a header and records into a zstd frame with a content checksum;
:class:`ObjectReader` streams an object's records back, telling a truncated object (a crash
after a flush: every whole record before the cut, and ``truncated``) from a corrupt one
(:class:`~booktape.errors.CorruptObjectError` naming the object and the line), as the
format's rules in :mod:`booktape.codec` say. ``read_object*`` read an object held in memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import zstandard

from booktape.cext import c_function
from booktape.codec import (
    DataRecord,
    Header,
    Record,
    Scalar,
    decode_line,
    encode_bad,
    encode_conn,
    encode_header,
    encode_msg,
    encode_record,
    encode_snap,
    loads_json,
    own_msg,
)
from booktape.errors import CodecError, CorruptObjectError

P = TypeVar("P")
Prover = Callable[[bytes], P | None]  # a frame -> proof that it is JSON (and more), or None
# a msg: t, c, frame, own (its stored line is own_line(t, c, frame)), proof
OwnMsg = tuple[int, str, bytes, bool, P | None]


OwnMsgs = Callable[[bytes, int], list[tuple[int, str, bytes] | bytes]]


# booktape/_fastframe.c's own_msgs: codec.own_msg over a block of lines (else _py_own_msgs)
_OWN_MSGS: Final[OwnMsgs | None] = c_function("_fastframe", "own_msgs")


READ_CHUNK: Final = 1 << 16


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class RecordWriter:
    """Streams records into one zstd frame (with content checksum) on ``fileobj``.

    The header is written on construction. ``flush()`` ends the current zstd block so that
    everything written so far can be decoded from the file (a crash afterwards leaves a
    truncated, readable object); ``close()`` ends the frame. The file itself is neither
    closed nor fsynced: it belongs to the caller. After ``fileobj.write`` fails, the writer
    counts as closed (its stream has a hole).
    """

    def __init__(self, fileobj: Sink, header: Header, level: int = 3) -> None:
        self._file = fileobj
        self._zstd = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self.header = header
        self.records = 0  # data records written (the header not included)
        self.bytes_in = 0  # uncompressed bytes, header included
        self.bytes_out = 0  # compressed bytes handed to fileobj
        self.closed = False
        self.write_line(encode_header(header), count=False)

    def write_line(self, line: bytes, *, count: bool = True) -> None:
        """Append one already-encoded line (from an ``encode_*`` function)."""
        if self.closed:
            raise CodecError("write to a closed RecordWriter")
        self._emit(self._zstd.compress(line))
        self.bytes_in += len(line)
        self.records += count

    def write_msg(self, t_ns: int, conn: str, frame: bytes) -> None:
        self.write_line(encode_msg(t_ns, conn, frame))

    def write_bad(self, t_ns: int, conn: str, frame: bytes, *, binary: bool = False) -> None:
        self.write_line(encode_bad(t_ns, conn, frame, binary=binary))

    def write_snap(
        self,
        t_ns: int,
        q_ns: int,
        conn: str,
        request: str,
        body: bytes,
        *,
        extra: Mapping[str, Scalar] | None = None,
    ) -> None:
        self.write_line(encode_snap(t_ns, q_ns, conn, request, body, extra=extra))

    def write_conn(
        self, t_ns: int, conn: str, ev: str, info: Mapping[str, Any] | None = None
    ) -> None:
        self.write_line(encode_conn(t_ns, conn, ev, info))

    def write_record(self, record: DataRecord) -> None:
        self.write_line(encode_record(record))

    def flush(self) -> None:
        """End the current zstd block and flush ``fileobj`` if it can."""
        if self.closed:
            raise CodecError("flush of a closed RecordWriter")
        self._emit(self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        flush = getattr(self._file, "flush", None)
        if callable(flush):
            flush()

    def close(self) -> None:
        """End the zstd frame (idempotent)."""
        if not self.closed:
            self.closed = True
            self._emit(self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))

    def _emit(self, data: bytes) -> None:
        if data:
            try:
                self._file.write(data)
            except BaseException:
                self.closed = True  # the stream now has a hole: refuse to write past it
                raise
            self.bytes_out += len(data)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class ReadResult:
    header: Header
    records: list[DataRecord]
    truncated: bool
    error: str | None  # why the object counts as truncated; None when complete


class ObjectReader:
    """Iterates the data records of an object read from ``fileobj`` in chunks.

    The header is read on construction (``.header``). After the iteration ends,
    ``.truncated`` and ``.error`` tell whether the object was cut short. Corruption raises
    CorruptObjectError, possibly after some records were yielded; use read_object() for
    all-or-nothing reading.
    """

    def __init__(self, fileobj: Source, name: str, chunk_size: int = READ_CHUNK) -> None:
        self.name = name
        self.line_no = 0  # lines decoded so far; line 1 is the header
        self._file = fileobj
        self._chunk = chunk_size
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj: Any = None  # decompressobj of the current frame, None between frames
        self._frames = 0
        self._offset = 0  # compressed bytes read
        self._lines_out = 0  # whole lines decompressed
        self._block = b""  # decompressed bytes: its whole lines from _pos to _end are unread
        self._pos = 0
        self._end = 0
        self._tail = b""
        self._error: str | None = None
        self._done = False
        first = self._next_line()
        if first is None:
            raise CorruptObjectError(name, f"no whole header line ({self._error or 'empty'})")
        header = self._decode(first)
        if not isinstance(header, Header):
            raise CorruptObjectError(name, "line 1: expected a header record")
        self.header: Header = header

    @property
    def truncated(self) -> bool:
        return self.error is not None

    @property
    def error(self) -> str | None:
        if not self._done:
            raise CodecError(f"{self.name}: read the object to its end first")
        return self._error

    def __iter__(self) -> Iterator[DataRecord]:
        return self

    def __next__(self) -> DataRecord:
        line = self._next_line()
        if line is None:
            raise StopIteration
        return self._data_record(line)

    def parts(self, prove: Prover[P] | None = None) -> Iterator[DataRecord | OwnMsg[P]]:
        """Each data record; a ``msg`` in :func:`encode_msg`'s own layout comes as an
        :data:`OwnMsg` tuple ``(t, c, frame, own, proof)`` instead of a :class:`Msg`
        (cheaper: no record object is made).

        ``own``: the record's stored line is exactly :func:`~booktape.codec.own_line` of it,
        which is what :func:`encode_record` gives for it (False when the frame holds a CR,
        stored as ``b64`` by the encoder). ``prove``: called with the frame; what it returns (not
        None) vouches that the frame is JSON, which is then not parsed here, and is given
        back as ``proof`` (e.g. the frame's header read by the same regex).
        """
        while (items := self._next_items(_OWN_MSGS or _py_own_msgs)) is not None:
            for item in items:
                if isinstance(item, bytes):
                    yield self._data_record(item)
                    continue
                self.line_no += 1
                t, c, frame = item
                proof = prove(frame) if prove is not None else None
                if proof is None:
                    try:
                        loads_json(frame, "spliced frame")
                    except CodecError as exc:
                        raise CorruptObjectError(self.name, f"line {self.line_no}: {exc}") from exc
                yield t, c, frame, b"\r" not in frame, proof

    def _data_record(self, line: bytes) -> DataRecord:
        record = self._decode(line)
        if isinstance(record, Header):
            raise CorruptObjectError(self.name, f"line {self.line_no}: a second header")
        return record

    def _decode(self, line: bytes) -> Record:
        self.line_no += 1
        try:
            return decode_line(line)
        except CodecError as exc:
            raise CorruptObjectError(self.name, f"line {self.line_no}: {exc}") from exc

    def _next_items(self, own_msgs: OwnMsgs) -> list[tuple[int, str, bytes] | bytes] | None:
        """``own_msgs`` of the next whole lines (first those :meth:`_next_line` left unread
        in its block); None at the end."""
        if self._pos >= self._end and not self._load():
            return None
        block, pos, end = self._block, self._pos, self._end
        self._block, self._pos, self._end = b"", 0, 0
        if pos:  # the rest of the header's block
            block, end = block[pos:end], end - pos
        items = own_msgs(block, end)
        self._lines_out += len(items)
        return items

    def _next_line(self) -> bytes | None:
        if self._pos >= self._end and not self._load():
            return None
        pos = self._pos
        newline = self._block.index(b"\n", pos, self._end)
        self._pos = newline + 1
        self._lines_out += 1
        return self._block[pos:newline]

    def _load(self) -> bool:
        """Make the next decompressed bytes the block; False at the end."""
        read = self._whole_lines()
        if read is None:
            return False
        self._block, self._end = read
        self._pos = 0
        return True

    def _whole_lines(self) -> tuple[bytes, int] | None:
        """The next decompressed bytes and the end of their whole lines (after the last
        newline; what follows is kept for the next read); None at the end."""
        while not self._done:
            chunk = self._file.read(self._chunk)
            if not chunk:
                self._finish()
                return None
            data = self._tail + self._inflate(chunk)
            self._offset += len(chunk)
            cut = data.rfind(b"\n") + 1
            self._tail = data[cut:]
            if cut:
                return data, cut
        return None

    def _inflate(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._dobj is None:
                self._dobj = self._dctx.decompressobj()
            try:
                out.append(self._dobj.decompress(data))
            except zstandard.ZstdError as exc:
                where = f"compressed bytes {self._offset}..{self._offset + len(data)}"
                raise CorruptObjectError(
                    self.name, f"damaged zstd data after line {self._lines_out} ({where}): {exc}"
                ) from exc
            if not self._dobj.eof:
                break
            data, self._dobj = self._dobj.unused_data, None
            self._frames += 1
        return b"".join(out)

    def _finish(self) -> None:
        self._done = True
        if self._dobj is None and self._frames == 0:
            raise CorruptObjectError(self.name, "empty object: no zstd frame")
        if self._dobj is not None:
            self._error = "the zstd stream ends inside a frame"
        elif self._tail:
            self._error = "the last line has no newline"


def _py_own_msgs(block: bytes, end: int) -> list[tuple[int, str, bytes] | bytes]:
    """booktape/_fastframe.c's ``own_msgs`` with the regex of :func:`codec.own_msg`."""
    return [own_msg(line) or line for line in block[:end].split(b"\n")[:-1]]


def iter_object(fileobj: Source, name: str) -> ObjectReader:
    """Stream an object's records; see ObjectReader."""
    return ObjectReader(fileobj, name)


def read_object_parts(
    data: bytes, name: str, prove: Prover[P] | None = None
) -> tuple[Header, list[DataRecord | OwnMsg[P]], str | None]:
    """The header, :meth:`ObjectReader.parts` and the truncation error (None: whole)
    of an object held in memory; raises CorruptObjectError naming ``name``."""
    reader = ObjectReader(io.BytesIO(data), name)
    parts = list(reader.parts(prove))
    return reader.header, parts, reader.error


def read_object(data: bytes, name: str) -> ReadResult:
    """Decode a whole object held in memory; raises CorruptObjectError naming ``name``."""
    reader = ObjectReader(io.BytesIO(data), name)
    records = list(reader)
    return ReadResult(reader.header, records, reader.truncated, reader.error)
