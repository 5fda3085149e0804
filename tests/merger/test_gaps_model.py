"""gaps.json: fields, derived figures and deterministic encoding."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from merger.gaps import build_report, decode_report, encode_report, gaps_per_million
from merger.model import Audit, Gap, GapLog, SourceStats

S = 1_000_000_000


def sample_log() -> GapLog:
    return GapLog(
        events=2_000_000,
        sources={
            "us.c1": SourceStats(events=1_900_000, first_update_id=1, last_update_id=9, gaps=2),
            "eu.c1": SourceStats(events=1_800_000, first_update_id=1, last_update_id=9, gaps=3),
        },
        filled={"eu.c1": 1_500_000, "us.c1": 500_000},
        unrecoverable=[
            Gap(101, 180, 10 * S, 12 * S + S // 2, {"key": "raw/k1", "lastUpdateId": 180}),
            Gap(501, 700, 50 * S, 60 * S, {"key": "raw/k2", "lastUpdateId": 700}),
        ],
        unusable_before_anchor=7,
        corrupt=[{"key": "raw/bad", "error": "damaged zstd data"}],
        audit=Audit(checked=4, matched=3, mismatched=1, first_mismatch={"lastUpdateId": 5}),
        crossed_books=2,
    )


def test_report_has_every_design_field_with_derived_figures() -> None:
    report = build_report(sample_log(), exchange="binance", symbol="BTCUSDT", date="2024-05-01")

    doc = orjson.loads(encode_report(report))

    assert {
        "exchange", "symbol", "date", "events", "sources", "filled", "unrecoverable",
        "unusable_before_anchor", "corrupt", "audit", "crossed_books", "gaps_per_million",
        "longest_gap_s",
    } <= set(doc)  # fmt: skip
    assert doc["unrecoverable"][0] == {
        "from_update_id": 101, "to_update_id": 180, "from_ts": 10 * S,
        "to_ts": 12 * S + S // 2, "duration_s": 2.5,
        "reanchored_on": {"key": "raw/k1", "lastUpdateId": 180},
    }  # fmt: skip
    assert doc["gaps_per_million"] == 1.0  # 2 gaps in 2 million events
    assert doc["longest_gap_s"] == 10.0
    assert doc["audit"] == {
        "checked": 4, "matched": 3, "mismatched": 1, "match_pct": 75.0,
        "first_mismatch": {"lastUpdateId": 5}, "points": [],
    }  # fmt: skip
    assert doc["sources"]["eu.c1"] == {
        "events": 1_800_000, "first_update_id": 1, "last_update_id": 9, "gaps": 3,
        "segments": [],
    }  # fmt: skip
    assert doc["corrupt"] == [{"key": "raw/bad", "error": "damaged zstd data"}]


def test_encoding_is_deterministic_sorted_and_round_trips() -> None:
    first = encode_report(build_report(sample_log(), exchange="binance", symbol="X", date="d"))
    second = encode_report(build_report(sample_log(), exchange="binance", symbol="X", date="d"))

    assert first == second
    assert list(orjson.loads(first)["sources"]) == ["eu.c1", "us.c1"]
    assert list(orjson.loads(first)) == sorted(orjson.loads(first))
    assert encode_report(decode_report(first)) == first


def test_an_empty_day_has_no_gaps_and_full_match() -> None:
    report = build_report(GapLog(), exchange="binance", symbol="X", date="2024-05-01")

    assert (report.gaps_per_million, report.longest_gap_s) == (0.0, 0.0)
    assert report.audit.match_pct == 100.0
    assert gaps_per_million(3, 1_500_000) == 2.0


def test_a_malformed_report_is_refused() -> None:
    with pytest.raises(ValidationError):
        decode_report(b'{"exchange": "binance"}')
