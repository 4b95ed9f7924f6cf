"""A real Prometheus scrapes two real runtimes (revisions of one InferenceService) under load, and the
dashboard and the rules are judged by what it answers.

The stable revision serves the MNIST example; the canary revision has gone wrong (its ``mnist`` 2.0 is
slow and fails every request, its second model never loads), so every alert has a reason to fire and
every canary-versus-stable panel has two sides to compare.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from monitoring_support import (
    DASHBOARD,
    MNIST_REQUEST,
    RULES,
    Prometheus,
    Runtime,
    build_bad_canary_store,
    build_mnist_store,
    finite_values,
    substitute,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

ISVC = "torchserve"
STABLE = "torchserve-predictor-default-00001"
CANARY = "torchserve-predictor-default-00002"
INFERENCE = 'endpoint=~"v1_predict|v1_explain|v2_infer|v2_explain|predictions"'
RATE_INTERVAL = "20s"  # what Grafana's $__rate_interval is at a 1 s scrape interval, with room
ROUNDS = 16


@dataclass
class Scenario:
    prometheus: Prometheus
    stable: Runtime
    canary: Runtime
    sent: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (revision, endpoint, code)
    at: float = 0.0  # when Prometheus had scraped every request: the time the queries are evaluated at


def _requests(mnist_request: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One round of load for the stable revision: (endpoint label, path, expected code, httpx kwargs)."""
    b64 = mnist_request["instances"][0]["data"]
    v2 = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    png = base64.b64decode(b64)
    predict = ("v1_predict", "/v1/models/mnist:predict", {"json": mnist_request})
    return [
        (*predict[:2], 200, predict[2]),
        (*predict[:2], 200, predict[2]),
        (*predict[:2], 200, predict[2]),
        ("v1_predict", f"/v1/models/{ISVC}:predict", 200, {"json": mnist_request}),  # the isvc's alias
        ("v2_infer", "/v2/models/mnist/infer", 200, {"json": v2}),
        ("predictions", "/predictions/mnist", 200, {"content": png}),
        ("v1_predict", "/v1/models/mnist:predict", 400, {"content": b"{not json"}),
    ]


def _send(url: str, path: str, kwargs: dict[str, Any]) -> int:
    return httpx.post(f"{url}{path}", timeout=60, **kwargs).status_code


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("monitoring")
    stable_store = build_mnist_store(root / "stable")
    canary_store = build_bad_canary_store(root / "canary")
    runtimes: list[Runtime] = []
    prometheus: Prometheus | None = None
    try:
        stable = Runtime(stable_store, root / "stable.log", isvc=ISVC, revision=STABLE)
        runtimes.append(stable)
        canary = Runtime(canary_store, root / "canary.log", isvc=ISVC, revision=CANARY)
        runtimes.append(canary)
        stable.wait_settled()
        canary.wait_settled()
        prometheus = Prometheus(
            root / "prometheus", [f"127.0.0.1:{r.metrics_port}" for r in runtimes], [RULES]
        )
        wait_until(lambda: len(finite_values(prometheus.query("up == 1"))) == 2, 30, "both runtimes scraped")
        scenario = Scenario(prometheus, stable, canary)
        mnist_request = json.loads(MNIST_REQUEST.read_text())
        round_requests = _requests(mnist_request)
        with ThreadPoolExecutor(4) as pool:
            for _ in range(ROUNDS):
                jobs = [
                    (STABLE, endpoint, expected, pool.submit(_send, stable.url, path, kwargs))
                    for endpoint, path, expected, kwargs in round_requests
                ]
                jobs.append(
                    (CANARY, "v1_predict", 500,
                     pool.submit(_send, canary.url, "/v1/models/mnist:predict", {"json": mnist_request}))
                )  # fmt: skip
                for revision, endpoint, expected, job in jobs:
                    code = job.result()
                    assert code == expected, (revision, endpoint, code)
                    scenario.sent[(revision, endpoint, code)] += 1
                time.sleep(0.3)
        # Explanations last, one at a time: they share the model's thread, and predictions queued behind
        # one would spend the stable revision's latency budget.
        for _ in range(3):
            assert _send(stable.url, "/v1/models/mnist:explain", {"json": mnist_request}) == 200
            scenario.sent[(STABLE, "v1_explain", 200)] += 1
            time.sleep(1.1)  # one scrape apart, so the explanation histogram's rate() moves
        total = sum(scenario.sent.values())

        def all_scraped() -> bool:
            values = finite_values(prometheus.query(f"sum(isvc_requests_total{{{INFERENCE}}})"))
            return values == [float(total)]

        wait_until(all_scraped, 30, f"Prometheus to count {total} requests")
        scenario.at = time.time()
        time.sleep(2)  # one more evaluation of every rule over the complete data
        yield scenario
    finally:
        if prometheus is not None:
            prometheus.stop()
        for runtime in runtimes:
            runtime.stop()


