"""The image's install steps, run for real in a fresh virtualenv, then the installed booktape.

The steps are the Dockerfile's own: the build stage's COPY lines lay out the source tree
and its ``RUN booktape-install ...`` lines (deploy/docker/install.sh) are executed with the
image's paths mapped under a temporary root. The wheel is built, installed alone into a
new virtualenv (dependencies from the package index), and that installation - not this
checkout - runs ``booktape --help``, the simulator and a short collect, with the final
stage's ENV. Nothing may be written into the installed tree (the image runs read-only).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from booktape.codec import Msg
from booktape.keys import parse_raw_key
from booktape.objects import read_object
from tests.conftest import REPO
from tests.deploy.dockerfile import Stage, stages

DOCKER = REPO / "deploy" / "docker"
IMAGE_DIRS = ("/opt/", "/var/", "/tmp", "/src", "/wheels")


def _map(value: str, root: Path) -> str:
    """Map the image's absolute paths (also inside ``a:b`` lists) under ``root``."""
    parts = value.split(":")
    return ":".join(str(root) + p if p.startswith(IMAGE_DIRS) else p for p in parts)


def _layout_sources(build: Stage, root: Path) -> Path:
    """Do the build stage's COPY lines (from the repository) under ``root``."""
    workdir = root / str(build.last("WORKDIR")).lstrip("/")
    for inst in build.of("COPY"):
        *srcs, dst = inst.args.split()
        target = Path(_map(dst, root)) if dst.startswith("/") else workdir / dst
        for src in srcs:
            origin = REPO / src
            if origin.is_dir():
                shutil.copytree(
                    origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
                )
            else:
                dest = target / origin.name if dst.endswith("/") else target
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest)
    return workdir


def _install_commands(build: Stage) -> list[list[str]]:
    """The ``booktape-install ...`` commands of the build stage's RUN lines, in order."""
    commands: list[list[str]] = []
    for inst in build.of("RUN"):
        for part in inst.args.split("&&"):
            words = shlex.split(part)
            assert words[0] == "booktape-install", f"unexpected build step: {part!r}"
            commands.append(words[1:])
    return commands


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    }


def _read_ready_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    """The simulator's first stdout line (flushed once it listens; the test timeout bounds it)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the simulator printed no ready line"
    info: dict[str, object] = json.loads(line)
    return info


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_dockerfile_install_steps_give_a_working_booktape(tmp_path: Path) -> None:
    # Arrange: the image's file system under a temporary root, built by its own steps
    root = tmp_path / "root"
    _, (build, final) = stages(DOCKER / "Dockerfile")
    _layout_sources(build, root)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHON": getattr(sys, "_base_executable", sys.executable),  # not this checkout's venv
        # the image's build ENV, except that reruns of this test may use pip's cache
        **{k: v for k, v in build.env().items() if k != "PIP_NO_CACHE_DIR"},
    }
    for home in ("HOME", "XDG_CACHE_HOME"):
        if home in os.environ:
            env[home] = os.environ[home]
    for words in _install_commands(build):
        subprocess.run(
            [str(DOCKER / "install.sh"), *(_map(w, root) for w in words)],
            env=env,
            cwd=tmp_path,
            check=True,
            timeout=360,
        )
    venv = root / "opt" / "booktape"
    run_env = {
        k: _map(v.replace("$PATH", os.environ["PATH"]), root) for k, v in final.env().items()
    }
    workdir = Path(_map(str(final.last("WORKDIR")), root))
    for path in (workdir, Path(run_env["TMPDIR"]), Path(run_env["BOOKTAPE_SPOOL_DIR"])):
        path.mkdir(parents=True, exist_ok=True)
    run_env["BOOKTAPE_HTTP_HOST"] = "127.0.0.1"
    run_env["BOOKTAPE_HTTP_PORT"] = "0"
    before = _tree(venv)
    booktape = str(venv / "bin" / "booktape")

    # Act 1: the installed entry point, importing the installed packages, not this checkout
    helped = subprocess.run(
        [booktape, "--help"], env=run_env, cwd=workdir, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import collector; print(collector.__file__)"],
        env=run_env, cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    accelerated = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from booktape import bookside, fastframe; "
         "print(fastframe.ACCELERATED, bookside.ACCELERATED)"],
        env=run_env, cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    # Act 2: a short collect against the simulator, both run from the installation
    store = tmp_path / "store"
    sim = subprocess.Popen(
        [booktape, "sim", "--host", "127.0.0.1", "--port", "0", "--regions", "eu",
         "--symbols", "BTCUSDT", "--log-level", "warning"],
        env=run_env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        info = _read_ready_line(sim)
        collect = subprocess.Popen(
            [booktape, "collect", "--exchange", "binance", "--symbols", "BTCUSDT",
             "--region", "eu", "--collector", "c1", "--store", str(store),
             "--ws-url", str(info["binance_ws"]), "--rest-url", str(info["binance_rest"]),
             "--rotation", "1s"],
            env=run_env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(4.0)
        collect.send_signal(signal.SIGTERM)
        _, collect_err = collect.communicate(timeout=60)
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.communicate(timeout=30)

    # Assert
    assert helped.returncode == 0, helped.stderr
    assert "collect" in helped.stdout
    assert "merge" in helped.stdout
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)
    assert accelerated.stdout.strip() == "True True", accelerated.stderr  # the wheel's C parts
    assert collect.returncode == 0, collect_err
    objects = sorted((store / "raw").rglob("*.jsonl.zst"))
    assert len(objects) >= 2, f"expected raw objects, found {objects}"
    today = dt.datetime.now(dt.UTC).date()
    previous_u = None
    total = 0
    for path in objects:
        key = parse_raw_key(str(path.relative_to(store)))
        assert (key.exchange, key.symbol, key.region, key.collector) == (
            "binance", "BTCUSDT", "eu", "c1",
        )  # fmt: skip
        assert key.date in (today, today - dt.timedelta(days=1))
        result = read_object(path.read_bytes(), path.name)
        assert not result.truncated
        events = [json.loads(r.raw)["data"] for r in result.records if isinstance(r, Msg)]
        total += len(events)
        if not events:  # a rotation with only a snapshot or connection records in it
            assert (key.first_id, key.last_id) == (0, 0), f"{path.name} names ids it lacks"
            continue
        assert (events[0]["U"], events[-1]["u"]) == (key.first_id, key.last_id)
        for event in events:  # one continuous stream across the objects
            if previous_u is not None:
                assert event["U"] == previous_u + 1
            previous_u = event["u"]
    assert total >= 10, "the collect recorded (almost) no frames"
    assert _tree(venv) == before, "the run wrote into the installed tree (read-only in the image)"
    assert {p.name for p in workdir.iterdir()} <= {"spool"}
