"""Object keys: the one place that knows the store layout.

Raw objects (written by collectors)::

    raw/{exchange}/{channel}/{SYMBOL}/{YYYY-MM-DD}/{region}.{collector}/{HHMMSSmmm}-{first_id}-{last_id}.jsonl.zst

Canonical output (written by the merger)::

    canonical/{exchange}/{channel}/{SYMBOL}/{YYYY-MM-DD}/{filename}

Merge status: ``status/{kind}/{exchange}/{YYYY-MM-DD}.json`` (``kind`` is ``merge``).

Every name that goes into a key is validated here, so a key can always be split back into
its parts: symbols, regions and collector ids are 1-64 ASCII characters of
``[A-Za-z0-9_-]`` (no dot, since ``region.collector`` is joined with one; no slash, no
whitespace). Exchanges and channels come from a closed list. Date and time in a raw key are
the UTC receive time of the object's first record, computed with integer arithmetic only.
Update ids are non-negative integers below 2**63 (they end up in int64 columns), written
without sign or leading zeros; ``0-0`` marks an object without ids.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

from booktape.errors import InvalidNameError, KeyLayoutError

#: Which channels each exchange records.
EXCHANGE_CHANNELS: Final[dict[str, tuple[str, ...]]] = {
    "binance": ("depth",),
    "binance-usdm": ("depth",),
    "binance-coinm": ("depth",),
    "coinbase": ("book", "prices"),
}
#: The files of one canonical day.
CANONICAL_FILES: Final[frozenset[str]] = frozenset(
    {
        "levels.parquet",
        "deltas.jsonl.zst",
        "gaps.json",
        "closing_book.json.zst",
        "_MANIFEST.json",
        "snapshots.parquet",
        "prices.parquet",
    }
)
RAW_ROOT: Final = "raw"
CANONICAL_ROOT: Final = "canonical"
STATUS_ROOT: Final = "status"
RAW_SUFFIX: Final = ".jsonl.zst"
MAX_NAME_LEN: Final = 64
MAX_ID: Final = 2**63 - 1

NS_PER_MS: Final = 1_000_000
MS_PER_DAY: Final = 86_400_000
NS_PER_DAY: Final = MS_PER_DAY * NS_PER_MS
_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()

# Explicit ASCII classes: ``\w`` and ``str.isalnum`` accept unicode, and ``$`` accepts "\n".
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DATE_RE: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_ID: Final = r"(0|[1-9][0-9]{0,18})"
_RAW_FILE_RE: Final = re.compile(
    r"([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{3})-" + _ID + "-" + _ID + re.escape(RAW_SUFFIX)
)


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it may be a symbol/region/collector id in a key, else raise.

    ``kind`` only names the value in the error message (``"symbol"``, ``"region"``...).
    """
    if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
        raise InvalidNameError(
            f"invalid {kind} {value!r}: use 1-{MAX_NAME_LEN} ASCII letters, digits, '_' or '-'"
        )
    return value


def validate_exchange(exchange: str) -> str:
    """Return ``exchange`` if it is a known exchange name, else raise InvalidNameError."""
    if not isinstance(exchange, str) or exchange not in EXCHANGE_CHANNELS:
        known = ", ".join(EXCHANGE_CHANNELS)
        raise InvalidNameError(f"invalid exchange {exchange!r}: expected one of {known}")
    return exchange


def validate_channel(exchange: str, channel: str) -> str:
    """Return ``channel`` if ``exchange`` records it, else raise InvalidNameError."""
    channels = EXCHANGE_CHANNELS[validate_exchange(exchange)]
    if not isinstance(channel, str) or channel not in channels:
        raise InvalidNameError(
            f"invalid channel {channel!r} for exchange {exchange!r}: "
            f"expected one of {', '.join(channels)}"
        )
    return channel


def make_source(region: str, collector: str) -> str:
    """Join a validated region and collector id as ``region.collector``."""
    return f"{validate_name('region', region)}.{validate_name('collector', collector)}"


def parse_source(source: str) -> tuple[str, str]:
    """Split ``region.collector`` into its validated parts."""
    region, dot, collector = source.partition(".") if isinstance(source, str) else ("", "", "")
    if not dot:
        raise InvalidNameError(f"invalid source {source!r}: expected 'region.collector'")
    return validate_name("region", region), validate_name("collector", collector)


def parse_date(text: str) -> dt.date:
    """Parse ``YYYY-MM-DD`` (exactly that, ASCII digits) into a date."""
    match = _DATE_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidNameError(f"invalid date {text!r}: expected YYYY-MM-DD")
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise InvalidNameError(f"invalid date {text!r}: {exc}") from exc


