"""Render deploy/k8s's kustomizations without a kustomize binary (``make k8s``).

A deliberately small subset of kustomize, enough for the bases and overlays here, and
strict about it: a kustomization field it does not know is an error, never ignored.
``kubectl kustomize deploy/k8s/overlays/eu`` gives the same documents (the tests compare
the two where kubectl is installed); use it, or ``kustomize build``, for anything fancier.

Supported kustomization fields:

- ``resources``: YAML files (several documents each) and directories holding a
  kustomization, rendered recursively;
- ``patches``: strategic-merge patches (``path:`` or inline ``patch:``), matched by kind
  and name (or by an explicit ``target`` with ``kind`` and ``name``); maps merge, lists of
  named items (containers, env, volumes, ...) merge by ``name``, other lists are replaced,
  ``null`` deletes a key;
- ``namespace``: set on every namespaced object;
- ``labels``: ``pairs`` added to ``metadata.labels``, and with ``includeTemplates`` to the
  pod templates (and a StatefulSet's volume claim templates); ``includeSelectors`` is not
  supported (selectors stay as written);
- ``images``: ``name`` -> ``newName`` / ``newTag`` / ``digest`` in every container.

Output: the documents in kustomize's default (legacy) kind order, keys sorted, one YAML
stream per kustomization. Usage::

    python deploy/k8s/render.py --out build/k8s      # every overlay and base
    python deploy/k8s/render.py deploy/k8s/overlays/eu -o eu.yaml
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
# kustomize's legacy ordering (api/resid, "orderFirst" and "orderLast")
ORDER_FIRST = (
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
    "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass",
    "PersistentVolume", "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob",
    "PodDisruptionBudget",
)  # fmt: skip
ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
CLUSTER_SCOPED = {
    "Namespace", "StorageClass", "CustomResourceDefinition", "PodSecurityPolicy",
    "ClusterRole", "ClusterRoleBinding", "PriorityClass", "PersistentVolume",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}  # fmt: skip
# where pod templates live, per kind (for labels.includeTemplates)
TEMPLATE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "template"),),
    "StatefulSet": (("spec", "template"),),
    "DaemonSet": (("spec", "template"),),
    "ReplicaSet": (("spec", "template"),),
    "Job": (("spec", "template"),),
    "CronJob": (("spec", "jobTemplate"), ("spec", "jobTemplate", "spec", "template")),
}

Doc = dict[str, Any]


class RenderError(Exception):
    """A kustomization this renderer cannot render (one line, names the file)."""


def _load_yaml(path: Path) -> list[Doc]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"{path}: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise RenderError(f"{path}: every document needs kind and metadata")
    return docs


def _kustomization(directory: Path) -> tuple[Path, Doc]:
    for name in KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise RenderError(f"{path}: not a mapping")
            unknown = set(loaded) - SUPPORTED
            if unknown:
                raise RenderError(
                    f"{path}: {', '.join(sorted(unknown))} not supported by this renderer "
                    "(use kubectl kustomize)"
                )
            return path, loaded
    raise RenderError(f"{directory}: no kustomization.yaml")


def merge_patch(base: Any, patch: Any) -> Any:
    """A strategic merge patch, reduced to what our patches use (see the module doc)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if "$patch" in patch:
            raise RenderError("$patch directives are not supported by this renderer")
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge_patch(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                i = index[item["name"]]
                merged[i] = merge_patch(merged[i], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _apply_patches(docs: list[Doc], spec: Doc, where: Path) -> list[Doc]:
    for entry in spec.get("patches") or []:
        if "path" in entry:
            patches = _load_yaml(where / entry["path"])
        elif "patch" in entry:
            patches = [yaml.safe_load(entry["patch"])]
        else:
            raise RenderError(f"{where}: a patch needs path or patch")
        for patch in patches:
            target = entry.get("target") or {}
            kind = target.get("kind", patch.get("kind"))
            name = target.get("name", patch.get("metadata", {}).get("name"))
            hits = [i for i, d in enumerate(docs) if d["kind"] == kind and _name(d) == name]
            if len(hits) != 1:
                raise RenderError(f"{where}: patch for {kind}/{name} matches {len(hits)} objects")
            docs[hits[0]] = merge_patch(docs[hits[0]], patch)
    return docs


def _name(doc: Doc) -> str:
    return str(doc["metadata"].get("name"))


def _at(doc: Doc, path: Iterable[str]) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _add_labels(target: Doc, pairs: dict[str, str]) -> None:
    meta = target.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **pairs}


def _apply_labels(doc: Doc, spec: Doc, where: Path) -> None:
    for entry in spec.get("labels") or []:
        if entry.get("includeSelectors"):
            raise RenderError(f"{where}: labels.includeSelectors is not supported")
        pairs = {str(k): str(v) for k, v in (entry.get("pairs") or {}).items()}
        _add_labels(doc, pairs)
        if not entry.get("includeTemplates"):
            continue
        for path in TEMPLATE_PATHS.get(doc["kind"], ()):
            template = _at(doc, path)
            if isinstance(template, dict):
                _add_labels(template, pairs)
        if doc["kind"] == "StatefulSet":
            for claim in _at(doc, ("spec", "volumeClaimTemplates")) or []:
                _add_labels(claim, pairs)


def _containers(doc: Doc) -> Iterable[Doc]:
    pod_paths = {
        "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
        "Pod": ("spec",),
    }
    pod = _at(doc, pod_paths.get(doc["kind"], ("spec", "template", "spec")))
    if isinstance(pod, dict):
        for field in ("initContainers", "containers"):
            yield from pod.get(field) or []


def _apply_images(doc: Doc, spec: Doc) -> None:
    for rule in spec.get("images") or []:
        for container in _containers(doc):
            image = str(container.get("image", ""))
            name, tag = image, ""
            if "@" in image:
                name, _, digest = image.partition("@")
                tag = "@" + digest
            elif ":" in image.rsplit("/", 1)[-1]:
                name, _, plain = image.rpartition(":")
                tag = ":" + plain
            if name != rule["name"]:
                continue
            if "digest" in rule:
                tag = "@" + rule["digest"]
            elif "newTag" in rule:
                tag = ":" + str(rule["newTag"])
            container["image"] = rule.get("newName", name) + tag


def build(directory: Path) -> list[Doc]:
    """Every document of the kustomization in ``directory``, transformed, in input order."""
    path, spec = _kustomization(directory)
    docs: list[Doc] = []
    for resource in spec.get("resources") or []:
        target = (directory / resource).resolve()
        if target.is_dir():
            docs += build(target)
        elif target.is_file():
            docs += _load_yaml(target)
        else:
            raise RenderError(f"{path}: resource {resource} not found (remote URLs unsupported)")
    docs = _apply_patches(docs, spec, directory)
    for doc in docs:
        if spec.get("namespace") and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = spec["namespace"]
        _apply_labels(doc, spec, path)
        _apply_images(doc, spec)
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        ident = (doc["kind"], str(doc["metadata"].get("namespace", "")), _name(doc))
        if ident in seen:
            raise RenderError(f"{path}: {'/'.join(ident)} is defined twice")
        seen.add(ident)
    return docs


def _order(doc: Doc) -> tuple[int, str, str, str]:
    kind = str(doc["kind"])
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind)
    elif kind in ORDER_LAST:
        rank = len(ORDER_FIRST) + 1 + ORDER_LAST.index(kind)
    else:
        rank = len(ORDER_FIRST)
    return rank, kind, str(doc["metadata"].get("namespace", "")), _name(doc)


