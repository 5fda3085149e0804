"""Collector settings: flags > BOOKTAPE_* env > TOML > defaults; bad input is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from booktape.binance import Market
from booktape.cli import main
from booktape.errors import ConfigError
from collector.cli import parse_duration
from collector.config import load_settings

BASE = {"symbols": "BTCUSDT", "region": "eu", "collector": "c1", "store": "/tmp/store"}


def test_defaults_follow_binance_and_design(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(BASE)

    assert settings.market is Market.SPOT
    assert settings.exchange_name == "binance"
    assert settings.ws_base == "wss://stream.binance.com:9443"
    assert settings.rest_base == "https://api.binance.com"
    assert (settings.rotation_s, settings.snapshot_limit, settings.shutdown_deadline_s) == (
        60.0, 1000, 20.0)  # fmt: skip
    assert settings.source == "eu.c1"


def test_flags_win_over_env_which_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[collector]\nregion = "file"\nrotation_s = 30\nsnapshot_limit = 500\n'
        'symbols = ["ethusdt", "BTCUSDT"]\ncollector = "c9"\nstore = "/tmp/s"\n'
    )
    monkeypatch.setenv("BOOKTAPE_REGION", "env")
    monkeypatch.setenv("BOOKTAPE_ROTATION_S", "45")

    settings = load_settings({"rotation_s": 10.0, "region": None}, config)

    assert settings.rotation_s == 10.0  # flag
    assert settings.region == "env"  # env over file
    assert settings.snapshot_limit == 500  # file over default
    assert settings.symbols == ("ETHUSDT", "BTCUSDT")  # normalised to upper case


def test_env_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKTAPE_SYMBOLS", "btcusdt, ethusdt")

    settings = load_settings({k: v for k, v in BASE.items() if k != "symbols"})

    assert settings.symbols == ("BTCUSDT", "ETHUSDT")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"symbols": "BTC/USDT"}, "invalid symbol"),
        ({"region": "eu.west"}, "invalid name"),
        ({"collector": "c 1"}, "invalid name"),
        ({"store": "ftp://x/y"}, "store URL"),
        ({"ws_url": "stream.binance.com"}, "base URL"),
        ({"snapshot_limit": 6000}, "snapshot_limit"),
        ({"market": "usdm", "snapshot_limit": 5000}, "exceeds 1000"),
        ({"symbols": ""}, "needs --symbols"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_settings_are_one_clear_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_settings({**BASE, **change})

    assert "\n" not in str(info.value)


def test_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[collector]\nrotaton_s = 5\n")

    with pytest.raises(ConfigError, match="rotaton_s"):
        load_settings(BASE, config)


def test_missing_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(BASE, tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[collector\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings(BASE, tmp_path / "bad.toml")


def test_cli_bad_config_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["collect", "--symbols", "BTC/USDT", "--region", "eu", "--collector", "c1",
                 "--store", "/tmp/x"])  # fmt: skip

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("booktape collect: symbols: invalid symbol")


def test_cli_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "--symbol", "BTCUSDT"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("7", 7.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
