"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real recorded exchange data in ../shared/data/real (never copied into the repo)."""
    path = (REPO.parent / "shared" / "data" / "real").resolve()
    if not (path / "README.md").exists():
        pytest.fail(
            f"real recorded data not found at {path}: the checkout needs ../shared beside it"
        )
    return path
