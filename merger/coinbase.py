"""The Coinbase day job: per product (and per price currency) and day, one pick per slot.

``booktape merge --exchange coinbase`` calls :func:`merge_coinbase_day`. For each product
recorded under ``raw/coinbase/book/`` and each currency under ``raw/coinbase/prices/``:

1. plan: the day's raw objects of every source, plus the objects of the next day that
   start in its first minute (a response to one of the day's last slots may arrive after
   midnight); their (key, ETag) pairs are the manifest's inputs. The product counts as
   recorded the day before (its grid then starts at midnight) when raw objects of that
   day are listed or that day is merged;
2. pass 1 (merger.coinbase_slots): read the objects one at a time, per source in key
   order; a corrupt object is reported in gaps.json ``corrupt`` and skipped, a truncated
   one keeps its whole records and is reported too; pick per slot the usable response
   nearest the slot and list the expected slots no source has (rules in that module);
3. pass 2: read the chosen responses again and write ``snapshots.parquet`` /
   ``prices.parquet`` (merger.coinbase_write), then ``gaps.json``, then ``_MANIFEST.json``
   LAST, so a day without a manifest is not done.

A done day (its manifest names exactly the objects listed now, and it was merged after
the day was over or the day is still not over) is left alone unless ``force``; ``force``
rebuilds it byte for byte. A day merged while it was still being recorded ends at the
last recorded slot; once the day is over it is merged again with the full grid, so a
recording that stopped shows its missing afternoon. One symbol failing does not stop the
others. The run summary goes to ``status/merge/coinbase/{date}.json`` as for Binance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson

from booktape import __version__
from booktape.canonical import MANIFEST_FILE
from booktape.codec import DataRecord, Snap
from booktape.coinbase import PricePoint, is_crossed, parse_book
from booktape.errors import CorruptObjectError, FrameError, KeyLayoutError
from booktape.keys import (
    NS_PER_DAY,
    RawKey,
    canonical_key,
    format_date,
    parse_raw_key,
    raw_prefix,
    status_key,
)
from booktape.objects import read_object
from booktape.stores import Store
from merger.coinbase_slots import Candidate, Selection, SlotLog, price_of
from merger.coinbase_write import (
    BATCH_ROWS,
    PRICES_FILE,
    SNAPSHOTS_FILE,
    Rows,
    build_gaps,
    price_rows,
    snapshot_rows,
)
from merger.day import DayResult, SymbolResult, shard_of
from merger.gaps import encode_report
from merger.load import header_mismatch
from merger.writer import GAPS_FILE, build_manifest, file_digest, manifest_inputs

log = logging.getLogger("booktape.merger")

EXCHANGE: Final = "coinbase"
BOOK: Final = "book"
PRICES: Final = "prices"
NEXT_DAY_WINDOW_MS: Final = 60_000  # next-day objects starting this early are read too
_EPOCH: Final = dt.date(1970, 1, 1)

Inputs = list[tuple[str, str]]


def day_start_ns(date: dt.date) -> int:
    return (date - _EPOCH).days * NS_PER_DAY


def result_name(channel: str, symbol: str) -> str:
    """How a symbol-day is named in DayResult: ``BTC-USD`` (book), ``prices/BTC``."""
    return symbol if channel == BOOK else f"{PRICES}/{symbol}"


async def plan_channel(
    store: Store,
    channel: str,
    date: dt.date,
    *,
    symbols: Iterable[str] | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[dict[str, Inputs], set[str]]:
    """(symbol -> sorted (key, ETag) inputs of the day, symbols recorded the day before)."""
    wanted = set(symbols) if symbols is not None else None
    before, after = date - dt.timedelta(days=1), date + dt.timedelta(days=1)
    found: dict[str, Inputs] = {}
    late: dict[str, Inputs] = {}
    recorded_before: set[str] = set()
    async for info in store.list(raw_prefix(EXCHANGE, channel)):
        try:
            key = parse_raw_key(info.key)
        except KeyLayoutError as exc:
            log.warning("skipping an object off the raw layout", extra={"error": str(exc)})
            continue
        if wanted is not None and key.symbol not in wanted:
            continue
        if shard is not None and shard_of(key.symbol, shard[1]) != shard[0]:
            continue
        if key.date == date:
            found.setdefault(key.symbol, []).append((info.key, info.etag))
        elif key.date == after and key.time_ms < NEXT_DAY_WINDOW_MS:
            late.setdefault(key.symbol, []).append((info.key, info.etag))
        elif key.date == before:
            recorded_before.add(key.symbol)
    planned = {s: sorted(found[s] + late.get(s, [])) for s in sorted(found)}
    return planned, recorded_before


async def _get_json(store: Store, key: str) -> dict[str, Any] | None:
    if await store.head(key) is None:
        return None
    doc = orjson.loads(await store.get(key))
    return doc if isinstance(doc, dict) else None


async def _pass1(
    store: Store, channel: str, symbol: str, date: dt.date, inputs: Inputs
) -> tuple[SlotLog, list[dict[str, str]]]:
    """Read every input once into a SlotLog; report corrupt and truncated objects."""
    slot_log = SlotLog(channel, symbol, day_start_ns(date))
    corrupt: list[dict[str, str]] = []
    by_source: dict[str, list[tuple[str, RawKey]]] = {}
    for key, _ in inputs:
        raw_key = parse_raw_key(key)
        by_source.setdefault(raw_key.source, []).append((key, raw_key))
    digests: set[str] = set()
    for source in sorted(by_source):
        for key, raw_key in sorted(by_source[source], key=lambda pair: pair[0]):
            data = await store.get(key)
            digest = hashlib.sha256(data).hexdigest()
            if digest in digests:
                continue  # the same bytes under another key: read once
            digests.add(digest)
            try:
                result = read_object(data, key)
            except CorruptObjectError as exc:
                corrupt.append({"key": key, "error": exc.reason})
                continue
            if (mismatch := header_mismatch(result.header, raw_key)) is not None:
                corrupt.append({"key": key, "error": mismatch})
                continue
            if result.truncated:
                corrupt.append({"key": key, "error": f"truncated: {result.error}"})
            slot_log.add_chunk(key, source, result.header.extra, result.records)
    return slot_log, corrupt


class _Refetch:
    """Pass 2: the chosen records, read again (one decoded object kept per source)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: dict[str, tuple[str, list[DataRecord]]] = {}

    async def snap(self, pick: Candidate) -> Snap:
        held = self._held.get(pick.source)
        if held is None or held[0] != pick.key:
            result = read_object(await self.store.get(pick.key), pick.key)
            held = (pick.key, result.records)
            self._held[pick.source] = held
        record = held[1][pick.index]
        assert isinstance(record, Snap), "a pick always names a snap record"
        return record


