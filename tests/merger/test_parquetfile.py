"""merger.parquetfile: a Parquet file written in parts, one footer.

Ground truth: the file one ``pyarrow.parquet.ParquetWriter`` writes from the same tables
(byte for byte), pyarrow's reading of it, and the C allocator's own count of the memory in
use (glibc ``mallinfo2``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.canonical import LEVELS_SCHEMA
from merger import parquetfile
from merger.coinbase_write import SNAPSHOTS_SCHEMA
from merger.parquetfile import FooterError, PartedParquetFile

# merger.writer's options for levels.parquet
OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": ["side", "source"],
    "write_statistics": True,
}


def levels(start: int, n: int) -> pa.Table:
    ids = [start + i // 3 for i in range(n)]
    return pa.table(
        {
            "local_ts": [1_714_521_600_000_000_000 + 10**8 * i for i in ids],
            "exchange_ts": [1_714_521_600_000 + 100 * i for i in ids],
            "prev_update_id": [i - 1 for i in ids],
            "first_update_id": ids,
            "last_update_id": [i + 4 for i in ids],
            "side": ["bid" if i % 2 else "ask" for i in range(n)],
            "price": [60_000 + (i * 7919 % 1000) / 100 for i in range(n)],
            "qty": [(i * 104_729 % 5000) / 1000 for i in range(n)],
            "is_snapshot": [i < 4 for i in range(n)],
            "source": ["eu.c1" if i % 5 else "us.c2" for i in range(n)],
        },
        schema=LEVELS_SCHEMA,
    )


def write_both(
    tmp_path: Path, schema: pa.Schema, tables: list[pa.Table], row_group_size: int | None
) -> tuple[bytes, bytes]:
    one, parted = tmp_path / "one.parquet", tmp_path / "parted.parquet"
    with pq.ParquetWriter(one, schema, **OPTIONS) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=row_group_size)
    with PartedParquetFile(parted, schema, **OPTIONS) as out:
        for table in tables:
            out.write_table(table, row_group_size=row_group_size)
    return one.read_bytes(), parted.read_bytes()


@pytest.mark.parametrize(
    ("sizes", "row_group_size"),
    [
        ([], None),  # no rows at all: the schema and no row groups
        ([1], None),
        ([500, 1, 333], None),
        ([40] * 20, None),  # more than 14 row groups: the list's long header
        ([1000, 250], 100),  # several row groups in one part
    ],
)
def test_the_file_is_byte_for_byte_one_writers(
    tmp_path: Path, sizes: list[int], row_group_size: int | None
) -> None:
    tables = [levels(1000 * k, n) for k, n in enumerate(sizes)]
    one, parted = write_both(tmp_path, LEVELS_SCHEMA, tables, row_group_size)
    assert parted == one
    read = pq.read_table(tmp_path / "parted.parquet")
    assert read.num_rows == sum(sizes)
    if tables:
        assert read.equals(pa.concat_tables(tables))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), max_size=18), st.integers(1, 400))
def test_any_parts_make_one_writers_file(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], row_group_size: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("parts")
    tables = [levels(400 * k, n) for k, n in enumerate(sizes)]
    one, parted = write_both(tmp_path, LEVELS_SCHEMA, tables, row_group_size)
    assert parted == one


def test_nullable_columns_and_their_statistics(tmp_path: Path) -> None:
    def snapshots(n: int, level3: bool) -> pa.Table:
        return pa.table(
            {
                "slot_ts": [10**18 + i // 10 for i in range(n)],
                "local_ts": [10**18 + 5 + i // 10 for i in range(n)],
                "sequence": [77 + i // 10 for i in range(n)],
                "side": ["bid" if i % 10 < 5 else "ask" for i in range(n)],
                "price": [100.0 + i % 10 for i in range(n)],
                "size": [1.0 + i for i in range(n)],
                "order_id": [f"o-{i}" if level3 else None for i in range(n)],
                "num_orders": [None if level3 else 1 + i % 3 for i in range(n)],
                "source": ["us.c1"] * n,
            },
            schema=SNAPSHOTS_SCHEMA,
        )

    tables = [snapshots(30, False), snapshots(20, True), snapshots(10, False)]
    one, parted = write_both(tmp_path, SNAPSHOTS_SCHEMA, tables, None)
    assert parted == one
    meta = pq.ParquetFile(tmp_path / "parted.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [30, 20, 10]
    stats = meta.row_group(1).column(SNAPSHOTS_SCHEMA.get_field_index("size")).statistics
    assert (stats.min, stats.max) == (1.0, 20.0)


def test_a_row_group_read_alone_is_the_table_written(tmp_path: Path) -> None:
    path = tmp_path / "parted.parquet"
    tables = [levels(0, 70), levels(70, 5), levels(75, 130)]
    with PartedParquetFile(path, LEVELS_SCHEMA, **OPTIONS) as out:
        for table in tables:
            out.write_table(table)
        assert out.row_groups == 3
    read = pq.ParquetFile(path)
    for i, table in enumerate(tables):  # found by the offsets the footer gives
        assert read.read_row_group(i).equals(table)


def test_a_closed_file_takes_no_more_tables(tmp_path: Path) -> None:
    out = PartedParquetFile(tmp_path / "p.parquet", LEVELS_SCHEMA, **OPTIONS)
    out.write_table(levels(0, 3))
    out.close()
    out.close()  # once is enough; again does nothing
    with pytest.raises(ValueError, match="closed"):
        out.write_table(levels(3, 3))
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 3


def test_encryption_is_refused() -> None:
    with pytest.raises(ValueError, match="encrypted"):
        PartedParquetFile("/nonexistent/x.parquet", LEVELS_SCHEMA, encryption_properties=object())


def test_a_part_that_does_not_start_with_the_magic_is_an_error(tmp_path: Path) -> None:
    with (tmp_path / "x").open("wb") as f:
        sink = parquetfile._PartSink(f, skip_magic=True)
        sink.write(b"PA")
        sink.write(b"R1data")  # the magic across two writes: dropped
        with pytest.raises(FooterError, match="magic"):
            parquetfile._PartSink(f, skip_magic=True).write(b"PAR2")
    assert (tmp_path / "x").read_bytes() == b"data"


def _footer(path: Path, table: pa.Table) -> bytes:
    """The FileMetaData bytes of ``table`` written to ``path`` by one writer."""
    pq.write_table(table, path, **OPTIONS)
    data = path.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    return data[-8 - length : -8]


def _fields(footer: bytes) -> list[tuple[int, bytes, bytes]]:
    """A struct's fields: (id, header bytes, value bytes)."""
    fields: list[tuple[int, bytes, bytes]] = []
    pos = last = 0
    while True:
        head = pos
        last, ctype, pos = parquetfile._field_header(footer, pos, last)
        if ctype == 0:
            return fields
        end = parquetfile._skip(footer, pos, ctype)
        fields.append((last, footer[head:pos], footer[pos:end]))
        pos = end


