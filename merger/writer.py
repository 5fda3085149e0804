"""The canonical writer: canonical items -> the files of one merged day (DESIGN.md).

:class:`DayWriter` takes the stitcher's items one at a time and streams them into local
files in a work directory, so memory stays bounded by one parquet batch and the book
(and resident memory with it: :mod:`merger.memory`):

- ``levels.parquet``: one row per level change, an event's rows contiguous (bids, then
  asks); a :class:`BookImage` becomes ``is_snapshot`` rows whose three id columns hold its
  ``lastUpdateId``. zstd, row groups of :data:`BATCH_ROWS` rows.
- ``deltas.jsonl.zst``: the raw record format (booktape.codec), a ``snap`` record per book
  image and each event's stored record line verbatim.
- ``closing_book.json.zst``: the book after the last item.

Output is deterministic: no wall-clock time goes into any file, compression settings are
fixed, and the same items give byte-identical files. ``gaps.json`` (merger.gaps) and
``_MANIFEST.json`` (merger.day) are written by their own modules.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from booktape.binance import Level, Market, decode_depth
from booktape.book import OrderBook, Side
from booktape.canonical import LEVELS_FILE, LEVELS_SCHEMA
from booktape.cext import c_function
from booktape.codec import Header, encode_snap
from booktape.objects import RecordWriter
from merger.memory import ARROW_POOL, release_free_memory
from merger.model import BookImage, CanonicalItem, StreamEvent
from merger.parquetfile import PartedParquetFile

DELTAS_FILE: Final = "deltas.jsonl.zst"
CLOSING_FILE: Final = "closing_book.json.zst"
GAPS_FILE: Final = "gaps.json"
BATCH_ROWS: Final = 100_000
PARSE_GROUPS: Final = 500  # groups whose level strings are parsed to floats at once
ZSTD_LEVEL: Final = 3
# deltas.jsonl.zst: zstd level 1 compresses the verbatim frames as well as level 3 (a
# BTCUSDT day: 7.0x against 6.9x) in ~70 % of the time
DELTAS_ZSTD_LEVEL: Final = 1
CANONICAL_REGION: Final = "canonical"
CANONICAL_COLLECTOR: Final = "merger"
SNAP_REQUEST: Final = "canonical"
_CONN_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

_COLUMNS: Final = tuple(LEVELS_SCHEMA.names)


# booktape/_fastbook.c's level_floats: float() of every level string, packed (else Arrow)
_C_FLOATS: Final[Callable[[Sequence[Level]], bytes | None] | None] = c_function(
    "_fastbook", "level_floats"
)


@dataclass(frozen=True, slots=True)
class WrittenDay:
    """What :meth:`DayWriter.close` leaves in the work directory."""

    files: dict[str, Path]  # file name -> local path
    events: int  # canonical events (book images excluded)
    images: int  # book images (start and re-anchors)
    rows: int  # rows of levels.parquet
    closing: BookImage | None  # the book after the last item (None for an empty day)


def snapshot_body(image: BookImage) -> bytes:
    """A REST-shaped body for a book image: ``{"lastUpdateId":..,"bids":..,"asks":..}``."""
    return orjson.dumps(
        {
            "lastUpdateId": image.last_update_id,
            "bids": [list(level) for level in image.bids],
            "asks": [list(level) for level in image.asks],
        }
    )


def image_line(image: BookImage) -> bytes:
    """The ``snap`` record of a book image in deltas.jsonl.zst."""
    conn = image.source if _CONN_RE.fullmatch(image.source) else CANONICAL_REGION
    extra: dict[str, str | int | float | bool | None] = {
        "reason": image.reason,
        "source": image.source,
    }
    return encode_snap(
        image.local_ts, image.local_ts, conn, SNAP_REQUEST, snapshot_body(image), extra=extra
    )


def closing_document(
    closing: BookImage, *, exchange: str, symbol: str, date: str
) -> dict[str, Any]:
    return {
        "exchange": exchange,
        "symbol": symbol,
        "date": date,
        "lastUpdateId": closing.last_update_id,
        "local_ts": closing.local_ts,
        "bids": [list(level) for level in closing.bids],
        "asks": [list(level) for level in closing.asks],
    }


def encode_closing(closing: BookImage, *, exchange: str, symbol: str, date: str) -> bytes:
    doc = closing_document(closing, exchange=exchange, symbol=symbol, date=date)
    raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(raw)


def decode_closing(data: bytes) -> BookImage:
    """The previous day's closing book as the image the next day may start from."""
    doc = orjson.loads(zstandard.ZstdDecompressor().decompress(data))
    return BookImage(
        local_ts=int(doc["local_ts"]),
        last_update_id=int(doc["lastUpdateId"]),
        bids=tuple((str(p), str(q)) for p, q in doc["bids"]),
        asks=tuple((str(p), str(q)) for p, q in doc["asks"]),
        source="previous-day",
        reason="previous_day",
    )


