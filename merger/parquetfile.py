"""A Parquet file written in parts, each by a ParquetWriter of its own, with one footer.

Why: pyarrow's ``ParquetWriter`` keeps ~8.4 KB of metadata state for every row group it
has written until it writes the footer (~950 bytes a row group in the footer itself), and
pyarrow gives no way to write a row group in pieces, so a day's file needs either many row
groups or large batches. A BTCUSDT day's levels.parquet has ~400 row groups: 3.3 MiB that
a 24 h merge held more than a 1 h one.

How :class:`PartedParquetFile` works: each :meth:`~PartedParquetFile.write_table` is a
complete Parquet file written by its own writer into the one output file, its leading magic
dropped (but the first's), its footer cut off the end once the writer is closed. What is
kept of that footer is its row groups, in thrift's compact encoding, their file offsets
moved by where the part begins and their ordinals renumbered (~1 KB a row group, kept in a
temporary file, not in memory). At :meth:`~PartedParquetFile.close` the footer is the
first part's ``FileMetaData`` (schema, key-value metadata, ``created_by``, column orders)
with the total row count and every row group. A writer's column chunks and page headers
hold no file offsets, so the file is byte for byte the file one ``ParquetWriter`` would
have written from the same tables (tests/merger/test_parquetfile.py).

The thrift code below reads and rewrites only what Parquet's footer needs (parquet.thrift:
``FileMetaData``, ``RowGroup``, ``ColumnChunk``, ``ColumnMetaData``); anything it does not
expect (an encrypted footer, a field of an unknown type) is an error, not a guess.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FooterError", "PartedParquetFile"]

MAGIC: Final = b"PAR1"

# thrift compact protocol types (thrift/doc/specs/thrift-compact-protocol.md)
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12

# parquet.thrift field ids
_FMD_NUM_ROWS, _FMD_ROW_GROUPS = 3, 4
_FMD_ENCRYPTION = (8, 9)  # encryption_algorithm, footer_signing_key_metadata
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 5, 7
_CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 2, 3, 4, 6
_CC_ENCRYPTED = (8, 9)  # crypto_metadata, encrypted_column_metadata
# ColumnMetaData: data_page_offset, index_page_offset, dictionary_page_offset, bloom_filter_offset
_CMD_OFFSETS: Final = frozenset((9, 10, 11, 14))


class FooterError(ValueError):
    """A part's footer is not what this module can rewrite (it says what it found)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        try:
            b = buf[pos]
        except IndexError:
            raise FooterError("truncated varint") from None
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FooterError("varint longer than 64 bits")


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _field_header(buf: bytes, pos: int, last: int) -> tuple[int, int, int]:
    """(field id, compact type, position after the header); type 0 is the struct's end."""
    try:
        b = buf[pos]
    except IndexError:
        raise FooterError("truncated struct") from None
    pos += 1
    ctype = b & 0x0F
    if ctype == _STOP:
        return 0, _STOP, pos
    delta = b >> 4
    if delta:
        return last + delta, ctype, pos
    raw, pos = _varint(buf, pos)
    return _unzigzag(raw), ctype, pos


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(element count, element type, position after the header) of a list or a set."""
    b = buf[pos]
    size, etype = b >> 4, b & 0x0F
    pos += 1
    if size == 15:
        size, pos = _varint(buf, pos)
    return size, etype, pos


def _put_list_header(out: bytearray, size: int, etype: int) -> None:
    if size < 15:
        out.append((size << 4) | etype)
    else:
        out.append(0xF0 | etype)
        _put_varint(out, size)


def _skip(buf: bytes, pos: int, ctype: int, *, element: bool = False) -> int:
    """The position after one value of ``ctype`` (a bool in a list takes one byte)."""
    if ctype in (_TRUE, _FALSE):
        return pos + 1 if element else pos
    if ctype == _BYTE:
        return pos + 1
    if ctype in (_I16, _I32, _I64):
        return _varint(buf, pos)[1]
    if ctype == _DOUBLE:
        return pos + 8
    if ctype == _BINARY:
        size, pos = _varint(buf, pos)
        return pos + size
    if ctype in (_LIST, _SET):
        size, etype, pos = _list_header(buf, pos)
        for _ in range(size):
            pos = _skip(buf, pos, etype, element=True)
        return pos
    if ctype == _MAP:
        size, pos = _varint(buf, pos)
        if size:
            types = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip(buf, pos, types >> 4, element=True)
                pos = _skip(buf, pos, types & 0x0F, element=True)
        return pos
    if ctype == _STRUCT:
        last = 0
        while True:
            last, ftype, pos = _field_header(buf, pos, last)
            if ftype == _STOP:
                return pos
            pos = _skip(buf, pos, ftype)
    raise FooterError(f"unknown thrift compact type {ctype}")


# writes one field's value and returns its end, or None (the field is copied as it is)
_FieldRewrite = Callable[[bytearray, int, int, int], int | None]


class _Moved:
    """Rewrites a part's row groups: offsets moved by ``shift``, ordinals from ``ordinal``.

    One pass: each struct's fields are copied as they come, a field to rewrite or a struct
    to descend into taken apart on the way (``_skip`` finds the end of the others).
    """

    def __init__(self, buf: bytes, shift: int, ordinal: int) -> None:
        self.buf, self.shift, self.ordinal = buf, shift, ordinal

    def _offset(self, out: bytearray, ctype: int, pos: int) -> int:
        if ctype != _I64:
            raise FooterError(f"a file offset of thrift type {ctype}, not i64")
        raw, end = _varint(self.buf, pos)
        value = _unzigzag(raw)
        _put_varint(out, _zigzag(value + self.shift if value else 0))  # 0: not set
        return end

    def _struct(self, out: bytearray, pos: int, field: _FieldRewrite) -> int:
        """Copy the struct at ``pos`` into ``out``; return its end. ``field(out, id, type,
        pos)`` writes a field's value itself and returns its end, or returns None: copied
        as it is."""
        buf, last = self.buf, 0
        while True:
            head = pos
            last, ctype, pos = _field_header(buf, pos, last)
            out += buf[head:pos]
            if ctype == _STOP:
                return pos
            end = field(out, last, ctype, pos)
            if end is None:
                end = _skip(buf, pos, ctype)
                out += buf[pos:end]
            pos = end

    def row_group(self, out: bytearray, pos: int) -> int:
        end = self._struct(out, pos, self._row_group_field)
        self.ordinal += 1
        return end

    def _row_group_field(self, out: bytearray, fid: int, ctype: int, pos: int) -> int | None:
        if fid == _RG_COLUMNS:
            size, etype, start = _list_header(self.buf, pos)
            if etype != _STRUCT:
                raise FooterError("RowGroup.columns is not a list of structs")
            out += self.buf[pos:start]
            pos = start
            for _ in range(size):
                pos = self._struct(out, pos, self._column_chunk_field)
            return pos
        if fid == _RG_FILE_OFFSET:
            return self._offset(out, ctype, pos)
        if fid == _RG_ORDINAL:
            if self.ordinal > 0x7FFF:
                raise FooterError("more than 32,767 row groups (RowGroup.ordinal is i16)")
            _put_varint(out, _zigzag(self.ordinal))
            return _skip(self.buf, pos, ctype)
        return None

    def _column_chunk_field(self, out: bytearray, fid: int, ctype: int, pos: int) -> int | None:
        if fid in _CC_ENCRYPTED:
            raise FooterError("an encrypted column chunk")
        if fid in (_CC_FILE_OFFSET, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX):
            return self._offset(out, ctype, pos)
        if fid == _CC_META:
            return self._struct(out, pos, self._column_meta_field)
        return None

    def _column_meta_field(self, out: bytearray, fid: int, ctype: int, pos: int) -> int | None:
        return self._offset(out, ctype, pos) if fid in _CMD_OFFSETS else None


class _PartSink:
    """The file object a part's ParquetWriter writes to: the output, past its own magic."""

    def __init__(self, file: IO[bytes], *, skip_magic: bool) -> None:
        self._file = file
        self._skip = len(MAGIC) if skip_magic else 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        if self._skip:
            head = bytes(view[: self._skip])
            if MAGIC[len(MAGIC) - self._skip :][: len(head)] != head:
                raise FooterError(f"a part does not start with the Parquet magic: {head!r}")
            self._skip -= len(head)
            view = view[len(head) :]
        if view:
            self._file.write(view)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:  # the output file stays open for the next part
        self.closed = True

    def writable(self) -> bool:
        return True


