"""The dashboard's shape (current Grafana schema) and the rules' validity, without a server."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml
from monitoring_support import DASHBOARD, RULES, require

GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [require("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_cover_error_ratio_latency_burn_and_model_readiness() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == {
        "InferenceServiceHighErrorRatio",
        "InferenceServiceLatencySLOFastBurn",
        "InferenceServiceLatencySLOSlowBurn",
        "InferenceServiceModelNotReady",
    }
    assert "error_ratio" in alerts["InferenceServiceHighErrorRatio"]["expr"]
    assert "isvc_model_ready == 0" in alerts["InferenceServiceModelNotReady"]["expr"]
    for alert in alerts.values():
        assert {"summary", "description"} <= set(alert["annotations"])
        assert alert["labels"]["severity"] in {"page", "ticket"}
    for rule in rules:  # every aggregation keeps what tells revisions apart
        for clause in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            assert {"namespace", "isvc", "revision", "model"} <= {c.strip() for c in clause.split(",")}


def test_dashboard_uses_the_current_schema_with_a_datasource_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "isvc", "revision", "model", "stable", "canary"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == "${datasource}"
        assert variable["query"]["query"].startswith("label_values(")


def test_every_panel_has_a_grid_position_and_prometheus_targets(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            assert target["expr"].strip()
            assert target["datasource"]["uid"] == "${datasource}"


def test_every_variable_an_expression_uses_is_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | GRAFANA_BUILTINS
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\$\{?(\w+)", target["expr"])
    }
    assert used <= defined


def test_dashboard_has_the_panels_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert "Canary versus stable" in rows
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for needle in (
        "rate(isvc_requests_total",
        'code=~"5.."',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "isvc_queue_duration_seconds_bucket",
        "isvc_batch_size",
        'revision="$canary"',
        'revision="$stable"',
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "ts_queue_latency_microseconds",
    ):
        assert needle in exprs, needle
