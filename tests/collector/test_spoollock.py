"""One collector per spool directory: a second one refuses to start and touches nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from booktape.cli import main
from collector.config import CollectorSettings
from collector.service import run_collector
from collector.spoollock import SpoolInUseError, hold_spool_lock

HOLDER = """
import sys, time
from collector.spoollock import hold_spool_lock
with hold_spool_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process that holds the lock of ``tmp_path / "spool"``."""
    spool = tmp_path / "spool"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(spool)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "locked\n"
            yield spool, child
        finally:
            child.kill()
            child.wait(10)


def left_by_a_crash(spool: Path) -> dict[Path, bytes]:
    """An open chunk and a sealed one, as a crashed collector leaves them."""
    files = {
        spool / "open/binance/depth/BTCUSDT/1767225600000000000.jsonl": b'{"k":"hdr"}\n',
        spool / "sealed/raw/some/key.jsonl.zst": b"sealed bytes",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def contents(spool: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in spool.rglob("*") if p.is_file()}


async def test_a_second_collector_on_a_held_spool_fails_before_touching_it(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    spool, _ = holder
    files = left_by_a_crash(spool)
    settings = CollectorSettings(
        region="eu", collector="c1", store=str(tmp_path / "store"), symbols="BTCUSDT",
        spool_dir=spool, ws_url="ws://127.0.0.1:9", rest_url="http://127.0.0.1:9",
    )  # fmt: skip

    with pytest.raises(SpoolInUseError, match="in use by another process"):
        await asyncio.wait_for(run_collector(settings, handle_signals=False), 10.0)

    assert contents(spool) == files  # nothing recovered, sealed, uploaded or deleted
    assert not (tmp_path / "store").exists()


def test_the_cli_says_so_in_one_line_and_exits_2(
    holder: tuple[Path, subprocess.Popen[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, _ = holder
    code = main([
        "collect", "--exchange", "binance", "--symbols", "BTCUSDT", "--region", "eu",
        "--collector", "c1", "--store", str(tmp_path / "store"), "--spool-dir", str(spool),
        "--ws-url", "ws://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert f"spool directory {spool} is in use" in err


def test_the_lock_dies_with_its_holder_even_on_kill_9(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    spool, child = holder
    with pytest.raises(SpoolInUseError), hold_spool_lock(spool):
        pass
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    with hold_spool_lock(spool) as held:  # free again: no stale lock to clean up
        assert held == spool
        with pytest.raises(SpoolInUseError), hold_spool_lock(spool):  # exclusive in-process too
            pass
    assert sorted(os.listdir(spool)) == []  # no lock file left behind