class _LevelRows:
    """Rows buffered per group (one item: its bids, then its asks), made columns in bulk.

    :meth:`add` keeps one tuple and the level values per group: packed float64 values
    when booktape/_fastbook.c reads them (``float()`` of each string), else the strings,
    which every :data:`PARSE_GROUPS` groups Arrow parses at once (as Python's ``float()``
    would, correctly rounded), so a batch is held as 16 bytes a row, not as strings;
    :meth:`flush` builds the other columns with numpy (ids and labels repeated over each
    group's levels) and writes a row group every :data:`BATCH_ROWS` rows or more.
    """

    def __init__(self, path: Path) -> None:
        self._writer = PartedParquetFile(
            path,
            LEVELS_SCHEMA,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            use_dictionary=["side", "source"],
            write_statistics=True,
            memory_pool=ARROW_POOL,
        )
        # local_ts, exchange_ts, prev, first, last, is_snapshot, source, bid rows, ask rows
        self._groups: list[tuple[int, int, int, int, int, bool, str, int, int]] = []
        # per group: its values packed by the C pass (bytes), or its strings joined by commas
        self._levels: list[bytes | str] = []
        self._prices: list[np.ndarray[Any, Any]] = []  # the groups parsed so far, in parts
        self._qtys: list[np.ndarray[Any, Any]] = []
        self._pending = 0  # rows buffered
        self.rows = 0

    def add(  # noqa: PLR0917 - one group's ids and levels, positional on the hot path
        self,
        local_ts: int,
        exchange_ts: int,
        prev_id: int,
        first_id: int,
        last_id: int,
        bids: Iterable[Level],
        asks: Iterable[Level],
        *,
        snapshot: bool,
        source: str,
    ) -> None:
        bids = bids if isinstance(bids, (list, tuple)) else list(bids)
        asks = asks if isinstance(asks, (list, tuple)) else list(asks)
        nb, na = len(bids), len(asks)
        if not nb + na:
            return
        levels = (*bids, *asks)
        piece: bytes | str | None = None if _C_FLOATS is None else _C_FLOATS(levels)
        if piece is None:
            piece = _joined(levels)
        self._groups.append(
            (local_ts, exchange_ts, prev_id, first_id, last_id, snapshot, source, nb, na)
        )
        self._levels.append(piece)
        self._pending += nb + na
        self.rows += nb + na
        if len(self._levels) >= PARSE_GROUPS:
            self._parse()

    def _parse(self) -> None:
        """Parse the level strings buffered so far into float columns (8 bytes a value)."""
        if not self._levels:
            return
        runs: list[np.ndarray[Any, Any]] = []
        for parsed, pieces in itertools.groupby(self._levels, key=lambda x: type(x) is bytes):
            if parsed:
                runs.append(np.frombuffer(b"".join(pieces), dtype=np.float64))  # type: ignore[arg-type]
            else:
                runs.append(_floats(list(pieces)))  # type: ignore[arg-type]
        values = runs[0] if len(runs) == 1 else np.concatenate(runs)
        self._prices.append(values[0::2].copy())
        self._qtys.append(values[1::2].copy())
        self._levels = []

    def maybe_flush(self) -> None:
        """Write a row group once a batch is full (called between events only)."""
        if self._pending >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._groups:
            return
        columns = list(zip(*self._groups, strict=True))
        bid_rows = np.array(columns[7], dtype=np.int64)
        ask_rows = np.array(columns[8], dtype=np.int64)
        counts = bid_rows + ask_rows
        sides = np.empty(2 * len(counts), dtype=np.int64)  # each group's bid, then ask rows
        sides[0::2], sides[1::2] = bid_rows, ask_rows

        def repeated(values: tuple[Any, ...], dtype: type) -> pa.Array:
            return pa.array(
                np.repeat(np.array(values, dtype=dtype), counts), memory_pool=ARROW_POOL
            )

        def labels(names: list[str], codes: np.ndarray[Any, Any], per: Any) -> pa.Array:
            names_array = pa.array(names, pa.string(), memory_pool=ARROW_POOL)
            indices = pa.array(np.repeat(codes, per), memory_pool=ARROW_POOL)
            return pc.take(names_array, indices, memory_pool=ARROW_POOL)

        sources = sorted(set(columns[6]))
        index = {name: i for i, name in enumerate(sources)}
        source_codes = np.array([index[v] for v in columns[6]], dtype=np.int32)
        side_codes = np.tile(np.array([1, 0], dtype=np.int32), len(counts))  # bid=1, ask=0
        self._parse()
        prices = pa.array(np.concatenate(self._prices), memory_pool=ARROW_POOL)
        qtys = pa.array(np.concatenate(self._qtys), memory_pool=ARROW_POOL)
        self._prices, self._qtys = [], []
        arrays = {
            "local_ts": repeated(columns[0], np.int64),
            "exchange_ts": repeated(columns[1], np.int64),
            "prev_update_id": repeated(columns[2], np.int64),
            "first_update_id": repeated(columns[3], np.int64),
            "last_update_id": repeated(columns[4], np.int64),
            "side": labels(["ask", "bid"], side_codes, sides),
            "price": prices,
            "qty": qtys,
            "is_snapshot": repeated(columns[5], np.bool_),
            "source": labels(sources, source_codes, counts),
        }
        table = pa.Table.from_arrays([arrays[name] for name in _COLUMNS], schema=LEVELS_SCHEMA)
        self._writer.write_table(table, row_group_size=BATCH_ROWS * 2)
        self._groups = []  # (the level strings went with self._parse() above)
        self._pending = 0
        del table, arrays, prices, qtys
        release_free_memory()  # what the batch freed: back to the OS, so RSS stays flat

    def close(self) -> None:
        self.flush()
        self._writer.close()


