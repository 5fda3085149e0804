"""Reading merged days from plain scripts and notebooks: level rows as a table, book replay.

::

    import booktape
    table = booktape.read_levels("/data/booktape", "binance", "BTCUSDT",
                                 "2024-05-01", "2024-05-03")      # a pyarrow.Table
    for exchange_ts, local_ts, update_id, bids, asks in booktape.replay(
            "s3://bucket/booktape", "binance", "BTCUSDT", "2024-05-01", "2024-05-02", depth=10):
        ...

Both read ``canonical/{exchange}/depth/{SYMBOL}/{YYYY-MM-DD}/levels.parquet`` day by day
over the interval ``[start, end)`` of local receive time (a date means its 00:00 UTC).
A day counts only when its ``_MANIFEST.json`` exists: by default a missing or unfinished
day raises :class:`DayNotReadyError` (``missing="skip"`` leaves it out instead; the next
day begins with a full book image, so a replay shows the jump as a reset).

The functions are synchronous. The store API is async, so each store call runs in an event
loop of its own: ``asyncio.run`` in a plain script, or a private worker thread when the
caller already runs a loop (a Jupyter notebook), so both work unchanged. ``store`` is a URL
(a path, ``file:///...``, ``s3://bucket/prefix``) or an open :class:`~booktape.stores.Store`
(used as is, not closed; an S3 store object must not be tied to another running loop, so
pass S3 as a URL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from booktape.canonical import LEVELS_FILE, LEVELS_SCHEMA, MANIFEST_FILE
from booktape.errors import BooktapeError, ConfigError, InvalidNameError
from booktape.keys import NS_PER_DAY, canonical_key, parse_date, validate_exchange, validate_name
from booktape.levelbook import REPLAY_COLUMNS, Level, LevelBook, event_chunks
from booktape.stores import LocalStore, Store, open_store

CHANNEL: Final = "depth"
BATCH_ROWS: Final = 65_536
MAX_DAYS: Final = 3660
_EPOCH: Final = dt.date(1970, 1, 1)


T = TypeVar("T")
TimeLike = str | dt.date | dt.datetime | int
Missing = Literal["raise", "skip"]


class DayNotReadyError(BooktapeError):
    """A day in the requested interval has no ``_MANIFEST.json``: it is not merged (yet)."""


class DayReadError(BooktapeError):
    """A merged day's file is missing or cannot be read (damaged, not Parquet)."""


class BookState(NamedTuple):
    """The book after one canonical event: its top ``depth`` levels a side, best first."""

    exchange_ts: int  # ms, the exchange's event time (0 for a book image)
    local_ts: int  # ns, local receive time of the event
    update_id: int  # the book's last update id (the event's ``u``)
    bids: list[Level]  # (price, quantity), highest price first
    asks: list[Level]  # (price, quantity), lowest price first

    @property
    def reset(self) -> bool:
        """True when the book was rebuilt from an image (a day start, a re-anchor)."""
        return False


class ResetState(BookState):
    """A :class:`BookState` rebuilt from a book image rather than from the state before."""

    __slots__ = ()

    @property
    def reset(self) -> bool:
        return True


# --- time and days -----------------------------------------------------------------------


def to_ns(value: TimeLike) -> int:
    """ns since the epoch (UTC) of a date, ``YYYY-MM-DD[THH:MM[:SS[.f]]][Z]``, datetime or ns.

    A naive datetime (or text without an offset) is taken as UTC; an int is already ns.
    """
    if isinstance(value, bool):
        raise ConfigError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                value = parse_date(text)
            else:
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (ValueError, InvalidNameError) as exc:
            raise ConfigError(f"not a time: {value!r} (use YYYY-MM-DD or ISO 8601)") from exc
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, dt.date):
        return (value - _EPOCH).days * NS_PER_DAY
    raise ConfigError(f"not a time: {value!r}")


def days_between(start_ns: int, end_ns: int) -> list[dt.date]:
    """The UTC days that ``[start_ns, end_ns)`` touches, oldest first."""
    if end_ns <= start_ns:
        raise ConfigError("end must be after start")
    first, last = start_ns // NS_PER_DAY, (end_ns - 1) // NS_PER_DAY
    if last - first >= MAX_DAYS:
        raise ConfigError(f"at most {MAX_DAYS} days at once")
    return [_EPOCH + dt.timedelta(days=d) for d in range(first, last + 1)]