class PartedParquetFile:
    """One Parquet file, each :meth:`write_table` a part with a writer of its own.

    ``options`` are ``pyarrow.parquet.ParquetWriter``'s (compression, dictionaries,
    statistics, ``memory_pool``...), the same for every part; encryption is not supported.
    """

    def __init__(self, path: Path | str, schema: pa.Schema, **options: Any) -> None:
        if options.get("encryption_properties") is not None:
            raise ValueError("encrypted Parquet files are not supported")
        self.schema = schema
        self._options = options
        self._file: IO[bytes] = open(path, "w+b")  # noqa: SIM115 - closed by close()
        self._head: list[tuple[int, bytes, bytes]] | None = None  # first part's fields
        # the encoded RowGroup structs, offsets final, in a temporary file next to the
        # output: the footer's ~1 KB a row group is not held in memory either (0.4 MB for
        # a BTCUSDT day)
        try:
            self._row_groups: IO[bytes] = tempfile.TemporaryFile(dir=Path(path).parent)  # noqa: SIM115 - see close()
        except BaseException:
            self._file.close()
            raise
        self._count = 0  # row groups
        self._rows = 0
        self._around = (b"", b"")  # the first footer's bytes before field 3, after field 4
        self._closed = False

    @property
    def row_groups(self) -> int:
        return self._count

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        """Write ``table`` as row groups of at most ``row_group_size`` rows (one part)."""
        self._part(table, row_group_size)

    def close(self) -> None:
        """Write the footer (an empty file if nothing was written) and close the file."""
        if self._closed:
            return
        try:
            if self._head is None:
                self._part(None, None)  # a file with the schema and no row groups
            self._write_footer()
        finally:
            self._closed = True
            self._row_groups.close()
            self._file.close()

    def _part(self, table: pa.Table | None, row_group_size: int | None) -> None:
        if self._closed:
            raise ValueError("write to a closed Parquet file")
        first = self._head is None
        begin = self._file.tell()  # where the part's first byte past its magic goes
        with pq.ParquetWriter(
            _PartSink(self._file, skip_magic=not first), self.schema, **self._options
        ) as writer:
            if table is not None:
                writer.write_table(table, row_group_size=row_group_size)
        end = self._file.tell()
        self._file.seek(end - 8)
        size_and_magic = self._file.read(8)
        (length,) = struct.unpack("<I", size_and_magic[:4])
        if size_and_magic[4:] != MAGIC or length + 8 > end - begin:
            raise FooterError("a part does not end with a Parquet footer")
        self._file.seek(end - 8 - length)
        footer = self._file.read(length)
        self._file.seek(end - 8 - length)
        self._file.truncate()
        # the part's offsets count from its own magic, at 0; its data is at ``begin`` now
        self._take(footer, 0 if first else begin - len(MAGIC))

    def _take(self, footer: bytes, shift: int) -> None:
        """Keep a part's rows and row groups; check the rest of its footer is the first's.

        FileMetaData's fields come in id order: 1 and 2 (version, schema) before the row
        count and the row groups (3, 4), the key-value metadata, ``created_by`` and column
        orders (5-7) after them. A later part's are compared as bytes with the first's.
        """
        head: list[tuple[int, bytes, bytes]] = []
        pos = last = 0
        if self._head is not None:  # fields 1-2 and 5-7 as the first part's
            before, after = self._around
            if not (footer.startswith(before) and footer.endswith(after)):
                raise FooterError("the parts' schemas or file metadata differ")
            pos, last = len(before), _FMD_ROW_GROUPS - 2
        while True:
            hstart = pos
            last, ctype, pos = _field_header(footer, pos, last)
            if ctype == _STOP:
                break
            if last in _FMD_ENCRYPTION:
                raise FooterError("an encrypted footer")
            start = pos
            if last == _FMD_ROW_GROUPS:
                size, etype, pos = _list_header(footer, start)
                if ctype != _LIST or etype != _STRUCT:
                    raise FooterError("FileMetaData.row_groups is not a list of structs")
                moved = _Moved(footer, shift, self._count)
                out = bytearray()
                for _ in range(size):
                    pos = moved.row_group(out, pos)
                self._row_groups.write(out)
                self._count += size
            else:
                pos = _skip(footer, pos, ctype)
                if last == _FMD_NUM_ROWS:
                    self._rows += _unzigzag(_varint(footer, start)[0])
            head.append((last, footer[hstart:start], footer[start:pos]))
            if self._head is not None and last == _FMD_ROW_GROUPS:
                if pos != len(footer) - len(self._around[1]):
                    raise FooterError("the parts' schemas or file metadata differ")
                return  # the rest is the first part's (checked above)
        if self._head is None:
            self._head = head
            ids = [fid for fid, _, _ in head]
            if ids[:2] != [1, 2] or ids[2:4] != [_FMD_NUM_ROWS, _FMD_ROW_GROUPS]:
                raise FooterError(f"FileMetaData fields {ids}, expected 1, 2, 3, 4 first")
            ends = [0]
            for _, header, value in head:
                ends.append(ends[-1] + len(header) + len(value))
            self._around = (footer[: ends[2]], footer[ends[4] :])

    def _write_footer(self) -> None:
        """The first part's FileMetaData with every part's rows and row groups; its length;
        the magic."""
        assert self._head is not None
        out = bytearray()
        length = 0
        for fid, header, value in self._head:
            out += header
            if fid == _FMD_NUM_ROWS:
                _put_varint(out, _zigzag(self._rows))
            elif fid == _FMD_ROW_GROUPS:
                _put_list_header(out, self._count, _STRUCT)
                self._file.write(out)
                length += len(out)
                out = bytearray()
                length += self._row_groups.tell()
                self._row_groups.seek(0)
                shutil.copyfileobj(self._row_groups, self._file)
            else:
                out += value
        out.append(_STOP)
        length += len(out)
        self._file.write(bytes(out) + struct.pack("<I", length) + MAGIC)

    def __enter__(self) -> PartedParquetFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
