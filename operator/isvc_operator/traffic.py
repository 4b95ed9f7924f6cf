"""The traffic block of the predictor's Knative Service.

Today every InferenceService sends all traffic to its latest ready revision. Canary rollouts
(`canaryTrafficPercent`, promotion and rollback against the last rolled-out revision recorded in the
isvc's status) extend `desired_traffic`; its inputs are already the whole isvc, spec and status.
"""

from __future__ import annotations

from typing import Any


def desired_traffic(isvc: dict[str, Any]) -> list[dict[str, Any]]:
    """Traffic targets for the predictor's ksvc, in Knative's `spec.traffic` shape."""
    return [{"latestRevision": True, "percent": 100}]
