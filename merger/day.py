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
import concurrent.futures
import datetime as dt
import functools
import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from booktape import __version__
from booktape.binance import SPECS, Market
from booktape.canonical import LEVELS_FILE, MANIFEST_FILE
from booktape.errors import ConfigError, KeyLayoutError
from booktape.gctune import long_lived_frozen
from booktape.keys import canonical_key, format_date, parse_raw_key, raw_prefix, status_key
from booktape.stores import Store
from merger.feed import Feed
from merger.gaps import build_report, encode_report
from merger.load import ChunkReader, plan_sources
from merger.model import BookImage, CanonicalItem, GapLog
from merger.stitch import stitch
from merger.writer import (
    CLOSING_FILE,
    DELTAS_FILE,
    GAPS_FILE,
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

    @property
    def closing(self) -> BookImage | None: ...

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
        progress: Callable[[int, int], None] | None = None,
    ) -> Stitched: ...


class LoopFetcher:
    """Gets objects through the event loop for a stitcher iterated in a worker thread.

    Keeps up to ``depth`` fetches in flight ahead of use, so a remote store's latency
    overlaps the stitching.
    """

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, depth: int = 8) -> None:
        self._store = store
        self._loop = loop
        self._depth = depth
        self._futures: dict[str, concurrent.futures.Future[bytes]] = {}

    def _submit(self, key: str) -> concurrent.futures.Future[bytes]:
        return asyncio.run_coroutine_threadsafe(self._store.get(key), self._loop)

    def prefetch(self, key: str) -> None:
        if key not in self._futures and len(self._futures) < self._depth:
            self._futures[key] = self._submit(key)

    def get(self, key: str) -> bytes:
        running = asyncio._get_running_loop()
        if running is self._loop:
            raise RuntimeError("iterate a streaming stitcher in a worker thread, not the loop")
        future = self._futures.pop(key, None) or self._submit(key)
        return future.result()

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()


class StreamingDay:
    """The canonical items of a symbol-day, streamed from the store chunk by chunk."""

    def __init__(self, stitcher: Stitched, fetcher: LoopFetcher) -> None:
        self._stitcher = stitcher
        self._fetcher = fetcher

    @property
    def closing(self) -> BookImage | None:
        return self._stitcher.closing

    def __iter__(self) -> Iterator[CanonicalItem]:
        try:
            yield from self._stitcher
        finally:
            self._fetcher.close()


async def load_and_stitch(
    store: Store,
    keys: list[str],
    *,
    market: Market,
    log: GapLog,
    primary: str | None,
    start: BookImage | None,
    progress: Callable[[int, int], None] | None = None,
) -> Stitched:
    """The merger's engine: chunks read as the stitcher needs them (iterate in a thread)."""
    fetcher = LoopFetcher(store, asyncio.get_running_loop())
    feed = Feed(plan_sources(keys, log), ChunkReader(market, log), fetcher, on_chunk=progress)
    stitcher = stitch(feed, market=market, log=log, primary=primary, start=start)
    return StreamingDay(stitcher, fetcher)


