"""The rendered Kubernetes manifests, checked against what the code really accepts and serves.

Each collector container's command line, environment and mounted ConfigMap files are fed
to the collector's own parser and settings model (as the pod would start it); the probes
are asked of a real HealthServer; the merger's arguments go through the merger's parser.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import yaml

from collector import cli as collector_cli
from collector.config import CollectorSettings, load_settings
from collector.health import HealthServer
from collector.metrics import Metrics
from merger import cli as merger_cli
from tests.conftest import REPO
from tests.deploy.dockerfile import stages

REGIONS = ("eu", "us", "ap")
_ARGS, (_BUILD, IMAGE) = stages(REPO / "deploy" / "docker" / "Dockerfile")


def _docs(render: ModuleType, name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render.render(render.targets()[name])) if d]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def _workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return found


def _pod_env(
    container: dict[str, Any], config: dict[str, str], pod_name: str, pod_index: int
) -> dict[str, str]:
    """The container's environment as the kubelet would set it: image ENV, then env."""
    env = {k: v for k, v in IMAGE.env().items() if k.startswith("BOOKTAPE_")}
    for var in container.get("env", []):
        source = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in source:
            env[var["name"]] = config[source["configMapKeyRef"]["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = pod_name
        elif "pod-index" in source.get("fieldRef", {}).get("fieldPath", ""):
            env[var["name"]] = str(pod_index)
        else:
            env[var["name"]] = "0"  # a job completion index, set per pod below
    return env


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def _mounted(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            return dict(mount)
    return None


def _start_collector(
    docs: list[dict[str, Any]],
    pod_index: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> CollectorSettings:
    """Settings exactly as pod ``pod_index`` of the collector workload would load them."""
    workload = _workload(docs)
    config = _one(docs, "ConfigMap")["data"]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    pod_name = f"{workload['metadata']['name']}-{pod_index}"
    env = _pod_env(container, config, pod_name, pod_index)
    for key in [k for k in os.environ if k.startswith("BOOKTAPE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    files = tmp_path / f"pod-{pod_index}"
    files.mkdir()
    for name, text in config.items():
        (files / name).write_text(text)
    argv = _expand(container["args"], env)
    assert argv[0] == "collect"
    args = vars(collector_cli._parser().parse_args(argv[1:]))
    config_path = Path(args.pop("config"))
    assert config_path.parent == Path(config_mount["mountPath"])
    return load_settings(args, files / config_path.name)


@pytest.mark.parametrize("region", REGIONS)
def test_each_collector_pod_starts_with_valid_settings_for_its_region(
    render: ModuleType, region: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _docs(render, region)
    workload = _workload(docs)
    replicas = workload["spec"]["replicas"]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    pod = workload["spec"]["template"]["spec"]

    settings = [_start_collector(docs, i, tmp_path, monkeypatch) for i in range(replicas)]

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for s in settings:
        assert s.region == region
        assert s.store.startswith("s3://")
        assert s.http_port == ports["http"]
        assert s.http_host == "0.0.0.0"  # probes and Prometheus come from outside the pod
        mount = _mounted(container, str(s.spool_dir))
        assert mount is not None
        assert not mount.get("readOnly", False)
        # SIGTERM: stop the feed, then flush within the deadline; kill comes only after
        assert pod["terminationGracePeriodSeconds"] >= 2 * s.shutdown_deadline_s
    if workload["kind"] == "StatefulSet":  # shards: every symbol in exactly one pod
        symbols = [sym for s in settings for sym in s.symbols]
        assert len(symbols) == len(set(symbols))
        assert len({s.collector for s in settings}) == replicas


@pytest.mark.parametrize("region", REGIONS)
def test_collector_pods_run_unprivileged_on_a_read_only_root(
    render: ModuleType, region: str
) -> None:
    workload = _workload(_docs(render, region))
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    uid = int(str(IMAGE.last("USER")).split(":")[0])

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert _mounted(container, IMAGE.env()["TMPDIR"]) is not None
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


@pytest.mark.parametrize("region", REGIONS)
def test_the_disruption_budget_and_service_select_the_collector_pods(
    render: ModuleType, region: str
) -> None:
    docs = _docs(render, region)
    labels = _workload(docs)["spec"]["template"]["metadata"]["labels"]
    pdb = _one(docs, "PodDisruptionBudget")
    service = _one(docs, "Service")

    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert labels["booktape.io/region"] == region


async def test_the_probes_ask_endpoints_the_collector_serves(render: ModuleType) -> None:
    (container,) = _workload(_docs(render, "eu"))["spec"]["template"]["spec"]["containers"]
    paths = [container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
    annotations = _workload(_docs(render, "eu"))["spec"]["template"]["metadata"]["annotations"]
    paths.append(annotations["prometheus.io/path"])
    server = HealthServer("127.0.0.1", 0, Metrics(), lambda: ["no frame received yet"])
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for path in paths:
                async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                    statuses.append(response.status)
    finally:
        await server.stop()

    assert paths == ["/healthz", "/readyz", "/metrics"]
    assert statuses == [200, 503, 200]  # alive, not ready without frames, metrics served


def _merge_jobs(render: ModuleType) -> dict[str, dict[str, Any]]:
    return {
        name: _one(_docs(render, name), "CronJob")
        for name in ("eu", "bases/merger", "bases/merger-indexed")
    }


def test_exactly_one_region_runs_the_nightly_merge(render: ModuleType) -> None:
    with_merge = [r for r in REGIONS if any(d["kind"] == "CronJob" for d in _docs(render, r))]

    assert with_merge == ["eu"]


@pytest.mark.parametrize("name", ["eu", "bases/merger", "bases/merger-indexed"])
def test_the_merge_cronjob_is_utc_forbid_and_bounded(render: ModuleType, name: str) -> None:
    cron = _merge_jobs(render)[name]
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]

    assert cron["spec"]["timeZone"] == "Etc/UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0
    assert job["backoffLimit"] >= 1
    assert pod["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _mounted(container, "/tmp") is not None  # the merger's work files


@pytest.mark.parametrize("name", ["eu", "bases/merger", "bases/merger-indexed"])
def test_every_merge_pod_passes_the_merger_command_line(render: ModuleType, name: str) -> None:
    cron = _merge_jobs(render)[name]
    job = cron["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    config = _one(_docs(render, "eu"), "ConfigMap")["data"]
    indexed = job.get("completionMode") == "Indexed"
    pods = job["completions"] if indexed else 1

    shards = set()
    for index in range(pods):
        env = _pod_env(container, config, "merge", 0)
        env.update({k: str(index) for k in env if k == "SHARD_INDEX"})
        argv = _expand(container["args"], env)
        assert argv[0] == "merge"
        args = merger_cli._parser().parse_args(argv[1:])
        assert args.store == config["store"]
        shards.add(merger_cli.parse_shard(args.shard))

    if indexed:
        assert job["parallelism"] == job["completions"]
        assert shards == {(i, pods) for i in range(pods)}  # every shard once
    else:
        assert shards == {None}