class RejectedPick(Exception):
    """A chosen response whose body fails the full parse: drop it and choose again."""

    def __init__(self, pick: Candidate) -> None:
        super().__init__(pick.key)
        self.pick = pick


async def _pass2(store: Store, channel: str, symbol: str, sel: Selection, path: Path) -> int:
    """Write the chosen responses to ``path``; return the crossed books among them.

    Raises RejectedPick when a chosen body does not parse in full.
    """
    rows: Rows = snapshot_rows(path) if channel == BOOK else price_rows(path)
    refetch, crossed = _Refetch(store), 0
    try:
        for pick in sel.picks:
            record = await refetch.snap(pick)
            try:
                parsed = (parse_book(record.raw, pick.level) if channel == BOOK
                          else price_of(record.raw, symbol))  # fmt: skip
            except FrameError:
                raise RejectedPick(pick) from None
            if isinstance(parsed, PricePoint):
                rows.add_price(pick, parsed.amount, parsed.currency)
            else:
                rows.add_book(pick, parsed)
                crossed += is_crossed(parsed)
            if rows.pending() >= BATCH_ROWS:
                await asyncio.to_thread(rows.flush)
    finally:
        await asyncio.to_thread(rows.close)
    return crossed


async def merge_symbol(
    store: Store,
    channel: str,
    symbol: str,
    date: dt.date,
    inputs: Inputs,
    *,
    started_before: bool,
    force: bool = False,
    now_ns: int,
) -> SymbolResult:
    """Merge one product-day (channel ``book``) or currency-day (``prices``)."""
    name = result_name(channel, symbol)
    day_over = now_ns >= day_start_ns(date) + NS_PER_DAY
    manifest_key = canonical_key(EXCHANGE, channel, symbol, date, MANIFEST_FILE)
    existing = await _get_json(store, manifest_key)
    if existing is not None and not force:
        counts = existing.get("counts", {})
        if manifest_inputs(existing) == inputs and (counts.get("day_over") == 1 or not day_over):
            return SymbolResult(name, "done", int(counts.get("snapshots", 0)),
                                int(counts.get("missing_slots", 0)),
                                int(counts.get("audit_mismatched", 0)))  # fmt: skip
    if existing is not None:
        await store.delete(manifest_key)  # from here on the day is not done
    slot_log, corrupt = await _pass1(store, channel, symbol, date, inputs)
    data_file = SNAPSHOTS_FILE if channel == BOOK else PRICES_FILE
    with tempfile.TemporaryDirectory(prefix="booktape-coinbase-") as tmp:
        for _ in range(len(slot_log.candidates) + 1):  # each round drops one candidate
            sel = slot_log.select(started_before=started_before, day_over=day_over)
            try:
                crossed = await _pass2(store, channel, symbol, sel, Path(tmp) / data_file)
                break
            except RejectedPick as exc:
                slot_log.reject(exc.pick)
        else:  # pragma: no cover - without candidates nothing can be rejected
            raise RuntimeError("no selection survived the full parse")
        report = build_gaps(slot_log, sel, corrupt, date=date, crossed=crossed,
                            started_before=started_before, day_over=day_over)  # fmt: skip
        (Path(tmp) / GAPS_FILE).write_bytes(encode_report(report))
        outputs: dict[str, tuple[int, str]] = {}
        for file_name in (data_file, GAPS_FILE):
            outputs[file_name] = file_digest(Path(tmp) / file_name)
            key = canonical_key(EXCHANGE, channel, symbol, date, file_name)
            await store.put_file(key, Path(tmp) / file_name)
    counts = {
        "snapshots": len(sel.picks),
        "expected_slots": sel.expected,
        "missing_slots": sel.missing_slots,
        "audit_mismatched": sel.audit_mismatched,
        "corrupt": len(corrupt),
        "day_over": int(day_over),
    }
    manifest = build_manifest(
        exchange=EXCHANGE, channel=channel, symbol=symbol, date=format_date(date),
        outputs=outputs, inputs=inputs, counts=counts, previous=None, version=__version__,
    )  # fmt: skip
    await store.put(manifest_key, manifest)
    return SymbolResult(name, "merged", len(sel.picks), sel.missing_slots, sel.audit_mismatched)


