"""The day job on raw chunks built like a collector's: two sources, holes, snapshots.

Ground truth is the generated market itself: the book after its last event, and the ids
that no source recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import orjson

from booktape.cli import main
from booktape.codec import Header
from booktape.keys import RawKey, canonical_key, canonical_prefix, status_key
from booktape.objects import RecordWriter
from booktape.stores import LocalStore, MemoryStore, Store
from merger.cli import exit_code, write_metrics
from merger.day import DayResult, SymbolResult, load_and_stitch, merge_day, plan, shard_of
from merger.model import GapLog
from merger.progress import ProgressBar
from tests.merger.levels import Book, replay_parquet

DATE = dt.date(2024, 5, 1)
T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z
MS = 1_000_000


@dataclass
class Market:
    """A true market: events with their ids and the book after each of them."""

    symbol: str
    frames: list[bytes] = field(default_factory=list)
    ids: list[tuple[int, int]] = field(default_factory=list)
    books: list[Book] = field(default_factory=list)


def make_market(symbol: str = "BTCUSDT", n: int = 120, seed: int = 7, day: int = 0) -> Market:
    rng = random.Random(seed)
    market = Market(symbol)
    book: Book = {"bid": {}, "ask": {}}
    uid = 1000 + day * 10_000
    for i in range(n):
        first, uid = uid + 1, uid + rng.randint(1, 4)
        changes: dict[str, list[list[str]]] = {"b": [], "a": []}
        for _ in range(rng.randint(1, 5)):
            side = rng.choice(("b", "a"))
            price = Decimal(rng.randint(900, 999) if side == "b" else rng.randint(1000, 1099))
            qty = Decimal(0) if rng.random() < 0.3 else Decimal(rng.randint(1, 50)) / 10
            changes[side].append([f"{price}.00", f"{qty:.8f}"])
            levels = book["bid" if side == "b" else "ask"]
            if qty == 0:
                levels.pop(price, None)
            else:
                levels[price] = qty
        data = {"e": "depthUpdate", "E": 1_714_557_600_000 + day * 86_400_000 + i * 100,
                "s": symbol, "U": first, "u": uid, **changes}  # fmt: skip
        market.frames.append(orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms",
                                           "data": data}))  # fmt: skip
        market.ids.append((first, uid))
        market.books.append({s: dict(v) for s, v in book.items()})
    return market


def t_of(i: int, day: int = 0) -> int:
    return T0 + day * 86_400 * 1_000_000_000 + i * 100 * MS


def snapshot_body(market: Market, i: int) -> bytes:
    book = market.books[i]
    return orjson.dumps({
        "lastUpdateId": market.ids[i][1],
        "bids": [[f"{p}.00", f"{q:.8f}"] for p, q in sorted(book["bid"].items(), reverse=True)],
        "asks": [[f"{p}.00", f"{q:.8f}"] for p, q in sorted(book["ask"].items())],
    })  # fmt: skip


async def record(
    store: Store,
    market: Market,
    region: str,
    *,
    skip: frozenset[int] | set[int] = frozenset(),
    snaps: tuple[int, ...] = (2,),
    chunk: int = 25,
    day: int = 0,
) -> list[str]:
    """Write a collector's chunks of ``market`` (minus ``skip``); return their keys."""
    keys: list[str] = []
    indices = [i for i in range(len(market.frames)) if i not in skip]
    for at in range(0, len(indices), chunk):
        part = indices[at : at + chunk]
        buf = io.BytesIO()
        header = Header("binance", "depth", market.symbol, region, "c1", "host")
        with RecordWriter(buf, header) as writer:
            for i in part:
                writer.write_msg(t_of(i, day), "ws1", market.frames[i])
                if i in snaps:
                    writer.write_snap(
                        t_of(i, day) + MS, t_of(i, day) + 1, "rest",
                        f"/api/v3/depth?symbol={market.symbol}&limit=1000",
                        snapshot_body(market, i), extra={"status": 200},
                    )  # fmt: skip
        key = RawKey.from_recv("binance", "depth", market.symbol, region, "c1",
                               t_of(part[0], day), market.ids[part[0]][0],
                               market.ids[part[-1]][1]).key  # fmt: skip
        await store.put(key, buf.getvalue())
        keys.append(key)
    return keys


async def canonical_book(store: Store, symbol: str = "BTCUSDT", date: dt.date = DATE) -> Book:
    return replay_parquet(
        await store.get(canonical_key("binance", "depth", symbol, date, "levels.parquet"))
    )