def test_offsets_move_and_ordinals_count_on(tmp_path: Path) -> None:
    footer = _footer(tmp_path / "one.parquet", levels(0, 10))
    meta = pq.ParquetFile(tmp_path / "one.parquet").metadata
    fields = _fields(footer)
    (row_groups,) = [value for fid, _, value in fields if fid == 4]
    _, _, pos = parquetfile._list_header(row_groups, 0)
    moved = bytearray()
    parquetfile._Moved(row_groups, 1000, 7).row_group(moved, pos)
    # the moved row group in a footer of its own, read back by pyarrow
    out = bytearray()
    for fid, header, value in fields:
        out += header
        out += b"\x1c" + moved if fid == 4 else value  # a list of one struct
    out.append(0)
    path = tmp_path / "moved.parquet"
    path.write_bytes(b"PAR1" + bytes(out) + len(out).to_bytes(4, "little") + b"PAR1")
    moved_meta = pq.ParquetFile(path).metadata
    for c in range(meta.num_columns):
        was, now = meta.row_group(0).column(c), moved_meta.row_group(0).column(c)
        assert now.data_page_offset == was.data_page_offset + 1000
        if was.has_dictionary_page:
            assert now.dictionary_page_offset == was.dictionary_page_offset + 1000
        assert now.file_offset == was.file_offset == 0  # 0: not set, and left so
    assert moved_meta.row_group(0).to_dict()["num_rows"] == 10


def test_a_row_group_ordinal_is_renumbered() -> None:
    # Arrow writes RowGroup.ordinal (field 7, i16) only in encrypted files; another
    # writer may: a row group of file_offset 100 (field 5) and ordinal 0 (field 7)
    row_group = bytes([0x56, 200, 1, 0x24, 0, 0])
    out = bytearray()
    assert parquetfile._Moved(row_group, 50, 5).row_group(out, 0) == len(row_group)
    assert bytes(out) == bytes([0x56, 0xAC, 0x02, 0x24, 10, 0])  # 150 and 5, zigzag varints
    with pytest.raises(FooterError, match="32,767"):
        parquetfile._Moved(row_group, 0, 0x8000).row_group(bytearray(), 0)


def test_a_damaged_footer_is_an_error_not_a_guess() -> None:
    struct = 12  # thrift compact STRUCT
    with pytest.raises(FooterError, match="unknown thrift compact type"):
        parquetfile._skip(bytes([0x1E]), 0, struct)  # field 1 of type 14
    with pytest.raises(FooterError, match="truncated"):
        parquetfile._skip(bytes([0x16, 0x80]), 0, struct)  # an i64 whose varint never ends
    with pytest.raises(FooterError, match="truncated struct"):
        parquetfile._skip(bytes([0x15, 0x02]), 0, struct)  # no STOP


def test_a_part_whose_schema_differs_is_an_error(tmp_path: Path) -> None:
    first = _footer(tmp_path / "x.parquet", levels(0, 5))
    renamed = levels(5, 5).rename_columns([*LEVELS_SCHEMA.names[:-1], "origin"])
    out = PartedParquetFile(tmp_path / "p.parquet", LEVELS_SCHEMA, **OPTIONS)
    out._take(first, 0)
    out._take(_footer(tmp_path / "x.parquet", levels(5, 7)), 100)  # the same schema: taken
    with pytest.raises(FooterError, match="differ"):
        out._take(_footer(tmp_path / "x.parquet", renamed), 200)
    assert out.row_groups == 2
    out.close()


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def test_memory_held_per_row_group_is_the_footer_only(tmp_path: Path) -> None:
    """Why the module exists: pyarrow's writer holds ~8 KB for every row group written
    until its footer; written in parts, nothing (the footer entries wait in a file)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the C allocator's count of memory in use is glibc's mallinfo2")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2

    def in_use() -> int:
        gc.collect()
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    table = levels(0, 50)
    held = {}
    for name, cls in (("one", pq.ParquetWriter), ("parted", PartedParquetFile)):
        writer = cls(tmp_path / f"{name}.parquet", LEVELS_SCHEMA, **OPTIONS)
        writer.write_table(table)  # the first part: schema and file metadata kept
        before = in_use()
        for _ in range(200):
            writer.write_table(table)
        held[name] = (in_use() - before) / 200
        writer.close()
    assert held["one"] > 5000, held  # if not, pyarrow no longer holds it: drop the module
    assert held["parted"] < 1000, held
