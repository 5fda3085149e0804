"""Deploy-test fixtures: the k8s renderer (a script under deploy/, loaded by path)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import REPO

RENDER_PY = REPO / "deploy" / "k8s" / "render.py"


def load_render() -> ModuleType:
    """deploy/k8s/render.py as a module (it is not part of any booktape package)."""
    if "booktape_k8s_render" in sys.modules:
        return sys.modules["booktape_k8s_render"]
    spec = importlib.util.spec_from_file_location("booktape_k8s_render", RENDER_PY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["booktape_k8s_render"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def render() -> ModuleType:
    return load_render()