def _joined(levels: Sequence[Level]) -> str:
    """A group's level strings joined by commas ("p1,q1,p2,q2,..."), for Arrow to parse."""
    try:
        text = ",".join(itertools.chain.from_iterable(levels))
    except TypeError:  # numbers, not strings: as float() reads them
        text = ",".join(repr(float(x)) for level in levels for x in level)
    if text.count(",") != 2 * len(levels) - 1:  # a level that is not two comma-free strings
        for level in levels:
            for x in level:
                float(x)  # raises for the culprit
        raise ValueError(f"malformed levels {levels!r}")
    return text


def _floats(groups: list[str]) -> np.ndarray[Any, Any]:
    """Every level's price and quantity as float64 values, in order (p1, q1, p2, ...).

    ``groups`` holds each group's strings joined by commas ("p1,q1,p2,q2,...").
    """
    strings = pa.array(groups, pa.string(), memory_pool=ARROW_POOL)
    texts = pc.split_pattern(strings, ",", memory_pool=ARROW_POOL).flatten()
    try:
        values: np.ndarray[Any, Any] = texts.cast(pa.float64(), memory_pool=ARROW_POOL).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a spelling Arrow does not read: as Python
        values = np.array([float(text) for text in texts.to_pylist()], dtype=np.float64)
    return values


