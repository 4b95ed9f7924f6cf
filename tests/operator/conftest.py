"""Fixtures for the operator's pure functions: seed samples as the apiserver would hand them over."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_samples import load_sample


@pytest.fixture
def torchserve() -> dict[str, Any]:
    return load_sample("torchserve")


@pytest.fixture
def isvc_factory():
    def make(**predictor: Any) -> dict[str, Any]:
        isvc = copy.deepcopy(load_sample("torchserve"))
        pytorch = predictor.pop("pytorch", {})
        isvc["spec"]["predictor"].update(predictor)
        isvc["spec"]["predictor"]["pytorch"].update(pytorch)
        return isvc

    return make


@pytest.fixture
def known(cluster: Any) -> Any:
    """The operator's caches (isvc_operator.known.Known) as the module's fake ``cluster`` fills them."""
    return cluster.known()
