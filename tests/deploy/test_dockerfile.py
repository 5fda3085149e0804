"""The container image's Dockerfile: linted, multi-stage, slim, non-root, read-only ready."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.deploy.dockerfile import stages

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
HADOLINT = REPO / ".venv" / "bin" / "hadolint"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(HADOLINT)

    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_would_catch_a_root_image(tmp_path: Path) -> None:
    """The linter really runs on our file: a copy that ends as root is flagged."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "USER root\n")

    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER should not be root


def test_the_image_is_multi_stage_slim_and_runs_unprivileged() -> None:
    args, (build, final, *rest) = stages(DOCKERFILE)

    assert rest == []
    assert build.name == "build"
    assert build.base == final.base == args["PYTHON_IMAGE"]
    assert "slim" in final.base
    user = final.last("USER")
    assert user is not None
    uid, _, gid = user.partition(":")
    assert int(uid) >= 1000
    assert int(gid) >= 1000
    # the final stage takes only the virtualenv from the build stage: no sources, no wheels
    copies = final.of("COPY")
    assert [c.args for c in copies] == ["--from=build /opt/booktape /opt/booktape"]
    assert final.last("ENTRYPOINT") == '["booktape"]'


def test_everything_written_at_run_time_is_on_a_volume() -> None:
    """With a read-only root filesystem only volumes are writable: spool and /tmp."""
    _, (_, final) = stages(DOCKERFILE)
    env = final.env()
    volumes = final.volumes()

    def on_volume(path: str) -> bool:
        return any(path == v or path.startswith(v.rstrip("/") + "/") for v in volumes)

    assert on_volume(env["BOOKTAPE_SPOOL_DIR"])
    assert on_volume(env["TMPDIR"])
    assert on_volume(env["HOME"])
    assert on_volume(str(final.last("WORKDIR")))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # no __pycache__ writes into /opt


def test_the_build_context_holds_only_what_the_dockerfile_copies() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    _, (build, _) = stages(DOCKERFILE)
    sources: set[str] = set()
    for inst in build.of("COPY"):
        *srcs, _dst = inst.args.split()
        sources.update(s.rstrip("/").removeprefix("./") for s in srcs)

    assert "*" in ignore  # everything else (.venv, tests, data, .git) stays out
    assert sources == allowed
    assert all((REPO / s).exists() for s in sources)