async def _merged_before(store: Store, channel: str, symbol: str, date: dt.date) -> bool:
    """True when the day before is merged (its raw objects may be gone by now)."""
    prev = date - dt.timedelta(days=1)
    return (
        await store.head(canonical_key(EXCHANGE, channel, symbol, prev, MANIFEST_FILE)) is not None
    )


def _currencies(products: Iterable[str]) -> set[str]:
    """The price currencies a product selection implies: BTC-USD -> BTC; BTC -> BTC."""
    return {p.split("-", 1)[0] for p in products}


async def merge_coinbase_day(
    store: Store,
    date: dt.date,
    *,
    products: Iterable[str] | None = None,
    shard: tuple[int, int] | None = None,
    force: bool = False,
    now_ns: int | None = None,
) -> DayResult:
    """Merge the selected Coinbase products and price currencies of one day.

    ``products`` selects books by product id (``BTC-USD``) and price points by currency
    (``BTC``, or implied by a product: ``BTC-USD`` selects BTC too); None selects all.
    ``now_ns`` (default: the wall clock) decides whether the day is over.
    """
    now = time.time_ns() if now_ns is None else now_ns
    started = time.monotonic()
    chosen = list(products) if products is not None else None
    result = DayResult(EXCHANGE, date)
    context = {"exchange": EXCHANGE, "date": format_date(date)}
    for channel in (BOOK, PRICES):
        names = None if chosen is None else (chosen if channel == BOOK else _currencies(chosen))
        planned, recorded_before = await plan_channel(
            store, channel, date, symbols=names, shard=shard
        )
        log.info("merge planned", extra={**context, "channel": channel, "symbols": len(planned)})
        for symbol, inputs in planned.items():
            t0, name = time.monotonic(), result_name(channel, symbol)
            try:
                before = symbol in recorded_before or await _merged_before(
                    store, channel, symbol, date
                )
                outcome = await merge_symbol(
                    store, channel, symbol, date, inputs, started_before=before, force=force,
                    now_ns=now,
                )  # fmt: skip
            except Exception as exc:  # one symbol's failure is reported, not fatal
                log.exception("symbol failed", extra={**context, "symbol": name})
                outcome = SymbolResult(name, "failed", error=f"{type(exc).__name__}: {exc}")
            result.symbols[name] = outcome
            log.info(
                "symbol " + outcome.state,
                extra={**context, "symbol": name, "snapshots": outcome.events,
                       "missing_slots": outcome.unrecoverable,
                       "seconds": round(time.monotonic() - t0, 3)},
            )  # fmt: skip
    result.duration_s = time.monotonic() - started
    summary = orjson.dumps(result.summary(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    await store.put(status_key("merge", EXCHANGE, date), summary + b"\n")
    return result