def _dashboard_variables() -> dict[str, str]:
    return {
        "namespace": ".*",
        "isvc": ISVC,
        "revision": f"{STABLE}|{CANARY}",
        "model": "mnist",
        "stable": STABLE,
        "canary": CANARY,
        "datasource": "prometheus",
        "__rate_interval": RATE_INTERVAL,
    }


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_request_counter_equals_the_requests_sent_per_revision_endpoint_and_code(scenario: Scenario) -> None:
    result = scenario.prometheus.query(
        f"sum by (revision, endpoint, code) (isvc_requests_total{{isvc='{ISVC}', {INFERENCE}}})", scenario.at
    )
    counted = {
        (item["metric"]["revision"], item["metric"]["endpoint"], int(item["metric"]["code"])): float(
            item["value"][1]
        )
        for item in result
    }
    assert counted == {key: float(n) for key, n in scenario.sent.items()}


def test_torchserve_request_counter_equals_the_inference_requests_sent(scenario: Scenario) -> None:
    result = scenario.prometheus.query("sum(ts_inference_requests_total)", scenario.at)
    assert finite_values(result) == [float(sum(scenario.sent.values()))]


def test_every_dashboard_query_returns_data(scenario: Scenario) -> None:
    variables = _dashboard_variables()
    queries = _dashboard_queries()
    assert len(queries) >= 20
    empty = [
        f"{name}: {expr}"
        for name, expr in queries
        if not finite_values(scenario.prometheus.query(substitute(expr, variables), scenario.at))
    ]
    assert not empty, "queries without a finite value:\n" + "\n".join(empty)


def test_every_rule_expression_and_recorded_series_returns_data(scenario: Scenario) -> None:
    empty = []
    for rule in _rules():
        name = rule.get("record") or rule["alert"]
        if not scenario.prometheus.query(rule["expr"], scenario.at):
            empty.append(f"{name}: {rule['expr']}")
        if "record" in rule and not finite_values(scenario.prometheus.query(rule["record"])):
            empty.append(f"recorded series {name}")
    assert not empty, "empty:\n" + "\n".join(empty)


def test_bad_canary_raises_every_alert_and_stable_none(scenario: Scenario) -> None:
    wanted = {rule["alert"] for rule in _rules() if "alert" in rule}
    active = scenario.prometheus.alerts()
    assert {a["labels"]["alertname"] for a in active} == wanted
    assert {a["labels"]["revision"] for a in active} == {CANARY}
    not_ready = [a for a in active if a["labels"]["alertname"] == "InferenceServiceModelNotReady"]
    assert [a["labels"]["model"] for a in not_ready] == ["scorer"]


def test_canary_and_stable_are_told_apart_by_revision_label(scenario: Scenario) -> None:
    ratio = scenario.prometheus.query("isvc:error_ratio:rate1m", scenario.at)
    assert {item["metric"]["revision"]: float(item["value"][1]) for item in ratio} == {CANARY: 1.0}
    p95 = scenario.prometheus.query("isvc:request_duration_seconds:p95_1m", scenario.at)
    by_revision = {item["metric"]["revision"]: float(item["value"][1]) for item in p95}
    assert by_revision[CANARY] >= 0.25 > by_revision[STABLE]


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples named exactly ``name`` in a text exposition: (labels, value)."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
            found.append((labels, float(match.group(2))))
    return found


def test_torchserve_series_keep_torchserve_names_types_labels_and_units(scenario: Scenario) -> None:
    text = httpx.get(scenario.stable.metrics_url, timeout=10).text
    values = {}
    for name, unit in (
        ("ts_inference_requests_total", "Count"),
        ("ts_inference_latency_microseconds", "Microseconds"),
        ("ts_queue_latency_microseconds", "Microseconds"),
    ):
        assert f"# TYPE {name} counter" in text
        assert f"# HELP {name} Torchserve prometheus counter metric with unit: {unit}" in text
        [(labels, value)] = _samples(text, name)
        assert set(labels) == {"model_name", "model_version", "hostname"}
        assert (labels["model_name"], labels["model_version"]) == ("mnist", "default")
        values[name] = value
    stable_requests = sum(n for (revision, _, _), n in scenario.sent.items() if revision == STABLE)
    assert values["ts_inference_requests_total"] == stable_requests
    # Microseconds: the summed request time of the runtime's own histogram, times a million.
    seconds = sum(
        value
        for labels, value in _samples(text, "isvc_request_duration_seconds_sum")
        if labels["model"] == "mnist" and labels["endpoint"] != "health"
    )
    latency = values["ts_inference_latency_microseconds"]
    assert latency == pytest.approx(seconds * 1e6)
    assert latency / stable_requests > 100  # over 0.1 ms a request: microseconds, not seconds
    queued = sum(value for labels, value in _samples(text, "isvc_queue_duration_seconds_sum"))
    assert values["ts_queue_latency_microseconds"] == pytest.approx(queued * 1e6)
    assert [labels["Level"] for labels, _ in _samples(text, "Requests2XX")] == ["Host"]


def test_metrics_are_served_on_the_inference_port_too(scenario: Scenario) -> None:
    response = httpx.get(f"{scenario.stable.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"isvc_requests", "isvc_model_ready", "ts_inference_requests"} <= names