def _names(exchange: str, symbol: str) -> tuple[str, str]:
    try:
        return validate_exchange(exchange), validate_name("symbol", symbol.upper())
    except InvalidNameError as exc:
        raise ConfigError(str(exc)) from None


# --- sync over the async store -----------------------------------------------------------


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` to completion from sync code, also when a loop is already running."""

    async def main() -> T:
        return await fn()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(1, thread_name_prefix="booktape-read") as pool:
        return pool.submit(asyncio.run, main()).result()


def with_store(
    store: str | Store, fn: Callable[[Store], Awaitable[T]], *, s3_endpoint_url: str | None
) -> T:
    """``fn(store)`` run synchronously; a URL is opened (and closed) around the call."""
    if isinstance(store, str):
        url = store
        opened = open_store(url, s3_endpoint_url=s3_endpoint_url)  # a bad URL: ConfigError

        async def call() -> T:
            async with opened as s:
                return await fn(s)

        return run_sync(call)
    return run_sync(lambda: fn(store))


def _local_root(store: str | Store, s3_endpoint_url: str | None) -> Path | None:
    """The directory of a local store (read in place), else None."""
    opened = open_store(store, s3_endpoint_url=s3_endpoint_url) if isinstance(store, str) else store
    return opened.root if isinstance(opened, LocalStore) else None


def ready_days(
    store: str | Store,
    exchange: str,
    symbol: str,
    days: list[dt.date],
    *,
    missing: Missing,
    s3_endpoint_url: str | None = None,
) -> list[dt.date]:
    """The days among ``days`` that are done (have a manifest); raise or skip the others."""
    if missing not in ("raise", "skip"):
        raise ConfigError(f"missing must be 'raise' or 'skip', not {missing!r}")

    async def check(s: Store) -> list[bool]:
        return [
            await s.head(canonical_key(exchange, CHANNEL, symbol, d, MANIFEST_FILE)) is not None
            for d in days
        ]

    done = with_store(store, check, s3_endpoint_url=s3_endpoint_url)
    for day, ok in zip(days, done, strict=True):
        if not ok and missing == "raise":
            raise DayNotReadyError(
                f"{exchange} {symbol} {day}: the day is not merged (no {MANIFEST_FILE}); "
                "merge it, or pass missing='skip'"
            )
    return [d for d, ok in zip(days, done, strict=True) if ok]


@contextmanager
def day_file(store: str | Store, key: str, *, s3_endpoint_url: str | None = None) -> Iterator[Path]:
    """A local path of the object ``key``: in place for a local store, else a temp copy."""
    root = _local_root(store, s3_endpoint_url)
    try:
        if root is not None:
            if not (root / key).is_file():
                raise DayReadError(f"{key}: missing from {root} although the day is done")
            yield root / key
            return
        with tempfile.TemporaryDirectory(prefix="booktape-read-") as tmp:
            path = Path(tmp) / Path(key).name

            async def fetch(s: Store) -> None:
                await s.get_file(key, path)

            with_store(store, fetch, s3_endpoint_url=s3_endpoint_url)
            yield path
    except (pa.ArrowException, OSError) as exc:  # raised while the caller read the file
        raise DayReadError(f"{key}: cannot be read: {exc}") from exc


# --- the public API ----------------------------------------------------------------------


def _opening_rows(table: pa.Table) -> int:
    """How many rows the opening book image of a day has (its leading snapshot rows)."""
    snapshot = table.column("is_snapshot")
    first_delta = pc.index(snapshot, False).as_py()
    return len(table) if first_delta < 0 else int(first_delta)


def read_levels(
    store: str | Store,
    exchange: str,
    symbol: str,
    start: TimeLike,
    end: TimeLike,
    *,
    columns: list[str] | None = None,
    missing: Missing = "raise",
    s3_endpoint_url: str | None = None,
) -> pa.Table:
    """The levels.parquet rows with ``start <= local_ts < end``, across days, as one Table.

    A day read from its start keeps its opening book image even though the image carries
    the time it was taken (a day that continues the previous one opens with that day's
    closing book, stamped with its last event's time): a table of whole days always
    begins with a full image and replays on its own.

    ``columns`` picks columns (default: all, in the canonical schema). ``table.to_pandas()``
    or ``polars.from_arrow(table)`` turn it into a DataFrame.
    """
    exchange, symbol = _names(exchange, symbol)
    start_ns, end_ns = to_ns(start), to_ns(end)
    days = days_between(start_ns, end_ns)
    wanted = ready_days(store, exchange, symbol, days, missing=missing,
                        s3_endpoint_url=s3_endpoint_url)  # fmt: skip
    tables: list[pa.Table] = []
    for day in wanted:
        key = canonical_key(exchange, CHANNEL, symbol, day, LEVELS_FILE)
        with day_file(store, key, s3_endpoint_url=s3_endpoint_url) as path:
            table = pq.read_table(path)
        ts = table.column("local_ts")
        keep = pc.and_(pc.greater_equal(ts, start_ns), pc.less(ts, end_ns))
        if start_ns <= to_ns(day):  # the whole day: keep its opening image, whatever its time
            opening = _opening_rows(table)
            keep = pc.or_(keep, pa.array([True] * opening + [False] * (len(table) - opening)))
        table = table.filter(keep)
        tables.append(table.select(columns) if columns is not None else table)
    if not tables:
        empty = LEVELS_SCHEMA.empty_table()
        return empty.select(columns) if columns is not None else empty
    return pa.concat_tables(tables)


def replay(
    store: str | Store,
    exchange: str,
    symbol: str,
    start: TimeLike,
    end: TimeLike,
    *,
    depth: int | None = 25,
    missing: Missing = "raise",
    s3_endpoint_url: str | None = None,
) -> Iterator[BookState]:
    """Book states after each canonical event with ``start <= local_ts < end``.

    Yields ``(exchange_ts, local_ts, update_id, bids, asks)`` named tuples; ``bids`` and
    ``asks`` are lists of ``(price, quantity)`` floats, best first, at most ``depth`` a side
    (None: the whole book). Each day replays from its first row (a full book image), so a
    ``start`` inside a day is exact. A book image that is met after events resets the book:
    its state is a :class:`ResetState` (``state.reset`` is True) - a re-anchor after an
    unrecoverable gap, or a day that does not continue the one before. At a day boundary
    whose image continues the previous day's book (same update id), no state is repeated.
    """
    if depth is not None and depth < 1:
        raise ConfigError(f"depth must be at least 1 (or None), not {depth}")
    exchange, symbol = _names(exchange, symbol)
    start_ns, end_ns = to_ns(start), to_ns(end)
    days = days_between(start_ns, end_ns)
    wanted = ready_days(store, exchange, symbol, days, missing=missing,
                        s3_endpoint_url=s3_endpoint_url)  # fmt: skip
    return _replay_days(store, exchange, symbol, wanted, start_ns, end_ns, depth,
                        s3_endpoint_url)  # fmt: skip


def _replay_days(  # noqa: PLR0917 - the private half of replay()
    store: str | Store,
    exchange: str,
    symbol: str,
    days: list[dt.date],
    start_ns: int,
    end_ns: int,
    depth: int | None,
    s3_endpoint_url: str | None,
) -> Iterator[BookState]:
    book = LevelBook()
    for day in days:
        key = canonical_key(exchange, CHANNEL, symbol, day, LEVELS_FILE)
        with day_file(store, key, s3_endpoint_url=s3_endpoint_url) as path:
            batches = pq.ParquetFile(path).iter_batches(BATCH_ROWS, columns=list(REPLAY_COLUMNS))
            for chunk in event_chunks(batches):
                local_ts, snapshot, ids = chunk.local_ts, chunk.is_snapshot, chunk.last_update_id
                for j in range(chunk.events):
                    ts = local_ts[j]
                    if ts >= end_ns:
                        return
                    image = snapshot[j]
                    same = image and ids[j] == book.update_id
                    book.apply_event(chunk, j)
                    if ts < start_ns or same:
                        continue
                    bids, asks = book.top(depth)
                    if image:
                        yield ResetState(chunk.exchange_ts[j], ts, ids[j], bids, asks)
                    else:
                        yield BookState(chunk.exchange_ts[j], ts, ids[j], bids, asks)
