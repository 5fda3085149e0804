"""deploy/policies: least privilege, checked against the S3 calls the store really makes.

The S3 operations are read from booktape/stores/s3.py's syntax tree (``self._request(...,
"op", ...)`` and ``client.op(...)``), following calls between the store's own methods, so
a new call in the upload path that the collector policy does not allow fails here.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from typing import Any

import pytest

from tests.conftest import REPO

POLICIES = REPO / "deploy" / "policies"
S3_STORE = REPO / "booktape" / "stores" / "s3.py"
BUCKET, PREFIX = "booktape-data", "prod"
# S3 API operation -> the IAM action that authorises it (AWS service authorization reference)
IAM_ACTION = {
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "list_objects_v2": "s3:ListBucket",
    "delete_object": "s3:DeleteObject",
}


def _store_calls() -> dict[str, tuple[set[str], set[str]]]:
    """S3Store method -> (S3 operations it calls directly, store methods it calls)."""
    tree = ast.parse(S3_STORE.read_text())
    (store,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "S3Store"]
    out: dict[str, tuple[set[str], set[str]]] = {}
    for method in store.body:
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        ops: set[str] = set()
        calls: set[str] = set()
        for node in ast.walk(method):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner, name = node.func.value, node.func.attr
            if isinstance(owner, ast.Name) and owner.id == "self":
                calls.add(name)
                if name == "_request":
                    op = node.args[2]
                    assert isinstance(op, ast.Constant)
                    ops.add(str(op.value))
            elif isinstance(owner, ast.Name) and owner.id == "client":
                ops.add(name)
        out[method.name] = (ops, calls)
    return out


def _operations(*entry_points: str) -> set[str]:
    calls = _store_calls()
    seen: set[str] = set()
    todo = list(entry_points)
    ops: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in calls:
            continue
        seen.add(name)
        direct, more = calls[name]
        ops |= direct
        todo += more
    return ops


def _policy(name: str) -> list[dict[str, Any]]:
    doc = json.loads((POLICIES / name).read_text())
    assert doc["Version"] == "2012-10-17"
    statements: list[dict[str, Any]] = doc["Statement"]
    return statements


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """IAM evaluation for plain statements: an explicit Deny wins, then any Allow.
    (Conditions are ignored here: they only narrow an Allow.)"""
    verdicts = set()
    for st in statements:
        actions = _as_list(st["Action"])
        resources = _as_list(st["Resource"])
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            verdicts.add(st["Effect"])
    return "Allow" in verdicts and "Deny" not in verdicts


def _object(key: str) -> str:
    return f"arn:aws:s3:::{BUCKET}/{PREFIX}/{key}"


RAW = "raw/binance/depth/BTCUSDT/2026-01-02/eu.c1/000000000-1-2.jsonl.zst"
CANONICAL = "canonical/binance/depth/BTCUSDT/2026-01-02/levels.parquet"
STATUS = "status/merge/binance/2026-01-02.json"


def test_the_collector_may_make_every_upload_call_under_raw() -> None:
    ops = _operations("put_file", "put")
    statements = _policy("collector-policy.json")

    denied = {op for op in ops if not allowed(statements, IAM_ACTION[op], _object(RAW))}

    assert {"put_object", "create_multipart_upload", "upload_part"} <= ops
    # head_object runs only when a multipart completion's answer was lost; denied, the
    # upload fails and the sealed chunk is uploaded again from the spool
    assert denied == {"head_object"}


@pytest.mark.parametrize("action", ["s3:GetObject", "s3:DeleteObject", "s3:PutObjectAcl"])
def test_the_collector_can_neither_read_nor_delete_nor_share(action: str) -> None:
    statements = _policy("collector-policy.json")

    for key in (RAW, CANONICAL, STATUS):
        assert not allowed(statements, action, _object(key))
    assert not allowed(statements, "s3:ListBucket", f"arn:aws:s3:::{BUCKET}")


def test_the_collector_writes_nowhere_but_raw() -> None:
    statements = _policy("collector-policy.json")

    assert allowed(statements, "s3:PutObject", _object(RAW))
    assert not allowed(statements, "s3:PutObject", _object(CANONICAL))
    assert not allowed(statements, "s3:PutObject", _object(STATUS))
    assert not allowed(statements, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/other/raw/x")


def test_the_merger_may_make_every_call_it_needs() -> None:
    statements = _policy("merger-policy.json")
    reads = _operations("list", "get", "get_file", "head")
    writes = _operations("put", "put_file", "delete")

    for op in reads:
        resource = f"arn:aws:s3:::{BUCKET}" if op == "list_objects_v2" else _object(RAW)
        assert allowed(statements, IAM_ACTION[op], resource), op
    for op in writes - {"head_object"}:
        for key in (CANONICAL, STATUS):
            assert allowed(statements, IAM_ACTION[op], _object(key)), (op, key)
    assert allowed(statements, "s3:GetObject", _object(CANONICAL))  # the previous day


def test_the_merger_deletes_raw_only_with_the_delete_raw_policy() -> None:
    plain = _policy("merger-policy.json")
    with_delete = plain + _policy("merger-delete-raw-policy.json")

    assert not allowed(plain, "s3:DeleteObject", _object(RAW))
    assert not allowed(plain, "s3:PutObject", _object(RAW))
    assert allowed(with_delete, "s3:DeleteObject", _object(RAW))
    assert not allowed(with_delete, "s3:PutObject", _object(RAW))


def test_the_lifecycle_rule_expires_raw_and_stale_multipart_uploads() -> None:
    rules = json.loads((POLICIES / "raw-lifecycle.json").read_text())["Rules"]
    (raw,) = [r for r in rules if r["Filter"].get("Prefix") == f"{PREFIX}/raw/"]

    assert raw["Status"] == "Enabled"
    assert raw["Expiration"]["Days"] >= 7  # long enough to re-merge a late day
    assert raw["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert not any("canonical" in r["Filter"].get("Prefix", "") for r in rules)


def test_the_policies_name_the_store_of_the_kubernetes_config() -> None:
    configmap = (REPO / "deploy" / "k8s" / "base" / "configmap.yaml").read_text()

    assert f"store: s3://{BUCKET}/{PREFIX}\n" in configmap
    for path in POLICIES.glob("*-policy.json"):
        assert BUCKET in path.read_text()