async def outputs(store: Store, symbol: str = "BTCUSDT") -> dict[str, bytes]:
    prefix = canonical_prefix("binance", "depth", symbol, DATE)
    return {i.key: await store.get(i.key) async for i in store.list(prefix)}


async def test_two_sources_with_holes_merge_to_the_true_book() -> None:
    store, market = MemoryStore(), make_market()
    await record(store, market, "eu", skip=set(range(30, 45)), snaps=(2,))
    await record(store, market, "us", skip=set(range(70, 90)), snaps=(2, 100))

    result = await merge_day(store, "binance", DATE)

    assert result.symbols["BTCUSDT"].state == "merged"
    assert await canonical_book(store) == market.books[-1]
    gaps = orjson.loads(await store.get(canonical_key("binance", "depth", "BTCUSDT", DATE,
                                                      "gaps.json")))  # fmt: skip
    assert gaps["unrecoverable"] == []
    assert set(gaps["filled"]) == {"eu.c1", "us.c1"}
    manifest = orjson.loads(await store.get(canonical_key("binance", "depth", "BTCUSDT", DATE,
                                                          "_MANIFEST.json")))  # fmt: skip
    assert set(manifest["outputs"]) == {"levels.parquet", "deltas.jsonl.zst", "gaps.json",
                                        "closing_book.json.zst"}  # fmt: skip
    assert len(manifest["inputs"]) == 9
    assert manifest["previous"] is None
    status = orjson.loads(await store.get(status_key("merge", "binance", DATE)))
    assert status["merged"] == ["BTCUSDT"]
    assert status["failed"] == []


async def test_rerun_is_a_no_op_and_force_rebuilds_byte_identical() -> None:
    store, market = MemoryStore(), make_market()
    await record(store, market, "eu")
    await record(store, market, "us", skip={50})
    await merge_day(store, "binance", DATE)
    first = await outputs(store)
    store.calls.clear()

    again = await merge_day(store, "binance", DATE)
    puts = [key for op, key in store.calls if op == "put" and key.startswith("canonical/")]
    forced = await merge_day(store, "binance", DATE, force=True)

    assert again.symbols["BTCUSDT"].state == "done"
    assert puts == []
    assert again.symbols["BTCUSDT"].events == forced.symbols["BTCUSDT"].events > 0
    assert forced.symbols["BTCUSDT"].state == "merged"
    assert await outputs(store) == first


async def test_a_late_raw_object_makes_the_day_stale() -> None:
    store, market = MemoryStore(), make_market()
    await record(store, market, "eu")
    await merge_day(store, "binance", DATE)

    await record(store, market, "us", chunk=200)  # a late upload
    result = await merge_day(store, "binance", DATE)

    assert result.symbols["BTCUSDT"].state == "merged"
    gaps = orjson.loads(await store.get(canonical_key("binance", "depth", "BTCUSDT", DATE,
                                                      "gaps.json")))  # fmt: skip
    assert set(gaps["sources"]) == {"eu.c1", "us.c1"}


async def test_a_crash_mid_merge_leaves_no_manifest_and_the_rerun_redoes_the_day() -> None:
    store, market = MemoryStore(), make_market()
    await record(store, market, "eu")
    await merge_day(store, "binance", DATE)
    await record(store, market, "us", chunk=200)

    async def crashing(store: Store, keys: list[str], **kw: object) -> object:
        stitched = await load_and_stitch(store, keys, **kw)  # type: ignore[arg-type]

        class Crash:
            closing = None

            def __iter__(self):  # type: ignore[no-untyped-def]
                for n, item in enumerate(stitched):
                    if n == 40:
                        raise OSError("disk full")
                    yield item

        return Crash()

    crashed = await merge_day(store, "binance", DATE, pipeline=crashing)  # type: ignore[arg-type]
    manifest = canonical_key("binance", "depth", "BTCUSDT", DATE, "_MANIFEST.json")
    assert crashed.symbols["BTCUSDT"].state == "failed"
    assert "disk full" in (crashed.symbols["BTCUSDT"].error or "")
    assert await store.head(manifest) is None

    redone = await merge_day(store, "binance", DATE)

    assert redone.symbols["BTCUSDT"].state == "merged"
    assert await store.head(manifest) is not None
    assert await canonical_book(store) == market.books[-1]


