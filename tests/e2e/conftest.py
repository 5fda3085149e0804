"""End-to-end fixtures: a real S3 server (rclone) on loopback, test credentials in env."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3servers import S3Server, rclone_argv, sandbox_env, start_server, stop_server


@pytest.fixture(scope="module")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    base = tmp_path_factory.mktemp("rclone-e2e")
    with pytest.MonkeyPatch.context() as mp:
        sandbox_env(mp, base / "aws-absent")
        server = start_server("rclone", rclone_argv(base), base / "rclone.log")
        yield server
        stop_server(server.process)
