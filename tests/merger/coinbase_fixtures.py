"""Coinbase raw chunks built like the collector writes them, from books known in advance.

A :class:`TrueMarket` is the ground truth: a level-3 book for every ``sequence`` and the
price points of every (currency, slot, kind). Chunks are written with the real
RecordWriter under the real key layout, so the merger reads exactly what a collector
would have uploaded.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from booktape.codec import Conn, DataRecord, Header, Snap
from booktape.keys import RawKey
from booktape.objects import RecordWriter

MS = 1_000_000
S = 1_000_000_000
T0 = 1_714_557_600 * S  # 2024-05-01T10:00:00Z
PRODUCT = "BTC-USD"
BOOK_PATH = "/products/BTC-USD/book?level=3"

Entry = list[str]  # [price, size, order_id]


@dataclass
class TrueBook:
    sequence: int
    bids: list[Entry]  # best first
    asks: list[Entry]


@dataclass
class TrueMarket:
    """Books by sequence, and the sequence each slot index shows (per version)."""

    books: dict[int, TrueBook] = field(default_factory=dict)
    sequences: list[int] = field(default_factory=list)  # slot index -> sequence
    prices: dict[tuple[str, int, str], str] = field(default_factory=dict)  # (cur, i, kind)


def _side(rng: random.Random, lo: int, hi: int, tag: int, *, bids: bool) -> list[Entry]:
    """Orders at 12 random cent prices in [lo, hi], one or two orders a price, best first."""
    out = []
    for cents in sorted({rng.randint(lo, hi) for _ in range(12)}, reverse=bids):
        for _ in range(rng.randint(1, 2)):
            size = f"{rng.randint(1, 99_999_999) / 1e8:.8f}"
            oid = f"{rng.getrandbits(64):016x}-{tag:04d}"
            out.append([f"{cents // 100}.{cents % 100:02d}", size, oid])
    return out


def make_market(
    slots: int, seed: int = 5, currencies: Sequence[str] = ("BTC", "ETH")
) -> TrueMarket:
    """Level-3 books with prices near 150000 USD (where float32 misses the cent)."""
    rng = random.Random(seed)
    market = TrueMarket()
    seq = 10_000
    for i in range(slots + 1):  # one spare version: a later response may see it
        seq += rng.choice((1, 2, 7))
        bids = _side(rng, 14_990_000, 15_000_000, i, bids=True)
        asks = _side(rng, 15_000_001, 15_010_000, i, bids=False)
        market.books[seq] = TrueBook(seq, bids, asks)
        market.sequences.append(seq)
    for cur in currencies:
        for i in range(slots):
            for kind in ("buy", "sell", "spot"):
                amount = f"{rng.randint(1_000_000, 15_000_000) / 100:.2f}"
                market.prices[(cur, i, kind)] = amount
    return market


def book_body(book: TrueBook, t: int) -> bytes:
    """A level-3 body; ``time`` differs per response, as it does on the exchange."""
    return orjson.dumps(
        {"bids": book.bids, "asks": book.asks, "sequence": book.sequence,
         "auction_mode": False, "auction": None, "time": f"2024-05-01T10:00:00.{t % S:09d}Z"}
    )  # fmt: skip


def book_snap(slot: int, q: int, t: int, body: bytes, *, status: int = 200) -> Snap:
    return Snap(t, q, "http-1", BOOK_PATH, body, {"status": status, "slot": slot, "level": 3})


def price_snap(slot: int, q: int, t: int, cur: str, kind: str, amount: str) -> Snap:
    body = orjson.dumps({"data": {"amount": amount, "currency": "USD", "base": cur}})
    return Snap(t, q, "http-1", f"/v2/prices/{cur}-USD/{kind}", body,
                {"status": 200, "slot": slot, "kind": kind})  # fmt: skip


def miss(slot: int, t: int) -> Conn:
    return Conn(t, "http-1", "miss", {"slot": slot, "reason": "deadline passed"})


def chunk(
    channel: str,
    symbol: str,
    source: str,
    records: Sequence[DataRecord],
    *,
    interval_ns: int,
    cut_last: bool = False,
) -> tuple[str, bytes]:
    """(key, bytes) of one object; ``cut_last``: a crash before the last record's flush."""
    region, collector = source.split(".")
    ok = [r for r in records if isinstance(r, Snap) and r.extra.get("status") == 200]
    seqs = [orjson.loads(r.raw)["sequence"] for r in ok] if channel == "book" else []
    first, last = (seqs[0], seqs[-1]) if seqs else (0, 0)
    key = RawKey.from_recv(
        "coinbase", channel, symbol, region, collector, records[0].t, first, last
    )
    extra: dict[str, object] = {"interval_ns": interval_ns}
    extra.update({"level": 3} if channel == "book" else {"quote": "USD"})
    out = io.BytesIO()
    writer = RecordWriter(out, Header("coinbase", channel, symbol, region, collector, "test",
                                      extra=extra))  # fmt: skip
    for n, record in enumerate(records, 1):
        writer.write_record(record)
        if cut_last and n == len(records):
            return key.key, out.getvalue()  # the last record never reached the disk
        writer.flush()
    writer.close()
    return key.key, out.getvalue()
