"""Object-key layout: names, raw keys, canonical keys, dates from receive times."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from booktape.errors import InvalidNameError, KeyLayoutError
from booktape.keys import (
    CANONICAL_FILES,
    EXCHANGE_CHANNELS,
    MAX_ID,
    CanonicalKey,
    RawKey,
    canonical_key,
    canonical_prefix,
    make_source,
    parse_canonical_key,
    parse_date,
    parse_raw_key,
    parse_source,
    raw_prefix,
    status_key,
    utc_date_of_ns,
    validate_channel,
    validate_exchange,
    validate_name,
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
names = st.text(alphabet=ALPHABET, min_size=1, max_size=64)
pairs = st.sampled_from([(e, c) for e, cs in EXCHANGE_CHANNELS.items() for c in cs])
ids = st.integers(min_value=0, max_value=MAX_ID)
NS_2024_08_09 = 1_723_161_600 * 10**9  # 2024-08-09T00:00:00Z
KEY = "raw/binance/depth/BTCUSDT/2024-08-09/eu.c1/093015250-50093239189-50093239202.jsonl.zst"


@pytest.mark.parametrize("value", ["BTCUSDT", "BTC-USD", "eu_west-1", "c1", "a" * 64, "0"])
def test_valid_names_are_returned_unchanged(value: str) -> None:
    assert validate_name("symbol", value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a/b",
        "..",
        ".",
        "eu.west",
        " eu",
        "eu ",
        "eu\n",
        "eu\t",
        "é",
        "BTC\u0661",
        "ＡＢＣ",
        "a" * 65,
        "a\x00",
        "a\\b",
        "a:b",
    ],
)
def test_invalid_names_are_refused_with_kind_and_value(value: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_name("region", value)
    assert "region" in str(info.value)
    assert repr(value) in str(info.value)


@given(prefix=st.text(max_size=5), bad=st.characters(), suffix=st.text(max_size=5))
def test_any_name_with_a_char_outside_the_alphabet_is_refused(
    prefix: str, bad: str, suffix: str
) -> None:
    if bad in ALPHABET:
        bad = "/"
    with pytest.raises(InvalidNameError):
        validate_name("collector", prefix + bad + suffix)


@given(names)
def test_any_name_from_the_alphabet_is_accepted(value: str) -> None:
    assert validate_name("symbol", value) == value


def test_exchange_and_channel_pairs() -> None:
    assert validate_exchange("binance-usdm") == "binance-usdm"
    assert validate_channel("coinbase", "prices") == "prices"
    with pytest.raises(InvalidNameError, match="kraken"):
        validate_exchange("kraken")
    with pytest.raises(InvalidNameError, match="'book' for exchange 'binance'"):
        validate_channel("binance", "book")
    with pytest.raises(InvalidNameError):
        validate_channel("coinbase", "depth")


def test_raw_key_layout() -> None:
    key = RawKey.from_recv(
        "binance",
        "depth",
        "BTCUSDT",
        "eu",
        "c1",
        NS_2024_08_09 + (9 * 3600 + 30 * 60 + 15) * 10**9 + 250_999_999,
        50093239189,
        50093239202,
    )

    assert key.key == KEY
    assert str(key) == KEY
    assert key.source == "eu.c1"
    assert key.date == dt.date(2024, 8, 9)
    assert key.start_ns == NS_2024_08_09 + (9 * 3600 + 30 * 60 + 15) * 10**9 + 250_000_000
    assert parse_raw_key(KEY) == key


@pytest.mark.parametrize(
    ("ns", "date", "stamp"),
    [
        (NS_2024_08_09 - 1, dt.date(2024, 8, 8), "235959999"),
        (NS_2024_08_09 - 1_000_000, dt.date(2024, 8, 8), "235959999"),
        (NS_2024_08_09 - 1_000_001, dt.date(2024, 8, 8), "235959998"),
        (NS_2024_08_09, dt.date(2024, 8, 9), "000000000"),
        (NS_2024_08_09 + 999_999, dt.date(2024, 8, 9), "000000000"),
        (0, dt.date(1970, 1, 1), "000000000"),
    ],
)
def test_date_and_time_of_day_at_midnight_edges(ns: int, date: dt.date, stamp: str) -> None:
    key = RawKey.from_recv("coinbase", "prices", "BTC", "us", "c2", ns, 0, 0)

    assert key.date == date == utc_date_of_ns(ns)
    assert key.key.endswith(f"/{date.isoformat()}/us.c2/{stamp}-0-0.jsonl.zst")
    assert key.start_ns == ns - ns % 1_000_000


@settings(max_examples=200)
@given(
    pair=pairs,
    symbol=names,
    region=names,
    collector=names,
    ns=st.integers(min_value=0, max_value=2**63 - 1),
    first=ids,
    last=ids,
)
def test_raw_key_round_trip(
    pair: tuple[str, str], symbol: str, region: str, collector: str, ns: int, first: int, last: int
) -> None:
    key = RawKey.from_recv(pair[0], pair[1], symbol, region, collector, ns, first, last)

    parsed = parse_raw_key(key.key)

    assert parsed == key
    assert parsed.key == key.key
    assert 0 <= ns - parsed.start_ns < 1_000_000
    assert parsed.date == utc_date_of_ns(ns)


@pytest.mark.parametrize(
    "bad",
    [
        KEY.replace("raw/", "raw//"),  # empty segment
        KEY.replace("raw/", ""),  # too few segments
        KEY.replace("/eu.c1/", "/eu.c1/x/"),  # too many segments
        "/" + KEY,
        KEY.replace("raw/", "rav/"),
        KEY.replace("eu.c1", "eu.west.c1"),  # dot in region
        KEY.replace("eu.c1", "euc1"),  # no source separator
        KEY.replace("eu.c1", "eu."),
        KEY.replace("093015250", "243015250"),  # hour 24
        KEY.replace("093015250", "096015250"),  # minute 60
        KEY.replace("093015250", "093060250"),  # second 60
        KEY.replace("093015250", "93015250"),  # 8 digits
        KEY.replace("093015250", "0930152500"),  # 10 digits
        KEY.replace("-50093239189-", "-050093239189-"),  # leading zero
        KEY.replace("-50093239189-", "--50093239189-"),  # negative
        KEY.replace("-50093239189-", "-+50093239189-"),
        KEY.replace("-50093239202.", "-00."),
        KEY.replace("-50093239202.", f"-{2**63}."),  # beyond int64
        KEY + ".tmp",  # extra suffix
        KEY.replace(".jsonl.zst", ".jsonl"),
        KEY.replace("2024-08-09", "2024-8-9"),
        KEY.replace("2024-08-09", "2024-02-30"),
        KEY.replace("binance/depth", "binance/book"),  # invalid pair
        KEY.replace("binance/", "kraken/"),
        KEY.replace("BTCUSDT", "BTC USDT"),
        KEY.replace("093015250", "٠٩٣٠١٥٢٥٠"),  # non-ASCII digits
        KEY + "\n",
        "",
    ],
)
def test_parse_raw_key_refuses_malformed_keys(bad: str) -> None:
    with pytest.raises(KeyLayoutError) as info:
        parse_raw_key(bad)
    assert repr(bad) in str(info.value)


def test_raw_key_refuses_bad_parts() -> None:
    with pytest.raises(InvalidNameError):
        RawKey("binance", "depth", "BTCUSDT", dt.date(2024, 1, 1), "eu", "c1", 86_400_000, 0, 0)
    with pytest.raises(InvalidNameError):
        RawKey("binance", "depth", "BTCUSDT", dt.date(2024, 1, 1), "eu", "c1", 0, -1, 0)
    with pytest.raises(InvalidNameError):
        RawKey("binance", "depth", "BTCUSDT", dt.datetime(2024, 1, 1), "eu", "c1", 0, 0, 0)
    with pytest.raises(InvalidNameError):
        RawKey.from_recv("binance", "depth", "BTCUSDT", "eu", "c1", -1, 0, 0)


def test_raw_prefixes_for_listing() -> None:
    day = dt.date(2024, 8, 9)

    assert raw_prefix("binance", "depth") == "raw/binance/depth/"
    assert raw_prefix("binance", "depth", "BTCUSDT") == "raw/binance/depth/BTCUSDT/"
    assert raw_prefix("binance", "depth", "BTCUSDT", day) == "raw/binance/depth/BTCUSDT/2024-08-09/"
    assert KEY.startswith(raw_prefix("binance", "depth", "BTCUSDT", day, "eu.c1"))
    with pytest.raises(KeyLayoutError):
        raw_prefix("binance", "depth", None, day)
    with pytest.raises(KeyLayoutError):
        raw_prefix("binance", "depth", "BTCUSDT", None, "eu.c1")
    with pytest.raises(InvalidNameError):
        raw_prefix("binance", "depth", "BTCUSDT", day, "eu/c1")


def test_sources() -> None:
    assert make_source("eu", "c1") == "eu.c1"
    assert parse_source("eu.c1") == ("eu", "c1")
    for bad in ("euc1", "eu.c.1", ".c1", "eu."):
        with pytest.raises(InvalidNameError):
            parse_source(bad)


@pytest.mark.parametrize("filename", sorted(CANONICAL_FILES))
def test_canonical_keys_round_trip(filename: str) -> None:
    key = canonical_key("coinbase", "book", "BTC-USD", dt.date(2024, 8, 9), filename)

    assert key == f"canonical/coinbase/book/BTC-USD/2024-08-09/{filename}"
    assert key.startswith(canonical_prefix("coinbase", "book", "BTC-USD", dt.date(2024, 8, 9)))
    assert parse_canonical_key(key) == CanonicalKey(
        "coinbase", "book", "BTC-USD", dt.date(2024, 8, 9), filename
    )


@pytest.mark.parametrize(
    "bad",
    [
        "canonical/binance/depth/BTCUSDT/2024-08-09/other.parquet",
        "canonical/binance/depth/BTCUSDT/2024-08-09/",
        "canonical/binance/depth/BTCUSDT/levels.parquet",
        "canonical/binance/book/BTCUSDT/2024-08-09/levels.parquet",
        "raw/binance/depth/BTCUSDT/2024-08-09/levels.parquet",
        "canonical/binance/depth/BTC.USDT/2024-08-09/levels.parquet",
    ],
)
def test_parse_canonical_key_refuses_malformed_keys(bad: str) -> None:
    with pytest.raises(KeyLayoutError, match="not a canonical key"):
        parse_canonical_key(bad)


def test_canonical_key_refuses_unknown_file() -> None:
    with pytest.raises(InvalidNameError, match="canonical file name"):
        canonical_key("binance", "depth", "BTCUSDT", dt.date(2024, 8, 9), "../x")


def test_status_key() -> None:
    key = status_key("merge", "binance", dt.date(2024, 8, 9))

    assert key == "status/merge/binance/2024-08-09.json"
    with pytest.raises(InvalidNameError):
        status_key("merge/..", "binance", dt.date(2024, 8, 9))


def test_parse_date() -> None:
    assert parse_date("2024-02-29") == dt.date(2024, 2, 29)
    for bad in (
        "2023-02-29",
        "2024-8-9",
        "20240809",
        "2024-08-09\n",
        " 2024-08-09",
        "２０２４-08-09",
        "0000-01-01",
        "2024-13-01",
        "",
    ):
        with pytest.raises(InvalidNameError, match="invalid date"):
            parse_date(bad)
