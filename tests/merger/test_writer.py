"""The canonical writer: levels.parquet, deltas.jsonl.zst and the closing book.

Ground truth: a small reference replay of the hand-built items (a dict per side), compared
with the book that a reader rebuilds from levels.parquet (pyarrow and duckdb).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from booktape.binance import parse_depth_header
from booktape.codec import Snap, encode_msg
from booktape.objects import read_object
from merger.model import BookImage, CanonicalItem, StreamEvent
from merger.writer import (
    CLOSING_FILE,
    DELTAS_FILE,
    LEVELS_FILE,
    LEVELS_SCHEMA,
    DayWriter,
    WrittenDay,
    decode_closing,
)
from tests.merger.levels import Book, replay_rows

T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z in ns


def event(u_first: int, u_last: int, bids: list[list[str]], asks: list[list[str]], *,
          source: str = "eu.c1", t: int | None = None) -> StreamEvent:  # fmt: skip
    data = {"e": "depthUpdate", "E": 1_714_557_600_000 + u_last, "s": "BTCUSDT",
            "U": u_first, "u": u_last, "b": bids, "a": asks}  # fmt: skip
    frame = orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data})
    recv = t if t is not None else T0 + u_last * 1_000_000
    return StreamEvent(
        source=source,
        stream=f"{source}/ws1",
        recv_ns=recv,
        header=parse_depth_header(frame),
        frame=frame,
        line=encode_msg(recv, "ws1", frame),
    )


def image(uid: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]], *,
          reason: str = "start") -> BookImage:  # fmt: skip
    return BookImage(T0 + uid * 1_000_000 - 1, uid, tuple(bids), tuple(asks), "us.c1", reason)


def sample_items() -> list[CanonicalItem]:
    return [
        image(100, [("100.0", "1.5"), ("99.5", "2")], [("101.0", "1"), ("102.0", "3")]),
        event(101, 103, [["100.0", "0.5"], ["99.0", "4"]], [["101.0", "0.00000000"]]),
        event(104, 104, [], [["101.5", "2"]], source="us.c1"),
        event(103, 106, [["99.5", "0"]], [["103.0", "1"]]),  # overlaps at a splice
        image(200, [("98.0", "1")], [("104.0", "2")], reason="reanchor"),
        event(201, 205, [["98.5", "1"]], [["104.0", "0"], ["105.0", "1"]]),
    ]


def replay_items(items: list[CanonicalItem]) -> Book:
    book: Book = {"bid": {}, "ask": {}}
    for item in items:
        if isinstance(item, BookImage):
            book = {"bid": {}, "ask": {}}
            for side, levels in (("bid", item.bids), ("ask", item.asks)):
                book[side].update({Decimal(p): Decimal(q) for p, q in levels})
            continue
        data = orjson.loads(item.frame)["data"]
        for side, key in (("bid", "b"), ("ask", "a")):
            for p, q in data[key]:
                if Decimal(q) == 0:
                    book[side].pop(Decimal(p), None)
                else:
                    book[side][Decimal(p)] = Decimal(q)
    return book


def write(tmp: Path, items: list[CanonicalItem]) -> WrittenDay:
    writer = DayWriter(tmp, exchange="binance", channel="depth", symbol="BTCUSDT",
                       date="2024-05-01")  # fmt: skip
    writer.add_all(items)
    return writer.close()


def test_levels_parquet_has_exactly_the_design_schema(tmp_path: Path) -> None:
    written = write(tmp_path, sample_items())

    table = pq.read_table(written.files[LEVELS_FILE])

    assert table.schema.remove_metadata() == LEVELS_SCHEMA
    assert [(f.name, str(f.type)) for f in table.schema] == [
        ("local_ts", "int64"), ("exchange_ts", "int64"), ("prev_update_id", "int64"),
        ("first_update_id", "int64"), ("last_update_id", "int64"), ("side", "string"),
        ("price", "double"), ("qty", "double"), ("is_snapshot", "bool"), ("source", "string"),
    ]  # fmt: skip
    assert written.rows == table.num_rows == 4 + 3 + 1 + 2 + 2 + 3
    assert (written.events, written.images) == (4, 2)


def test_two_writes_of_the_same_items_are_byte_identical(tmp_path: Path) -> None:
    first = write(tmp_path / "a", sample_items())
    second = write(tmp_path / "b", sample_items())

    assert set(first.files) == {LEVELS_FILE, DELTAS_FILE, CLOSING_FILE}
    for name, path in first.files.items():
        assert path.read_bytes() == second.files[name].read_bytes(), name


def test_book_images_are_snapshot_rows_and_event_rows_are_contiguous(tmp_path: Path) -> None:
    rows = pq.read_table(write(tmp_path, sample_items()).files[LEVELS_FILE]).to_pylist()

    snaps = [r for r in rows if r["is_snapshot"]]
    assert [r["last_update_id"] for r in snaps] == [100] * 4 + [200] * 2
    assert all(r["prev_update_id"] == r["first_update_id"] == r["last_update_id"] for r in snaps)
    assert all(r["exchange_ts"] == 0 and r["source"] == "us.c1" for r in snaps)
    assert snaps[0]["local_ts"] == T0 + 100 * 1_000_000 - 1
    # One run of rows per item, bids before asks within each.
    runs: list[tuple[int, int]] = []
    for r in rows:
        key = (r["first_update_id"], r["last_update_id"])
        if not runs or runs[-1] != key:
            runs.append(key)
    assert runs == [(100, 100), (101, 103), (104, 104), (103, 106), (200, 200), (201, 205)]
    event_rows = [r for r in rows if r["last_update_id"] == 103]
    assert [r["side"] for r in event_rows] == ["bid", "bid", "ask"]
    assert event_rows[0]["prev_update_id"] == 100
    assert event_rows[0]["exchange_ts"] == 1_714_557_600_103


def test_levels_rebuild_the_replayed_book_with_pyarrow_and_duckdb(tmp_path: Path) -> None:
    items = sample_items()
    path = write(tmp_path, items).files[LEVELS_FILE]
    cols = ["local_ts", "last_update_id", "side", "price", "qty", "is_snapshot"]

    via_arrow = pq.read_table(path, columns=cols).to_pylist()
    relation = duckdb.sql(f"SELECT {', '.join(cols)} FROM read_parquet('{path}')")
    assert relation is not None
    via_duckdb = relation.fetchall()

    want = replay_items(items)
    assert replay_rows([tuple(r[c] for c in cols[2:]) for r in via_arrow]) == want
    assert replay_rows(row[2:] for row in via_duckdb) == want
    assert want["ask"] == {Decimal("105.0"): Decimal("1")}


def test_deltas_read_like_a_live_recording_with_event_lines_verbatim(tmp_path: Path) -> None:
    items = sample_items()
    path = write(tmp_path, items).files[DELTAS_FILE]

    result = read_object(path.read_bytes(), DELTAS_FILE)
    lines = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())

    assert not result.truncated
    assert (result.header.region, result.header.collector) == ("canonical", "merger")
    assert result.header.symbol == "BTCUSDT"
    body_lines = lines.splitlines(keepends=True)[1:]
    for item, line, record in zip(items, body_lines, result.records, strict=True):
        if isinstance(item, StreamEvent):
            assert line == item.line
        else:
            assert isinstance(record, Snap)
            body = orjson.loads(record.raw)
            assert body["lastUpdateId"] == item.last_update_id
            assert [tuple(level) for level in body["bids"]] == list(item.bids)
            assert record.t == item.local_ts
            assert record.extra["reason"] == item.reason


def test_closing_book_is_the_last_book_best_first(tmp_path: Path) -> None:
    written = write(tmp_path, sample_items())

    raw = zstandard.ZstdDecompressor().decompress(written.files[CLOSING_FILE].read_bytes())
    doc = orjson.loads(raw)
    start = decode_closing(written.files[CLOSING_FILE].read_bytes())

    assert doc["exchange"] == "binance"
    assert doc["date"] == "2024-05-01"
    assert doc["lastUpdateId"] == 205
    assert doc["bids"] == [["98.5", "1"], ["98.0", "1"]]
    assert doc["asks"] == [["105.0", "1"]]
    assert (start.reason, start.last_update_id, start.bids[0]) == (
        "previous_day",
        205,
        ("98.5", "1"),
    )


def test_an_empty_day_writes_empty_levels_and_no_closing_book(tmp_path: Path) -> None:
    written = write(tmp_path, [])

    assert CLOSING_FILE not in written.files
    table = pq.read_table(written.files[LEVELS_FILE])
    assert table.num_rows == 0
    assert table.schema.field("price").type == pa.float64()
