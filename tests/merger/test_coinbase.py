"""The Coinbase merger on raw chunks built from known books: two regions, one cut short.

Ground truth is the TrueMarket the chunks were written from: which slot each region
answered, with which book, and which slots no region has.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from booktape.cli import main
from booktape.codec import DataRecord
from booktape.keys import RawKey, canonical_key, status_key
from booktape.stores import LocalStore, MemoryStore, Store
from merger.coinbase import merge_coinbase_day
from merger.gaps import decode_report
from tests.merger.coinbase_fixtures import (
    MS,
    PRODUCT,
    T0,
    S,
    TrueMarket,
    book_body,
    book_snap,
    chunk,
    make_market,
    miss,
    price_snap,
)

DATE = dt.date(2024, 5, 1)
STEP = 10 * S  # the grid interval
SLOTS = 30
NOW = T0 + 3600 * S  # the day is still being recorded
EU, US = "eu.c1", "us.c1"
MISSING = [7, 8, 22, 23]  # 7: eu missed it; 8: eu got a 429; 22-23: us's chunk is corrupt


def slot(i: int) -> int:
    return T0 + i * STEP


def eu_times(i: int) -> tuple[int, int]:
    q = slot(i) + 5 * MS
    return q, q + 40 * MS  # midpoint 25 ms after the slot


def us_times(i: int) -> tuple[int, int]:
    q = slot(i) + 2 * MS
    return q, q + (10 if i % 2 == 0 else 80) * MS  # midpoint 7 ms (even) or 42 ms (odd)


def us_sequence(market: TrueMarket, i: int) -> int:
    """us answers odd slots a little later: it sees the next version of the book."""
    return market.sequences[i + 1 if i % 2 else i]


def expected_pick(market: TrueMarket, i: int) -> tuple[str, int]:
    """(source, sequence) the merged day must hold at slot i (nearest to the slot)."""
    if i <= 11 or (i <= 18 and i % 2):
        return EU, market.sequences[i]
    return US, us_sequence(market, i)


def eu_book_records(market: TrueMarket, slots: range) -> list[DataRecord]:
    out: list[DataRecord] = []
    for i in slots:
        q, t = eu_times(i)
        if i == 7:
            out.append(miss(slot(i), slot(i) + 1 * S))
        elif i == 8:
            out.append(book_snap(slot(i), q, t, b'{"message":"Slow down"}', status=429))
        else:
            out.append(book_snap(slot(i), q, t, book_body(market.books[market.sequences[i]], t)))
    return out


def us_book_records(market: TrueMarket, slots: range) -> list[DataRecord]:
    out: list[DataRecord] = []
    for i in slots:
        q, t = us_times(i)
        out.append(book_snap(slot(i), q, t, book_body(market.books[us_sequence(market, i)], t)))
    return out


def raw_objects(market: TrueMarket) -> dict[str, bytes]:
    """Every raw object of the day, as two collectors would have uploaded them."""
    objs: dict[str, bytes] = {}

    def put(
        channel: str, symbol: str, source: str, records: list[DataRecord], cut_last: bool = False
    ) -> str:
        key, data = chunk(channel, symbol, source, records, interval_ns=STEP, cut_last=cut_last)
        objs[key] = data
        return key

    for slots in (range(5), range(5, 10), range(10, 15)):
        put("book", PRODUCT, EU, eu_book_records(market, slots))
    put("book", PRODUCT, EU, eu_book_records(market, range(15, 20)), cut_last=True)  # killed
    first = put("book", PRODUCT, US, us_book_records(market, range(12, 15)))
    dup = RawKey.from_recv("coinbase", "book", PRODUCT, "us", "c1", slot(12) + 3 * MS, 1, 2)
    objs[dup.key] = objs[first]  # the same chunk uploaded twice under another name
    put("book", PRODUCT, US, us_book_records(market, range(15, 22)))
    bad = put("book", PRODUCT, US, us_book_records(market, range(22, 24)))
    objs[bad] = b"\x28\xb5\x2f\xfd garbage, not a zstd frame"
    records = us_book_records(market, range(24, 30))
    put("book", PRODUCT, US, [*records[:2], records[1], *records[2:]])  # 25 recorded twice
    for cur in ("BTC", "ETH"):
        for source, slots, times in ((EU, range(20), eu_times), (US, range(12, 30), us_times)):
            recs: list[DataRecord] = []
            for i in slots:
                q, t = times(i)
                recs += [price_snap(slot(i), q, t, cur, kind, market.prices[(cur, i, kind)])
                         for kind in ("buy", "sell", "spot")]  # fmt: skip
            put("prices", cur, source, recs)
    return objs


async def fill(store: Store, objs: dict[str, bytes]) -> None:
    for key, data in objs.items():
        await store.put(key, data)


@pytest.fixture
def market() -> TrueMarket:
    return make_market(SLOTS)


async def test_two_regions_one_killed_every_recorded_slot_once_nearest_chosen(
    market: TrueMarket,
) -> None:
    store = MemoryStore()
    await fill(store, raw_objects(market))

    result = await merge_coinbase_day(store, DATE, now_ns=NOW)

    assert result.symbols[PRODUCT].state == "merged"
    assert result.symbols[PRODUCT].unrecoverable == len(MISSING)
    data = await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "snapshots.parquet"))
    table = pq.read_table(io.BytesIO(data)).to_pylist()
    by_slot: dict[int, list[dict[str, Any]]] = {}
    for row in table:
        by_slot.setdefault(row["slot_ts"], []).append(row)
    present = [i for i in range(SLOTS) if i not in MISSING]
    assert sorted(by_slot) == [slot(i) for i in present]
    for i in present:
        source, sequence = expected_pick(market, i)
        rows = by_slot[slot(i)]
        assert {(r["source"], r["sequence"]) for r in rows} == {(source, sequence)}, i
        book = market.books[sequence]
        want = [("bid", float(p), float(s), o) for p, s, o in book.bids]
        want += [("ask", float(p), float(s), o) for p, s, o in book.asks]
        assert [(r["side"], r["price"], r["size"], r["order_id"]) for r in rows] == want
        assert all(r["num_orders"] is None for r in rows)


async def test_gaps_json_lists_exactly_the_slots_no_region_has(market: TrueMarket) -> None:
    store = MemoryStore()
    objs = raw_objects(market)
    await fill(store, objs)

    await merge_coinbase_day(store, DATE, now_ns=NOW)

    report = decode_report(
        await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "gaps.json"))
    )
    assert report.slots is not None
    assert report.missing_slots is not None
    runs = [(r.from_slot, r.to_slot, r.slots, r.from_time, r.to_time) for r in report.missing_slots]
    assert runs == [
        (slot(7), slot(8), 2, "10:01:10", "10:01:20"),
        (slot(22), slot(23), 2, "10:03:40", "10:03:50"),
    ]
    assert (report.slots.expected, report.slots.present, report.slots.missing) == (30, 26, 4)
    assert (report.slots.expected_from, report.slots.expected_to) == (slot(0), slot(29))
    assert report.slots.expected_from_rule == "first_recorded"
    assert report.slots.expected_to_rule == "last_recorded"
    assert report.slots.interval_ns == STEP
    assert report.slots.level == 3
    eu = report.slots.sources[EU]
    assert (eu.non_200, eu.missed, eu.usable) == (1, 1, 17)  # 0-18 less 7 and 8; 19 lost
    corrupt = {c.key: c.error for c in report.corrupt}
    assert len(corrupt) == 2
    assert any(e.startswith("truncated") for e in corrupt.values())
    assert report.filled == {EU: 13, US: 13}  # eu: 0-6, 9-11, 13, 15, 17
    assert report.audit.checked > 0
    assert report.audit.mismatched == 0
    assert report.events == 26
    assert report.unrecoverable == []


async def test_prices_one_per_slot_and_kind_from_both_regions(market: TrueMarket) -> None:
    store = MemoryStore()
    await fill(store, raw_objects(market))

    result = await merge_coinbase_day(store, DATE, now_ns=NOW)

    assert result.symbols["prices/ETH"].state == "merged"
    for cur in ("BTC", "ETH"):
        key = canonical_key("coinbase", "prices", cur, DATE, "prices.parquet")
        rows = pq.read_table(io.BytesIO(await store.get(key))).to_pylist()
        got = [(r["slot_ts"], r["kind"], r["amount"], r["quote"]) for r in rows]
        want = [(slot(i), k, float(market.prices[(cur, i, k)]), "USD")
                for i in range(SLOTS) for k in ("buy", "sell", "spot")]  # fmt: skip
        assert got == want
        assert {r["source"] for r in rows if r["slot_ts"] == slot(14)} == {US}  # nearer
        assert {r["source"] for r in rows if r["slot_ts"] == slot(13)} == {EU}


async def test_done_day_is_left_alone_and_force_rebuilds_byte_identical(
    market: TrueMarket,
) -> None:
    store = MemoryStore()
    await fill(store, raw_objects(market))
    await merge_coinbase_day(store, DATE, now_ns=NOW)
    prefix = "canonical/coinbase/"
    first = {i.key: await store.get(i.key) async for i in store.list(prefix)}

    again = await merge_coinbase_day(store, DATE, now_ns=NOW + S)
    forced = await merge_coinbase_day(store, DATE, now_ns=NOW + S, force=True)

    assert {r.state for r in again.symbols.values()} == {"done"}
    assert {r.state for r in forced.symbols.values()} == {"merged"}
    assert {i.key: await store.get(i.key) async for i in store.list(prefix)} == first
    assert len(first) == 9  # (parquet, gaps, manifest) x (BTC-USD, BTC, ETH)
    summary = orjson.loads(await store.get(status_key("merge", "coinbase", DATE)))
    assert summary["merged"] == ["BTC-USD", "prices/BTC", "prices/ETH"]


async def test_a_late_upload_makes_the_day_stale(market: TrueMarket) -> None:
    store = MemoryStore()
    objs = raw_objects(market)
    late = next(k for k in objs if "/book/" in k and "/eu.c1/100050" in k)  # slots 5-9
    await fill(store, {k: v for k, v in objs.items() if k != late})
    first = await merge_coinbase_day(store, DATE, now_ns=NOW)
    await store.put(late, objs[late])

    second = await merge_coinbase_day(store, DATE, now_ns=NOW)

    assert first.symbols[PRODUCT].unrecoverable == len(MISSING) + 3  # 5, 6 and 9 were late
    assert second.symbols[PRODUCT].state == "merged"
    assert second.symbols[PRODUCT].unrecoverable == len(MISSING)


async def test_over_day_expects_the_grid_to_midnight_and_from_midnight_if_recorded_before(
    market: TrueMarket,
) -> None:
    store = MemoryStore()
    await fill(store, raw_objects(market))
    yesterday = [book_snap(slot(0) - 86_400 * S, slot(0) - 86_400 * S, slot(0) - 86_400 * S,
                           book_body(market.books[market.sequences[0]], 0))]  # fmt: skip
    key, data = chunk("book", PRODUCT, EU, yesterday, interval_ns=STEP)
    await store.put(key, data)
    day_end = T0 + 14 * 3600 * S  # 2024-05-02T00:00:00Z

    await merge_coinbase_day(store, DATE, products=[PRODUCT], now_ns=day_end)

    report = decode_report(
        await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "gaps.json"))
    )
    assert report.slots is not None
    assert report.missing_slots is not None
    assert report.slots.expected_from_rule == "midnight"
    assert report.slots.expected_to_rule == "midnight"
    assert report.slots.expected == 8640  # every 10 s of the day
    assert report.slots.present == 26
    first, last = report.missing_slots[0], report.missing_slots[-1]
    assert (first.from_time, first.to_time, first.slots) == ("00:00:00", "09:59:50", 3600)
    assert (last.from_time, last.to_time) == ("10:05:00", "23:59:50")
    assert not await store.head(canonical_key("coinbase", "prices", "ETH", DATE, "gaps.json"))


async def test_equal_sequence_with_a_different_book_is_an_audit_mismatch(
    market: TrueMarket,
) -> None:
    store = MemoryStore()
    seq = market.sequences[0]
    other = market.books[market.sequences[1]]
    forged = orjson.loads(book_body(other, 0))
    forged["sequence"] = seq
    q, t = us_times(0)
    for source, body, times in ((EU, book_body(market.books[seq], 1), eu_times(0)),
                                (US, orjson.dumps(forged), (q, t))):  # fmt: skip
        key, data = chunk("book", PRODUCT, source, [book_snap(slot(0), *times, body)],
                          interval_ns=STEP)  # fmt: skip
        await store.put(key, data)

    await merge_coinbase_day(store, DATE, now_ns=NOW)

    report = decode_report(
        await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "gaps.json"))
    )
    assert (report.audit.checked, report.audit.mismatched) == (1, 1)
    assert report.audit.first_mismatch is not None
    assert report.audit.first_mismatch["sequence"] == seq


async def test_tie_goes_to_the_first_region_in_name_order(market: TrueMarket) -> None:
    store = MemoryStore()
    q, t = slot(0) + 5 * MS, slot(0) + 45 * MS
    for source, seq in (("us.c1", market.sequences[1]), ("ap.c1", market.sequences[0])):
        body = book_body(market.books[seq], t)
        key, data = chunk("book", PRODUCT, source, [book_snap(slot(0), q, t, body)],
                          interval_ns=STEP)  # fmt: skip
        await store.put(key, data)

    await merge_coinbase_day(store, DATE, now_ns=NOW)

    data = await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "snapshots.parquet"))
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert {(r["source"], r["sequence"]) for r in rows} == {("ap.c1", market.sequences[0])}


def test_cli_merge_exchange_coinbase_exit_3_on_missing_slots(
    market: TrueMarket, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    asyncio.run(fill(LocalStore(root), raw_objects(market)))
    args = ["merge", "--store", str(root), "--exchange", "coinbase", "--date", "2024-05-01"]

    assert main([*args, "--fail-on-gap"]) == 3
    assert main(args) == 0
    assert (root / canonical_key("coinbase", "book", PRODUCT, DATE, "_MANIFEST.json")).exists()


async def test_a_response_after_midnight_belongs_to_its_slot_s_day(market: TrueMarket) -> None:
    store = MemoryStore()
    midnight = T0 + 14 * 3600 * S  # 2024-05-02T00:00:00Z
    last_slot = midnight - STEP  # 23:59:50 of May 1st
    records = [
        (last_slot - STEP, last_slot - STEP + 40 * MS, 0),
        (last_slot, midnight + 30 * MS, 1),
    ]
    for q_slot, t, i in records:  # the second response arrives after midnight
        body = book_body(market.books[market.sequences[i]], t)
        key, data = chunk("book", PRODUCT, EU, [book_snap(q_slot, q_slot + MS, t, body)],
                          interval_ns=STEP)  # fmt: skip
        await store.put(key, data)

    may1 = await merge_coinbase_day(store, DATE, now_ns=midnight + 60 * S)
    may2 = await merge_coinbase_day(store, DATE + dt.timedelta(days=1), now_ns=midnight + 60 * S)

    data = await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "snapshots.parquet"))
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert sorted({r["slot_ts"] for r in rows}) == [last_slot - STEP, last_slot]
    assert may1.symbols[PRODUCT].events == 2
    report = decode_report(await store.get(canonical_key(
        "coinbase", "book", PRODUCT, DATE + dt.timedelta(days=1), "gaps.json")))  # fmt: skip
    assert report.slots is not None
    assert (report.events, report.slots.other_day) == (0, 1)
    assert may2.symbols[PRODUCT].events == 0


async def test_a_nearer_body_with_a_bad_entry_yields_to_the_other_region(
    market: TrueMarket,
) -> None:
    store = MemoryStore()
    seq = market.sequences[0]
    broken = orjson.loads(book_body(market.books[seq], 0))
    broken["asks"][3][0] = "not-a-price"
    near, far = us_times(0), eu_times(0)  # us is nearer to the slot
    for source, body, times in ((US, orjson.dumps(broken), near),
                                (EU, book_body(market.books[seq], 1), far)):  # fmt: skip
        key, data = chunk("book", PRODUCT, source, [book_snap(slot(0), *times, body)],
                          interval_ns=STEP)  # fmt: skip
        await store.put(key, data)

    result = await merge_coinbase_day(store, DATE, now_ns=NOW)

    data = await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "snapshots.parquet"))
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert {r["source"] for r in rows} == {EU}
    assert [r["price"] for r in rows if r["side"] == "ask"] == [
        float(p) for p, _, _ in market.books[seq].asks
    ]
    report = decode_report(
        await store.get(canonical_key("coinbase", "book", PRODUCT, DATE, "gaps.json"))
    )
    assert report.slots is not None
    assert report.slots.sources[US].unparseable == 1
    assert report.slots.sources[US].usable == 0
    assert result.symbols[PRODUCT].unrecoverable == 0
