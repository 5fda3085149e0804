"""The day job: plan one exchange/day from the listing, merge each symbol, commit, report.

Per symbol: a day whose ``_MANIFEST.json`` names exactly the raw objects listed now (keys
and ETags) and the same previous-day manifest is done, and left alone (unless ``force``).
Otherwise: the old manifest is deleted first, then load -> stitch -> write the outputs,
and the new manifest is written LAST, so a crash at any point leaves no manifest and the
next run redoes the day. The day starts from the previous day's closing book when that
day is done (the stitcher uses it only if the recording continues across midnight).
``delete_raw`` deletes a symbol-day's raw objects only after its manifest is committed
and its audit found no mismatch. One symbol failing does not stop the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from booktape import __version__
from booktape.binance import SPECS, Market
from booktape.errors import ConfigError, KeyLayoutError
from booktape.keys import canonical_key, format_date, parse_raw_key, raw_prefix, status_key
from booktape.stores import Store
from merger.gaps import build_report, encode_report
from merger.load import load_symbol_day
from merger.model import BookImage, CanonicalItem, GapLog
from merger.stitch import stitch
from merger.writer import (
    CLOSING_FILE,
    DELTAS_FILE,
    GAPS_FILE,
    LEVELS_FILE,
    MANIFEST_FILE,
    DayWriter,
    build_manifest,
    decode_closing,
    file_digest,
    manifest_inputs,
)

log = logging.getLogger("booktape.merger")

CHANNEL: Final = "depth"
OUTPUT_ORDER: Final = (LEVELS_FILE, DELTAS_FILE, CLOSING_FILE, GAPS_FILE)


class Stitched(Protocol):
    """The canonical items of a symbol-day; ``closing`` is the book once iterated."""

    closing: BookImage | None

    def __iter__(self) -> Iterator[CanonicalItem]: ...


class Pipeline(Protocol):
    """Raw keys of a symbol-day -> its canonical items (the merger's engine)."""

    async def __call__(
        self,
        store: Store,
        keys: list[str],
        *,
        market: Market,
        log: GapLog,
        primary: str | None,
        start: BookImage | None,
    ) -> Stitched: ...


async def load_and_stitch(
    store: Store,
    keys: list[str],
    *,
    market: Market,
    log: GapLog,
    primary: str | None,
    start: BookImage | None,
) -> Stitched:
    """The merger's engine: merger.load then merger.stitch."""
    loaded = await load_symbol_day(store, keys, market=market, log=log)
    return stitch(loaded, market=market, log=log, primary=primary, start=start)


@dataclass(slots=True)
class SymbolResult:
    symbol: str
    state: str  # "merged", "done" (already merged, left alone) or "failed"
    events: int = 0
    unrecoverable: int = 0
    audit_mismatched: int = 0
    raw_deleted: int = 0
    error: str | None = None


@dataclass(slots=True)
class DayResult:
    exchange: str
    date: dt.date
    symbols: dict[str, SymbolResult] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def failed(self) -> list[str]:
        return sorted(s for s, r in self.symbols.items() if r.state == "failed")

    @property
    def unrecoverable(self) -> int:
        return sum(r.unrecoverable for r in self.symbols.values())

    def summary(self) -> dict[str, Any]:
        """The run summary stored at status/merge/{exchange}/{date}.json."""
        by_state = {
            state: sorted(s for s, r in self.symbols.items() if r.state == state)
            for state in ("merged", "done", "failed")
        }
        return {
            "exchange": self.exchange,
            "date": format_date(self.date),
            "merged": by_state["merged"],
            "skipped": by_state["done"],
            "failed": by_state["failed"],
            "events": sum(r.events for r in self.symbols.values()),
            "unrecoverable_gaps": self.unrecoverable,
            "duration_s": round(self.duration_s, 3),
            "finished_ns": time.time_ns(),
            "merger_version": __version__,
            "symbols": {
                s: {
                    "state": r.state,
                    "events": r.events,
                    "unrecoverable_gaps": r.unrecoverable,
                    "audit_mismatched": r.audit_mismatched,
                    "raw_deleted": r.raw_deleted,
                    "error": r.error,
                }
                for s, r in sorted(self.symbols.items())
            },
        }


def market_of(exchange: str) -> Market:
    """The Binance market recorded under ``exchange`` (binance, binance-usdm, ...)."""
    for market, spec in SPECS.items():
        if spec.exchange == exchange:
            return market
    raise ConfigError(f"merge supports the Binance depth exchanges only, not {exchange!r}")


def shard_of(symbol: str, n: int) -> int:
    """The shard (0..n-1) a symbol belongs to: stable across runs, hosts and versions."""
    return int(hashlib.sha256(symbol.encode()).hexdigest()[:8], 16) % n


async def plan(
    store: Store,
    exchange: str,
    date: dt.date,
    *,
    symbols: Iterable[str] | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """symbol -> sorted (raw key, ETag) of that symbol-day, for the selected symbols."""
    wanted = set(symbols) if symbols is not None else None
    out: dict[str, list[tuple[str, str]]] = {}
    async for info in store.list(raw_prefix(exchange, CHANNEL)):
        try:
            key = parse_raw_key(info.key)
        except KeyLayoutError as exc:
            log.warning("skipping an object off the raw layout", extra={"error": str(exc)})
            continue
        if key.date != date or (wanted is not None and key.symbol not in wanted):
            continue
        if shard is not None and shard_of(key.symbol, shard[1]) != shard[0]:
            continue
        out.setdefault(key.symbol, []).append((info.key, info.etag))
    return {s: sorted(keys) for s, keys in sorted(out.items())}


async def _get_json(store: Store, key: str) -> tuple[dict[str, Any], str] | None:
    """(document, sha256 of its bytes) of a JSON object, or None if there is none."""
    if await store.head(key) is None:
        return None
    data = await store.get(key)
    return orjson.loads(data), hashlib.sha256(data).hexdigest()


async def _previous(
    store: Store, exchange: str, symbol: str, date: dt.date
) -> tuple[dict[str, str] | None, BookImage | None]:
    """The previous day's manifest reference and closing book, if that day is done."""
    prev_date = date - dt.timedelta(days=1)
    key = canonical_key(exchange, CHANNEL, symbol, prev_date, MANIFEST_FILE)
    found = await _get_json(store, key)
    if found is None:
        return None, None
    manifest, sha = found
    start = None
    if CLOSING_FILE in manifest.get("outputs", {}):
        closing_key = canonical_key(exchange, CHANNEL, symbol, prev_date, CLOSING_FILE)
        start = decode_closing(await store.get(closing_key))
    return {"key": key, "sha256": sha}, start


def _counts(manifest: dict[str, Any]) -> tuple[int, int, int]:
    counts = manifest.get("counts", {})
    return (
        int(counts.get("events", 0)),
        int(counts.get("unrecoverable_gaps", 0)),
        int(counts.get("audit_mismatched", 0)),
    )


async def merge_symbol(
    store: Store,
    exchange: str,
    symbol: str,
    date: dt.date,
    inputs: list[tuple[str, str]],
    *,
    primary: str | None = None,
    force: bool = False,
    delete_raw: bool = False,
    previous: bool = True,
    pipeline: Pipeline = load_and_stitch,
) -> SymbolResult:
    """Merge one symbol-day (or leave it alone when it is done and not stale)."""
    date_text = format_date(date)
    manifest_key = canonical_key(exchange, CHANNEL, symbol, date, MANIFEST_FILE)
    prev_ref, start = await _previous(store, exchange, symbol, date) if previous else (None, None)
    existing = await _get_json(store, manifest_key)
    if existing is not None and not force:
        manifest = existing[0]
        if manifest_inputs(manifest) == inputs and manifest.get("previous") == prev_ref:
            events, gaps, mismatched = _counts(manifest)
            return SymbolResult(symbol, "done", events, gaps, mismatched)
    if existing is not None:
        await store.delete(manifest_key)  # from here on the day is not done
    market = market_of(exchange)
    gap_log = GapLog()
    items = await pipeline(
        store, [k for k, _ in inputs], market=market, log=gap_log, primary=primary, start=start
    )
    with tempfile.TemporaryDirectory(prefix="booktape-merge-") as tmp:
        writer = DayWriter(
            Path(tmp), exchange=exchange, channel=CHANNEL, symbol=symbol, date=date_text,
            market=market,
        )  # fmt: skip
        try:
            await asyncio.to_thread(writer.add_all, items)
        except BaseException:
            writer.abort()
            raise
        written = await asyncio.to_thread(writer.close, items.closing)
        report = build_report(gap_log, exchange=exchange, symbol=symbol, date=date_text)
        gaps_path = Path(tmp) / GAPS_FILE
        gaps_path.write_bytes(encode_report(report))
        files = {**written.files, GAPS_FILE: gaps_path}
        outputs: dict[str, tuple[int, str]] = {}
        for name in OUTPUT_ORDER:
            key = canonical_key(exchange, CHANNEL, symbol, date, name)
            if name not in files:
                await store.delete(key)  # a leftover of an earlier merge
                continue
            outputs[name] = file_digest(files[name])
            await store.put_file(key, files[name])
    counts = {
        "events": written.events,
        "images": written.images,
        "rows": written.rows,
        "unrecoverable_gaps": len(gap_log.unrecoverable),
        "audit_mismatched": gap_log.audit.mismatched,
        "corrupt": len(gap_log.corrupt),
    }
    manifest_bytes = build_manifest(
        exchange=exchange, channel=CHANNEL, symbol=symbol, date=date_text, outputs=outputs,
        inputs=inputs, counts=counts, previous=prev_ref, version=__version__,
    )  # fmt: skip
    await store.put(manifest_key, manifest_bytes)
    result = SymbolResult(
        symbol, "merged", written.events, len(gap_log.unrecoverable), gap_log.audit.mismatched
    )
    if delete_raw and gap_log.audit.mismatched == 0:
        for key, _ in inputs:
            await store.delete(key)
        result.raw_deleted = len(inputs)
    elif delete_raw:
        log.warning(
            "raw objects kept: the audit found mismatches",
            extra={"symbol": symbol, "date": date_text, "mismatched": result.audit_mismatched},
        )
    return result


async def merge_day(
    store: Store,
    exchange: str,
    date: dt.date,
    *,
    symbols: Iterable[str] | None = None,
    primary: str | None = None,
    shard: tuple[int, int] | None = None,
    force: bool = False,
    delete_raw: bool = False,
    previous: bool = True,
    pipeline: Pipeline = load_and_stitch,
) -> DayResult:
    """Merge every selected symbol of one exchange/day; write the status summary."""
    market_of(exchange)
    started = time.monotonic()
    result = DayResult(exchange, date)
    planned = await plan(store, exchange, date, symbols=symbols, shard=shard)
    context = {"exchange": exchange, "date": format_date(date)}
    log.info("merge planned", extra={**context, "symbols": len(planned)})
    for symbol, inputs in planned.items():
        t0 = time.monotonic()
        try:
            outcome = await merge_symbol(
                store, exchange, symbol, date, inputs, primary=primary, force=force,
                delete_raw=delete_raw, previous=previous, pipeline=pipeline,
            )  # fmt: skip
        except Exception as exc:  # one symbol's failure is reported, not fatal
            log.exception("symbol failed", extra={**context, "symbol": symbol})
            outcome = SymbolResult(symbol, "failed", error=f"{type(exc).__name__}: {exc}")
        result.symbols[symbol] = outcome
        log.info(
            "symbol " + outcome.state,
            extra={
                **context,
                "symbol": symbol,
                "events": outcome.events,
                "unrecoverable_gaps": outcome.unrecoverable,
                "seconds": round(time.monotonic() - t0, 3),
            },
        )
    result.duration_s = time.monotonic() - started
    summary = orjson.dumps(result.summary(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    await store.put(status_key("merge", exchange, date), summary + b"\n")
    return result
