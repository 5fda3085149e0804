"""Replay levels.parquet rows into a book, the way a reader of the canonical output would."""

from __future__ import annotations

import io
from collections.abc import Iterable
from decimal import Decimal

import pyarrow.parquet as pq

Book = dict[str, dict[Decimal, Decimal]]


def replay_rows(rows: Iterable[tuple[str, float, float, bool]]) -> Book:
    """(side, price, qty, is_snapshot) rows; a snapshot row after other rows resets the book."""
    book: Book = {"bid": {}, "ask": {}}
    in_snapshot = False
    for side, price, qty, is_snapshot in rows:
        if is_snapshot and not in_snapshot:
            book = {"bid": {}, "ask": {}}
        in_snapshot = is_snapshot
        if qty == 0:
            book[side].pop(Decimal(str(price)), None)
        else:
            book[side][Decimal(str(price))] = Decimal(str(qty))
    return book


def replay_parquet(data: bytes) -> Book:
    """The book at the end of a levels.parquet file's bytes."""
    table = pq.read_table(io.BytesIO(data), columns=["side", "price", "qty", "is_snapshot"])
    return replay_rows(
        (r["side"], r["price"], r["qty"], r["is_snapshot"]) for r in table.to_pylist()
    )