async def test_one_failing_symbol_does_not_stop_the_others() -> None:
    store = MemoryStore()
    for symbol in ("AAAUSDT", "BBBUSDT"):
        await record(store, make_market(symbol, n=20), "eu")
    await store.put(f"raw/binance/depth/BBBUSDT/{DATE}/eu.c1/000000000-5-6.jsonl.zst", b"junk")

    async def picky(store: Store, keys: list[str], **kw: object) -> object:
        if any("BBBUSDT" in k for k in keys):
            raise RuntimeError("engine bug")
        return await load_and_stitch(store, keys, **kw)  # type: ignore[arg-type]

    result = await merge_day(store, "binance", DATE, pipeline=picky)  # type: ignore[arg-type]

    assert result.failed == ["BBBUSDT"]
    assert result.symbols["AAAUSDT"].state == "merged"
    assert exit_code([result], fail_on_gap=False) == 1


async def test_delete_raw_only_after_a_clean_audit() -> None:
    store = MemoryStore()
    clean_keys = await record(store, make_market("AAAUSDT", n=40), "eu", snaps=(2, 30))
    dirty_keys = await record(store, make_market("BBBUSDT", n=40), "eu", snaps=(2, 30))

    async def audit_says(store: Store, keys: list[str], *, log: GapLog, **kw: object) -> object:
        stitched = await load_and_stitch(store, keys, log=log, **kw)  # type: ignore[arg-type]
        if "BBBUSDT" in keys[0]:
            log.audit.mismatched += 1
        return stitched

    result = await merge_day(store, "binance", DATE, delete_raw=True, pipeline=audit_says)  # type: ignore[arg-type]

    assert result.symbols["AAAUSDT"].raw_deleted == len(clean_keys)
    assert [await store.head(k) for k in clean_keys] == [None] * len(clean_keys)
    assert all([await store.head(k) for k in dirty_keys])
    assert result.symbols["BBBUSDT"].audit_mismatched == 1


async def test_shards_split_symbols_disjointly_and_completely() -> None:
    store = MemoryStore()
    symbols = [f"S{i}USDT" for i in range(12)]
    for symbol in symbols:
        await record(store, make_market(symbol, n=3), "eu", snaps=())

    shards = [set(await plan(store, "binance", DATE, shard=(i, 3))) for i in range(3)]

    assert sorted(s for shard in shards for s in shard) == sorted(symbols)
    assert sum(len(s) for s in shards) == len(symbols)
    assert all(shard_of(s, 3) == i for i, shard in enumerate(shards) for s in shard)
    assert set(await plan(store, "binance", DATE, symbols=["S1USDT"])) == {"S1USDT"}


async def test_the_next_day_starts_from_the_closing_book_and_goes_stale_with_it() -> None:
    store = MemoryStore()
    day1 = make_market(n=60, seed=1)
    await record(store, day1, "eu")
    # Day 2 continues day 1's ids with no snapshot of its own.
    cont = make_market(n=90, seed=1)
    cont.frames, cont.ids, cont.books = cont.frames[60:], cont.ids[60:], cont.books[60:]
    await record(store, cont, "eu", snaps=(), day=1)
    await merge_day(store, "binance", DATE)

    result = await merge_day(store, "binance", DATE + dt.timedelta(days=1))

    assert result.symbols["BTCUSDT"].state == "merged"
    assert await canonical_book(store, date=DATE + dt.timedelta(days=1)) == cont.books[-1]
    await record(store, day1, "us", chunk=200)  # day 1 changes: day 2 is stale
    await merge_day(store, "binance", DATE)
    again = await merge_day(store, "binance", DATE + dt.timedelta(days=1))
    assert again.symbols["BTCUSDT"].state == "merged"
    manifest = orjson.loads(await store.get(canonical_key(
        "binance", "depth", "BTCUSDT", DATE + dt.timedelta(days=1), "_MANIFEST.json")))  # fmt: skip
    assert manifest["previous"]["key"].endswith(f"{DATE}/_MANIFEST.json")


def test_cli_exit_codes_status_and_metrics(tmp_path: Path) -> None:
    market = make_market()
    store = LocalStore(str(tmp_path / "store"))
    asyncio.run(record(store, market, "eu", skip=set(range(40, 50)), snaps=(2, 60)))
    asyncio.run(record(store, market, "us", skip=set(range(38, 52)), snaps=(2,)))
    metrics = tmp_path / "merge.prom"
    base = ["merge", "--store", str(tmp_path / "store"), "--date", str(DATE)]

    assert main([*base, "--fail-on-gap", "--metrics-file", str(metrics)]) == 3
    assert main(base) == 0
    assert main(["merge", "--store", str(tmp_path), "--date", "2024-13-01"]) == 2
    assert main([*base, "--shard", "3/2"]) == 2
    assert main([*base, "--from", "2024-05-02"]) == 2

    text = metrics.read_text()
    assert 'booktape_merge_unrecoverable_gaps{exchange="binance",symbol="BTCUSDT"' in text
    assert "booktape_merge_last_success_timestamp_seconds " in text
    gaps = orjson.loads(
        (tmp_path / "store" / canonical_key("binance", "depth", "BTCUSDT", DATE,
                                            "gaps.json")).read_bytes()
    )  # fmt: skip
    (gap,) = gaps["unrecoverable"]
    assert gap["from_update_id"] <= market.ids[40][0]
    assert market.ids[49][1] <= gap["to_update_id"]
    assert gap["to_update_id"] == market.ids[60][1]


