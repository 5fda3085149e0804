"""deploy/systemd: the units verify cleanly and start booktape as its parsers expect."""

from __future__ import annotations

import datetime as dt
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from collector import cli as collector_cli
from collector.config import CollectorSettings
from merger import cli as merger_cli
from tests.conftest import REPO

SYSTEMD = REPO / "deploy" / "systemd"
UNITS = ("booktape-collector@.service", "booktape-merge.service", "booktape-merge.timer")
INSTALLED = "/opt/booktape/bin/booktape"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return found


def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def _verify(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), "verify", *names],
        cwd=directory, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _installed_copy(tmp_path: Path) -> Path:
    """The units as installed, with booktape at this checkout's entry point (verify wants
    the ExecStart binary to exist)."""
    booktape = REPO / ".venv" / "bin" / "booktape"
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace(INSTALLED, str(booktape))
        (tmp_path / name).write_text(text)
    return tmp_path


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    directory = _installed_copy(tmp_path)

    result = _verify(
        directory, "booktape-collector@c1.service", "booktape-merge.service",
        "booktape-merge.timer",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_reports_a_misspelt_setting(tmp_path: Path) -> None:
    directory = _installed_copy(tmp_path)
    unit = directory / "booktape-collector@.service"
    unit.write_text(unit.read_text().replace("Restart=always", "Restrt=always"))

    result = _verify(directory, "booktape-collector@c1.service")

    assert "Restrt" in result.stderr


def test_the_collector_restarts_always_and_outwaits_the_flush() -> None:
    service = _unit("booktape-collector@.service")["Service"]
    exec_start = shlex.split(service["ExecStart"][0].replace("%i", "c1"))

    args = vars(collector_cli._parser().parse_args(exec_start[2:]))

    assert exec_start[:2] == [INSTALLED, "collect"]
    assert args["collector"] == "c1"
    assert service["Restart"] == ["always"]
    timeout = int(service["TimeoutStopSec"][0].removesuffix("s"))
    deadline = CollectorSettings.model_fields["shutdown_deadline_s"].default
    assert timeout >= 2 * deadline
    spool = dict(e.split("=", 1) for e in service["Environment"])["BOOKTAPE_SPOOL_DIR"]
    assert spool.startswith("/var/lib/" + service["StateDirectory"][0])
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert service[option] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["CapabilityBoundingSet"] == [""]


def test_the_merge_command_line_is_one_the_merger_accepts() -> None:
    service = _unit("booktape-merge.service")["Service"]
    line = service["ExecStart"][0].replace("${BOOKTAPE_STORE}", "s3://bucket/prefix")
    argv = shlex.split(line)

    args = merger_cli._parser().parse_args(argv[2:])

    assert argv[:2] == [INSTALLED, "merge"]
    assert service["Type"] == ["oneshot"]
    assert args.store == "s3://bucket/prefix"
    assert str(args.metrics_file).startswith("/var/lib/" + service["StateDirectory"][0])
    assert args.date is None  # yesterday, UTC


def test_the_timer_fires_at_half_past_midnight_utc() -> None:
    timer = _unit("booktape-merge.timer")["Timer"]
    assert timer["Unit"] == ["booktape-merge.service"]
    assert timer["Persistent"] == ["true"]

    result = subprocess.run(
        [_analyze(), "calendar", "--iterations=2", timer["OnCalendar"][0]],
        capture_output=True, text=True, timeout=30, check=True, env={"TZ": "America/New_York"},
    )  # fmt: skip

    utc = re.findall(r"\(in UTC\): \w+ (\S+ \S+) UTC", result.stdout)
    assert len(utc) == 2, result.stdout
    first, second = (dt.datetime.fromisoformat(u) for u in utc)
    assert (first.hour, first.minute, first.second) == (0, 30, 0)
    assert second - first == dt.timedelta(days=1)


def test_the_sysusers_entry_creates_the_service_user() -> None:
    entries = [
        shlex.split(line)
        for line in (SYSTEMD / "booktape.sysusers.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    users = {_unit(u)["Service"]["User"][0] for u in UNITS if u.endswith(".service")}

    assert [(e[0], e[1]) for e in entries] == [("u", "booktape")]
    assert users == {"booktape"}