class DayWriter:
    """Streams canonical items into levels.parquet, deltas.jsonl.zst and the closing book."""

    def __init__(
        self,
        workdir: Path,
        *,
        exchange: str,
        channel: str,
        symbol: str,
        date: str,
        market: Market = Market.SPOT,
        keep_book: bool = True,
    ) -> None:
        self.workdir = workdir
        self._keep_book = keep_book  # replay a book for closing_book() (the merge has one)
        self.exchange, self.symbol, self.date, self.market = exchange, symbol, date, market
        workdir.mkdir(parents=True, exist_ok=True)
        self._levels = _LevelRows(workdir / LEVELS_FILE)
        self._deltas_file = (workdir / DELTAS_FILE).open("wb")
        header = Header(
            exchange=exchange,
            channel=channel,
            symbol=symbol,
            region=CANONICAL_REGION,
            collector=CANONICAL_COLLECTOR,
            host=CANONICAL_COLLECTOR,
        )
        self._deltas = RecordWriter(self._deltas_file, header, level=DELTAS_ZSTD_LEVEL)
        self._book = OrderBook()
        self._last_ts = 0
        self.events = 0
        self.images = 0

    def add(self, item: CanonicalItem) -> None:
        if isinstance(item, BookImage):
            self._add_image(item)
        else:
            self._add_event(item)
        self._levels.maybe_flush()

    def add_all(self, items: Iterable[CanonicalItem]) -> None:
        for item in items:
            self.add(item)

    def _add_image(self, image: BookImage) -> None:
        uid = image.last_update_id
        self._levels.add(
            image.local_ts, 0, uid, uid, uid, image.bids, image.asks,
            snapshot=True, source=image.source,
        )  # fmt: skip
        self._deltas.write_line(image_line(image))
        self._book = OrderBook()
        if self._keep_book:
            self._book.apply_levels(image.bids, image.asks)
        self._book.update_id = uid
        self._last_ts = image.local_ts
        self.images += 1

    def _add_event(self, event: StreamEvent) -> None:
        decoded = event.decoded or decode_depth(event.frame, self.market)
        h = event.header
        self._levels.add(
            event.recv_ns, h.event_time, h.prev_id, h.first_id, h.last_id,
            decoded.bids, decoded.asks, snapshot=False, source=event.source,
        )  # fmt: skip
        self._deltas.write_line(event.record_line())
        if self._keep_book:
            self._book.apply(decoded)
        self._last_ts = event.recv_ns
        self.events += 1

    def closing_book(self) -> BookImage | None:
        """The book as the items left it (None before any book image, or without a book)."""
        if self._book.update_id is None or not self._keep_book:
            return None
        return BookImage(
            local_ts=self._last_ts,
            last_update_id=self._book.update_id,
            bids=tuple(self._book.levels(Side.BID)),
            asks=tuple(self._book.levels(Side.ASK)),
            source="previous-day",
            reason="close",
        )

    def close(self, closing: BookImage | None = None) -> WrittenDay:
        """Finish every file; ``closing`` overrides the book replayed from the items."""
        self._levels.close()
        self._deltas.close()
        self._deltas_file.close()
        files = {LEVELS_FILE: self.workdir / LEVELS_FILE, DELTAS_FILE: self.workdir / DELTAS_FILE}
        closing = closing if closing is not None else self.closing_book()
        if closing is not None:
            path = self.workdir / CLOSING_FILE
            path.write_bytes(
                encode_closing(closing, exchange=self.exchange, symbol=self.symbol, date=self.date)
            )
            files[CLOSING_FILE] = path
        return WrittenDay(files, self.events, self.images, self._levels.rows, closing)

    def abort(self) -> None:
        """Close the files after a failure (their content is discarded by the caller)."""
        for close in (self._levels.close, self._deltas.close, self._deltas_file.close):
            try:
                close()
            except Exception:  # noqa: S112 - best effort on an already failed day
                continue


def file_digest(path: Path) -> tuple[int, str]:
    """(size, hex sha256) of a local file."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return os.path.getsize(path), sha.hexdigest()


# --- _MANIFEST.json --------------------------------------------------------------------

MANIFEST_VERSION: Final = 1


def build_manifest(
    *,
    exchange: str,
    channel: str,
    symbol: str,
    date: str,
    outputs: dict[str, tuple[int, str]],
    inputs: list[tuple[str, str]],
    counts: dict[str, int],
    previous: dict[str, str] | None,
    version: str,
    raw_deleted: bool = False,
) -> bytes:
    """_MANIFEST.json bytes: outputs (size, sha256), inputs (key, ETag), counts, version.

    ``previous`` is ``{"key", "sha256"}`` of the previous day's manifest the day started
    from, or None. Nothing time-dependent goes in, so a rebuild gives the same bytes.
    ``raw_deleted`` marks a day whose raw objects are deleted once this manifest is
    committed (``--delete-raw``): it can never be rebuilt, and late objects are not merged.
    """
    doc = {
        "version": MANIFEST_VERSION,
        "exchange": exchange,
        "channel": channel,
        "symbol": symbol,
        "date": date,
        "merger_version": version,
        "outputs": {
            name: {"size": size, "sha256": sha} for name, (size, sha) in sorted(outputs.items())
        },
        "inputs": [{"key": key, "etag": etag} for key, etag in sorted(inputs)],
        "counts": dict(sorted(counts.items())),
        "previous": previous,
    }
    if raw_deleted:
        doc["raw_deleted"] = True
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def manifest_inputs(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The (key, ETag) pairs a manifest names, sorted."""
    return sorted((str(i["key"]), str(i["etag"])) for i in manifest.get("inputs", []))