def test_metrics_keep_the_last_success_time_after_a_failed_run(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    ok = DayResult("binance", DATE, {"X": SymbolResult("X", "merged", events=5)})
    bad = DayResult("binance", DATE, {"X": SymbolResult("X", "failed", error="boom")})

    write_metrics(path, [ok])
    first = path.read_text()
    write_metrics(path, [bad])

    stamp = [ln for ln in first.splitlines() if ln.startswith("booktape_merge_last_success")]
    assert stamp
    assert stamp[0] in path.read_text()
    assert 'booktape_merge_events{exchange="binance",symbol="X",date="2024-05-01"} 5' in first
    assert not list(tmp_path.glob(".*tmp"))


async def test_a_late_object_after_delete_raw_is_kept_and_the_day_left_alone() -> None:
    store, market = MemoryStore(), make_market()
    keys = await record(store, market, "eu", snaps=(2, 100))
    merged = await merge_day(store, "binance", DATE, delete_raw=True)
    assert merged.symbols["BTCUSDT"].raw_deleted == len(keys)
    before = await outputs(store)
    late = await record(store, market, "us", snaps=(), chunk=200)  # a region's spool, late

    again = await merge_day(store, "binance", DATE, delete_raw=True)
    forced = await merge_day(store, "binance", DATE, force=True)

    assert again.symbols["BTCUSDT"].state == "late"
    assert await outputs(store) == before  # not rebuilt from the late object alone
    assert await canonical_book(store) == market.books[-1]
    assert [await store.head(k) is not None for k in late] == [True] * len(late)
    assert forced.symbols["BTCUSDT"].state == "failed"
    assert "deleted" in (forced.symbols["BTCUSDT"].error or "")
    status = orjson.loads(await store.get(status_key("merge", "binance", DATE)))
    assert status["failed"] == ["BTCUSDT"]


async def test_each_shard_writes_its_own_status_summary() -> None:
    store = MemoryStore()
    symbols = [f"S{i}USDT" for i in range(6)]
    for symbol in symbols:
        await record(store, make_market(symbol, n=10), "eu")

    for index in range(2):
        await merge_day(store, "binance", DATE, shard=(index, 2))

    merged: list[str] = []
    for index in range(2):
        status = orjson.loads(await store.get(status_key("merge", "binance", DATE, (index, 2))))
        assert status["shard"] == f"{index}/2"
        merged += status["merged"]
    assert sorted(merged) == sorted(symbols)
    assert await store.head(status_key("merge", "binance", DATE)) is None


async def test_a_snapshot_at_the_final_update_id_is_audited() -> None:
    store, market = MemoryStore(), make_market(n=60)
    await record(store, market, "eu", snaps=(2, 59))  # the last one at the day's last id

    await merge_day(store, "binance", DATE)

    gaps = orjson.loads(await store.get(canonical_key("binance", "depth", "BTCUSDT", DATE,
                                                      "gaps.json")))  # fmt: skip
    assert gaps["audit"]["checked"] == 1
    assert gaps["audit"]["matched"] == 1


async def test_progress_reports_every_chunk_of_every_symbol_and_the_bar_draws_it() -> None:
    store = MemoryStore()
    keys = {
        s: await record(store, make_market(s, n=60), "eu", chunk=10) for s in ("AUSDT", "BUSDT")
    }
    seen: list[tuple[str, int, int]] = []

    await merge_day(store, "binance", DATE, progress=lambda *a: seen.append(a))

    for n, symbol in enumerate(sorted(keys), 1):
        mine = [(d, t) for label, d, t in seen if symbol in label]
        assert mine[-1] == (len(keys[symbol]), len(keys[symbol]))
        assert all(f"({n}/2 symbols)" in label for label, _, _ in seen if symbol in label)
    out = io.StringIO()
    bar = ProgressBar(out, min_interval_s=0.0)
    bar.update("2024-05-01 AUSDT (1/2 symbols)", 3, 6)
    bar.close()
    assert "[" in out.getvalue()
    assert " 50%  2024-05-01 AUSDT (1/2 symbols)  3/6 chunks" in out.getvalue()
    assert out.getvalue().endswith("\r\x1b[K")
