"""Seed samples as the apiserver hands them to the operator (helpers for tests/operator)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "mnist"
GOLDEN = Path(__file__).parent / "golden"


def load_sample(name: str, namespace: str = "kfserving-test") -> dict[str, Any]:
    """A seed sample with the metadata the apiserver adds (namespace, uid, generation)."""
    isvc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    isvc["metadata"].update({"namespace": namespace, "uid": "0b9a5c1e-2f4d-4e8a-9c57-7d1f1b0e6a42",
                             "generation": 1})
    return isvc


def assert_golden(rendered: dict[str, Any], name: str) -> None:
    """`rendered` is golden/`name` (with UPDATE_GOLDEN=1: becomes it; review the diff)."""
    golden = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(yaml.safe_dump(rendered, sort_keys=True))
    assert rendered == yaml.safe_load(golden.read_text())