class _Dumper(yaml.SafeDumper):
    """kustomize's string styles: block for multi-line, double quotes where needed."""


STR_TAG = "tag:yaml.org,2002:str"


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None
    if "\n" in value:
        style = "|"
    elif dumper.resolve(yaml.ScalarNode, value, (True, False)) != STR_TAG:
        style = '"'  # e.g. "9108", "true": plain would read back as a number or a bool
    return dumper.represent_scalar(STR_TAG, value, style=style)


_Dumper.add_representer(str, _str)


def render(directory: Path) -> str:
    """The rendered YAML stream of the kustomization in ``directory``."""
    docs = sorted(build(directory), key=_order)
    return "---\n".join(
        yaml.dump(d, Dumper=_Dumper, sort_keys=True, default_flow_style=False) for d in docs
    )


def targets(root: Path = HERE) -> dict[str, Path]:
    """Output name -> kustomization directory: each overlay, and each base as bases/NAME."""
    found: dict[str, Path] = {}
    for overlay in sorted((root / "overlays").iterdir()):
        if overlay.is_dir():
            found[overlay.name] = overlay
    for base in sorted(root.iterdir()):
        if base.is_dir() and any((base / n).is_file() for n in KUSTOMIZATION_FILES):
            found[f"bases/{base.name}"] = base
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("directory", nargs="?", type=Path, help="one kustomization to render")
    parser.add_argument("-o", "--output", type=Path, help="file for one directory (default stdout)")
    parser.add_argument("--out", type=Path, help="render every overlay and base into this folder")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            for name, directory in targets().items():
                path = args.out / f"{name}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(directory))
                print(f"rendered {directory.relative_to(HERE.parent.parent)} -> {path}")
        elif args.directory is not None:
            text = render(args.directory)
            if args.output is None:
                sys.stdout.write(text)
            else:
                args.output.write_text(text)
        else:
            parser.error("give a directory or --out")
    except RenderError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
