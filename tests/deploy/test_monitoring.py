"""deploy/monitoring: alert rules and dashboard use only metrics the code really exports.

The exported names and labels come from a live collector registry (collector.metrics.
Metrics, rendered as Prometheus text) and from the merger's --metrics-file text
(merger.cli.metrics_text); nothing is listed by hand except the few series that other
exporters provide (Prometheus's ``up``, kube-state-metrics for the CronJob).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import Metrics
from merger import cli as merger_cli
from merger.day import DayResult, SymbolResult
from tests.conftest import REPO

MONITORING = REPO / "deploy" / "monitoring"
# series from other exporters: Prometheus itself, kube-state-metrics (merge CronJob)
EXTERNAL = {
    "up": {"job", "instance"},
    "kube_job_status_failed": {"job_name", "namespace"},
    "kube_cronjob_status_last_successful_time": {"cronjob", "namespace"},
}
TARGET_LABELS = {"job", "instance", "region", "namespace", "pod", "le"}  # added by scraping
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def _exported(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, from Prometheus exposition text."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, set())
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def collector_series() -> dict[str, set[str]]:
    metrics = Metrics()
    for value in vars(metrics).values():  # one child per labelled metric, so it is exported
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*("x" for _ in value._labelnames))
    return _exported(metrics.render().decode())


def merger_series() -> dict[str, set[str]]:
    day = DayResult("binance", dt.date(2026, 1, 2), {"BTCUSDT": SymbolResult("BTCUSDT", "merged")})
    return _exported(merger_cli.metrics_text([day], now_s=0.0, last_success_s=0.0))


SERIES = {**collector_series(), **merger_series(), **EXTERNAL}


def _strip(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    return re.sub(r"\[[^\]]*\]", "", expr)  # range selectors


def metric_uses(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names it is filtered or grouped by) of each selector in ``expr``."""
    clean = _strip(expr)
    grouping = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", clean):
        grouping |= {g.strip() for g in group.split(",") if g.strip()}
    clean = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", clean)
    uses = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", clean):
        name, matchers, call = match.groups()
        if call or name.lower() in PROMQL_WORDS:
            continue  # a function such as rate( or a keyword
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""))
        uses.append((name, labels | grouping))
    return uses


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_the_real_exporters_are_read() -> None:
    assert "booktape_frames_total" in SERIES
    assert SERIES["booktape_frames_total"] == {"symbol"}
    assert "booktape_upload_seconds_bucket" in SERIES
    assert SERIES["booktape_merge_unrecoverable_gaps"] == {"exchange", "symbol", "date"}


def test_the_expression_reader_finds_metrics_and_labels() -> None:
    expr = (
        "time() - max by (region, symbol) (booktape_last_frame_timestamp_seconds) > 60 "
        'and increase(booktape_rest_responses_total{status="418"}[15m]) > 0'
    )

    uses = metric_uses(expr)

    assert [name for name, _ in uses] == [
        "booktape_last_frame_timestamp_seconds", "booktape_rest_responses_total",
    ]  # fmt: skip
    assert uses[1][1] == {"status", "region", "symbol"}


def _check(expr: str) -> None:
    uses = metric_uses(expr)
    assert uses, f"no metric in {expr!r}"
    for name, labels in uses:
        assert name in SERIES, f"{name} is not exported by booktape: {expr!r}"
        unknown = labels - SERIES[name] - TARGET_LABELS
        assert not unknown, f"{name} has no label {unknown}: {expr!r}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_each_alert_uses_real_metrics_and_is_complete(rule: dict[str, Any]) -> None:
    _check(rule["expr"])

    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_every_issue_named_alert_exists() -> None:
    exprs = {r["alert"]: r["expr"] for r in _rules()}

    assert "booktape_last_frame_timestamp_seconds" in exprs["BooktapeNoFrames"]
    assert "booktape_spool_bytes" in exprs["BooktapeSpoolGrowing"]
    assert "booktape_upload_failures_total" in exprs["BooktapeUploadsFailing"]
    assert "418" in exprs["BooktapeRestBanned"]
    assert "booktape_merge_failed_symbols" in exprs["BooktapeMergeFailed"]
    assert "booktape_merge_last_success_timestamp_seconds" in exprs["BooktapeMergeMissing"]
    assert "booktape_merge_unrecoverable_gaps" in exprs["BooktapeUnrecoverableGaps"]


def test_alert_names_are_unique() -> None:
    names = [r["alert"] for r in _rules()]

    assert len(names) == len(set(names))


@pytest.mark.parametrize("expr", _dashboard_exprs())
def test_each_dashboard_query_uses_real_metrics(expr: str) -> None:
    _check(expr.replace("$region", ".*"))


def test_the_dashboard_is_laid_out_without_overlaps() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {(pos["x"] + i, pos["y"] + j) for i in range(pos["w"]) for j in range(pos["h"])}
        assert not (mine & cells), panel["title"]
        cells |= mine
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_the_scrape_config_matches_the_pod_annotations(render: Any) -> None:
    scrape = yaml.safe_load((MONITORING / "prometheus-scrape.yaml").read_text())
    (k8s_job,) = [j for j in scrape["scrape_configs"] if "kubernetes_sd_configs" in j]
    docs = yaml.safe_load_all(render.render(render.targets()["eu"]))
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]["metadata"]

    def meta(name: str, prefix: str) -> str:
        return prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)

    sources = {s for rule in k8s_job["relabel_configs"] for s in rule.get("source_labels", [])}
    for annotation in template["annotations"]:
        assert meta(annotation, "__meta_kubernetes_pod_annotation_") in sources
    assert meta("booktape.io/region", "__meta_kubernetes_pod_label_") in sources
    assert "booktape.io/region" in template["labels"]
    for rule in k8s_job["relabel_configs"]:
        re.compile(rule.get("regex", "(.*)"))
    assert k8s_job["job_name"] == "booktape-collector"  # the alerts' up{job=...}
