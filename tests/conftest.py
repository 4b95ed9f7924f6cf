"""Shared fixtures for the fast tests: paths of the repository and of ../shared (or where
``$TORCH_ISVC_SHARED_DIR`` says, as the demo and examples/mnist/data.py read it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("TORCH_ISVC_SHARED_DIR") or REPO_ROOT.parent / "shared")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"../shared is missing beside the checkout ({SHARED_DIR})")
    return SHARED_DIR