def format_date(date: dt.date) -> str:
    """``YYYY-MM-DD`` of a date; refuses datetimes, whose isoformat carries a time."""
    if isinstance(date, dt.datetime) or not isinstance(date, dt.date):
        raise InvalidNameError(f"invalid date {date!r}: expected a datetime.date")
    return date.isoformat()


def utc_date_of_ns(ns: int) -> dt.date:
    """The UTC date of a time in nanoseconds since the epoch."""
    return _split_ns(ns)[0]


def _split_ns(ns: int) -> tuple[dt.date, int]:
    """(UTC date, milliseconds since that date's midnight) of a non-negative ns time."""
    if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
        raise InvalidNameError(f"invalid receive time {ns!r}: expected ns since the epoch")
    days, rem = divmod(ns, NS_PER_DAY)
    try:
        date = dt.date.fromordinal(_EPOCH_ORDINAL + days)
    except (ValueError, OverflowError) as exc:
        raise InvalidNameError(f"invalid receive time {ns!r}: {exc}") from exc
    return date, rem // NS_PER_MS


def _check_id(kind: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise InvalidNameError(f"invalid {kind} {value!r}: expected an integer in 0..2**63-1")
    return value


@dataclass(frozen=True, slots=True)
class RawKey:
    """The parts of a raw object key; ``str(key.key)`` is the key itself."""

    exchange: str
    channel: str
    symbol: str
    date: dt.date
    region: str
    collector: str
    time_ms: int  # ms since UTC midnight of ``date``, of the first record's receive time
    first_id: int  # first event's U (Coinbase book: first sequence); 0 without ids
    last_id: int  # last event's u (Coinbase book: last sequence); 0 without ids

    def __post_init__(self) -> None:
        validate_channel(self.exchange, self.channel)
        validate_name("symbol", self.symbol)
        format_date(self.date)
        validate_name("region", self.region)
        validate_name("collector", self.collector)
        if (
            not isinstance(self.time_ms, int)
            or isinstance(self.time_ms, bool)
            or not 0 <= self.time_ms < MS_PER_DAY
        ):
            raise InvalidNameError(f"invalid time of day {self.time_ms!r}: expected 0..86399999 ms")
        _check_id("first id", self.first_id)
        _check_id("last id", self.last_id)

    @classmethod
    def from_recv(  # noqa: PLR0917 -- positional signature agreed with the collector
        cls,
        exchange: str,
        channel: str,
        symbol: str,
        region: str,
        collector: str,
        first_recv_ns: int,
        first_id: int,
        last_id: int,
    ) -> RawKey:
        """The key of an object whose first record was received at ``first_recv_ns``."""
        date, time_ms = _split_ns(first_recv_ns)
        return cls(exchange, channel, symbol, date, region, collector, time_ms, first_id, last_id)

    @property
    def source(self) -> str:
        """``region.collector``: which recording this object belongs to."""
        return f"{self.region}.{self.collector}"

    @property
    def start_ns(self) -> int:
        """Receive time of the first record in ns since the epoch (ms precision)."""
        days = self.date.toordinal() - _EPOCH_ORDINAL
        return days * NS_PER_DAY + self.time_ms * NS_PER_MS

    @property
    def key(self) -> str:
        hours, rem = divmod(self.time_ms, 3_600_000)
        minutes, rem = divmod(rem, 60_000)
        seconds, millis = divmod(rem, 1000)
        return (
            f"{raw_prefix(self.exchange, self.channel, self.symbol, self.date, self.source)}"
            f"{hours:02d}{minutes:02d}{seconds:02d}{millis:03d}"
            f"-{self.first_id}-{self.last_id}{RAW_SUFFIX}"
        )

    def __str__(self) -> str:
        return self.key


def parse_raw_key(key: str) -> RawKey:
    """Split a raw object key into its parts; anything off the layout is refused."""
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 7 or parts[0] != RAW_ROOT:
        raise KeyLayoutError(
            f"not a raw object key: {key!r}: expected "
            "raw/EXCHANGE/CHANNEL/SYMBOL/DATE/REGION.COLLECTOR/FILE"
        )
    _, exchange, channel, symbol, date_text, source, filename = parts
    match = _RAW_FILE_RE.fullmatch(filename)
    if match is None:
        raise KeyLayoutError(
            f"not a raw object key: {key!r}: file name is not HHMMSSmmm-FIRSTID-LASTID{RAW_SUFFIX}"
        )
    hours, minutes, seconds, millis = (int(g) for g in match.groups()[:4])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise KeyLayoutError(f"not a raw object key: {key!r}: no such time of day")
    time_ms = ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis
    try:
        region, collector = parse_source(source)
        parsed = RawKey(
            exchange,
            channel,
            symbol,
            parse_date(date_text),
            region,
            collector,
            time_ms,
            int(match[5]),
            int(match[6]),
        )
    except InvalidNameError as exc:
        raise KeyLayoutError(f"not a raw object key: {key!r}: {exc}") from exc
    assert parsed.key == key  # the layout admits exactly one spelling of each key
    return parsed


def raw_prefix(
    exchange: str,
    channel: str,
    symbol: str | None = None,
    date: dt.date | None = None,
    source: str | None = None,
) -> str:
    """A listing prefix under ``raw/``, ending with "/"; each level needs the one above."""
    parts = [RAW_ROOT, validate_exchange(exchange), validate_channel(exchange, channel)]
    levels = (("symbol", symbol), ("date", date), ("source", source))
    for (kind, value), (above, above_value) in zip(levels[1:], levels, strict=False):
        if value is not None and above_value is None:
            raise KeyLayoutError(f"raw prefix: {kind} given without {above}")
    if symbol is not None:
        parts.append(validate_name("symbol", symbol))
    if date is not None:
        parts.append(format_date(date))
    if source is not None:
        parse_source(source)
        parts.append(source)
    return "/".join(parts) + "/"


@dataclass(frozen=True, slots=True)
class CanonicalKey:
    """The parts of a canonical output key."""

    exchange: str
    channel: str
    symbol: str
    date: dt.date
    filename: str  # one of CANONICAL_FILES

    def __post_init__(self) -> None:
        canonical_prefix(self.exchange, self.channel, self.symbol, self.date)
        if self.filename not in CANONICAL_FILES:
            raise InvalidNameError(
                f"invalid canonical file name {self.filename!r}: expected "
                f"one of {', '.join(sorted(CANONICAL_FILES))}"
            )

    @property
    def key(self) -> str:
        return canonical_prefix(self.exchange, self.channel, self.symbol, self.date) + self.filename

    def __str__(self) -> str:
        return self.key


def canonical_prefix(exchange: str, channel: str, symbol: str, date: dt.date) -> str:
    """``canonical/{exchange}/{channel}/{SYMBOL}/{YYYY-MM-DD}/``: one merged day."""
    return (
        f"{CANONICAL_ROOT}/{validate_exchange(exchange)}/{validate_channel(exchange, channel)}"
        f"/{validate_name('symbol', symbol)}/{format_date(date)}/"
    )


def canonical_key(exchange: str, channel: str, symbol: str, date: dt.date, filename: str) -> str:
    """The key of one output file of a merged day."""
    return CanonicalKey(exchange, channel, symbol, date, filename).key


def parse_canonical_key(key: str) -> CanonicalKey:
    """Split a canonical output key into its parts; anything off the layout is refused."""
    parts = key.split("/") if isinstance(key, str) else []
    if len(parts) != 6 or parts[0] != CANONICAL_ROOT:
        raise KeyLayoutError(
            f"not a canonical key: {key!r}: expected canonical/EXCHANGE/CHANNEL/SYMBOL/DATE/FILE"
        )
    _, exchange, channel, symbol, date_text, filename = parts
    try:
        parsed = CanonicalKey(exchange, channel, symbol, parse_date(date_text), filename)
    except InvalidNameError as exc:
        raise KeyLayoutError(f"not a canonical key: {key!r}: {exc}") from exc
    return parsed


def status_key(
    kind: str, exchange: str, date: dt.date, shard: tuple[int, int] | None = None
) -> str:
    """``status/{kind}/{exchange}/{YYYY-MM-DD}.json`` (``kind`` is e.g. ``merge``).

    A run over shard I of N (``--shard I/N``) writes ``{YYYY-MM-DD}.shard-I-of-N.json``, so
    the pods of one Indexed Job do not overwrite each other's summary.
    """
    suffix = ""
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise InvalidNameError(f"shard {index}/{count}: expected 0 <= I < N")
        suffix = f".shard-{index}-of-{count}"
    return (
        f"{STATUS_ROOT}/{validate_name('status kind', kind)}/{validate_exchange(exchange)}"
        f"/{format_date(date)}{suffix}.json"
    )