@dataclass(slots=True)
class SymbolResult:
    symbol: str
    state: str  # "merged", "done" (already merged, left alone), "late" or "failed"
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
    shard: tuple[int, int] | None = None  # (I, N) of --shard I/N

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
            for state in ("merged", "done", "late", "failed")
        }
        return {
            "exchange": self.exchange,
            "date": format_date(self.date),
            "merged": by_state["merged"],
            "skipped": by_state["done"],
            "late": by_state["late"],
            "failed": by_state["failed"],
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
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


async def _after_delete(
    store: Store,
    symbol: str,
    date: dt.date,
    manifest: dict[str, Any],
    inputs: list[tuple[str, str]],
    *,
    force: bool,
    delete_raw: bool,
) -> SymbolResult:
    """A day merged with --delete-raw: never rebuilt; late objects are kept, not merged.

    Its raw objects are gone, so merging again would rebuild the day from whatever arrived
    late alone. Leftovers of an interrupted deletion are deleted (with ``delete_raw``).
    """
    merged = {key for key, _ in manifest_inputs(manifest)}
    late = [key for key, _ in inputs if key not in merged]
    events, gaps, mismatched = _counts(manifest)
    result = SymbolResult(symbol, "done", events, gaps, mismatched)
    context = {"symbol": symbol, "date": format_date(date)}
    if delete_raw:
        leftovers = [key for key, _ in inputs if key in merged]
        for key in leftovers:
            await store.delete(key)
        result.raw_deleted = len(leftovers)
    if force:
        result.state = "failed"
        result.error = "its raw objects were deleted after the merge (--delete-raw): not rebuilt"
    elif late:
        result.state = "late"
        result.error = f"{len(late)} raw objects arrived after the raw day was deleted"
        log.warning(
            "late raw objects kept, not merged: the day's raw objects were deleted",
            extra={**context, "late": len(late), "first_late": late[0]},
        )
    return result


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
    progress: Callable[[int, int], None] | None = None,
) -> SymbolResult:
    """Merge one symbol-day (or leave it alone when it is done and not stale)."""
    date_text = format_date(date)
    manifest_key = canonical_key(exchange, CHANNEL, symbol, date, MANIFEST_FILE)
    prev_ref, start = await _previous(store, exchange, symbol, date) if previous else (None, None)
    existing = await _get_json(store, manifest_key)
    if existing is not None and existing[0].get("raw_deleted"):
        return await _after_delete(
            store, symbol, date, existing[0], inputs, force=force, delete_raw=delete_raw
        )
    if existing is not None and not force:
        manifest = existing[0]
        if manifest_inputs(manifest) == inputs and manifest.get("previous") == prev_ref:
            events, gaps, mismatched = _counts(manifest)
            return SymbolResult(symbol, "done", events, gaps, mismatched)
    if existing is not None:
        await store.delete(manifest_key)  # from here on the day is not done
        existing = None  # an old manifest lists every input: not kept through the merge
    market = market_of(exchange)
    gap_log = GapLog()
    items = await pipeline(
        store, [k for k, _ in inputs], market=market, log=gap_log, primary=primary, start=start,
        progress=progress,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="booktape-merge-") as tmp:
        writer = DayWriter(
            Path(tmp), exchange=exchange, channel=CHANNEL, symbol=symbol, date=date_text,
            market=market, keep_book=False,  # the stitcher gives the closing book
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
    will_delete = delete_raw and gap_log.audit.mismatched == 0
    manifest_bytes = build_manifest(
        exchange=exchange, channel=CHANNEL, symbol=symbol, date=date_text, outputs=outputs,
        inputs=inputs, counts=counts, previous=prev_ref, version=__version__,
        raw_deleted=will_delete,
    )  # fmt: skip
    await store.put(manifest_key, manifest_bytes)
    result = SymbolResult(
        symbol, "merged", written.events, len(gap_log.unrecoverable), gap_log.audit.mismatched
    )
    if will_delete:
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
    progress: Callable[[str, int, int], None] | None = None,
) -> DayResult:
    """Merge every selected symbol of one exchange/day; write the status summary."""
    market_of(exchange)
    started = time.monotonic()
    result = DayResult(exchange, date, shard=shard)
    planned = await plan(store, exchange, date, symbols=symbols, shard=shard)
    context = {"exchange": exchange, "date": format_date(date)}
    log.info("merge planned", extra={**context, "symbols": len(planned)})
    for n, (symbol, inputs) in enumerate(planned.items(), 1):
        t0 = time.monotonic()
        on_chunk = None
        if progress is not None:
            label = f"{date} {symbol} ({n}/{len(planned)} symbols)"
            on_chunk = functools.partial(progress, label)
        try:
            with long_lived_frozen():
                outcome = await merge_symbol(
                    store, exchange, symbol, date, inputs, primary=primary, force=force,
                    delete_raw=delete_raw, previous=previous, pipeline=pipeline,
                    progress=on_chunk,
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
    await store.put(status_key("merge", exchange, date, shard), summary + b"\n")
    return result
