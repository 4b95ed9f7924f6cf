"""The Istio VirtualService of ingress mode `istio`, and IngressReady: pure functions."""

from __future__ import annotations

import re

import pytest
from isvc_operator.config import default_config
from isvc_operator.ingress import ingress_condition, ingress_urls, render_virtual_service

KSVC_STATUS = {"status": {"address": {"url": "http://torchserve-predictor-default.kfserving-test.svc.cluster.local"}}}


def test_virtualservice_routes_both_hosts_to_the_local_gateway_with_the_predictor_host(torchserve) -> None:
    vs = render_virtual_service(torchserve, default_config(), KSVC_STATUS)
    assert (vs["apiVersion"], vs["kind"]) == ("networking.istio.io/v1beta1", "VirtualService")
    assert vs["metadata"]["name"] == "torchserve" and vs["metadata"]["namespace"] == "kfserving-test"
    assert vs["metadata"]["ownerReferences"][0]["uid"] == torchserve["metadata"]["uid"]
    assert vs["spec"]["hosts"] == ["torchserve.kfserving-test.example.com",
                                   "torchserve.kfserving-test.svc.cluster.local"]
    assert vs["spec"]["gateways"] == ["knative-serving/knative-ingress-gateway",
                                      "knative-serving/knative-local-gateway"]
    [route] = vs["spec"]["http"]
    [destination] = route["route"]
    assert destination["destination"] == {"host": "knative-local-gateway.istio-system.svc.cluster.local",
                                          "port": {"number": 80}}
    assert destination["headers"] == {"request": {"set": {
        "Host": "torchserve-predictor-default.kfserving-test.svc.cluster.local"}}}


@pytest.mark.parametrize(("authority", "external", "internal"), [
    ("torchserve.kfserving-test.example.com", True, False),
    ("torchserve.kfserving-test.example.com:80", True, False),
    ("torchserveXkfserving-test.example.com", False, False),
    ("torchserve.kfserving-test", False, True),
    ("torchserve.kfserving-test.svc", False, True),
    ("torchserve.kfserving-test.svc.cluster.local:8080", False, True),
    ("evil.torchserve.kfserving-test.svc.cluster.local", False, False),
])
def test_authority_patterns_match_exactly_their_hosts(torchserve, authority: str, external: bool,
                                                      internal: bool) -> None:
    [route] = render_virtual_service(torchserve, default_config(), None)["spec"]["http"]
    external_re, internal_re = (m["authority"]["regex"] for m in route["match"])
    assert bool(re.match(external_re, authority)) is external
    assert bool(re.match(internal_re, authority)) is internal


def test_predictor_host_falls_back_to_knatives_name_without_ksvc_status(torchserve) -> None:
    [route] = render_virtual_service(torchserve, default_config(), None)["spec"]["http"]
    assert route["route"][0]["headers"]["request"]["set"]["Host"] == \
        "torchserve-predictor-default.kfserving-test.svc.cluster.local"


def test_hostile_domain_stays_data(torchserve) -> None:
    config = default_config()
    hostile = type(config.ingress)(**{**config.ingress.__dict__, "domain": 'x"\n  evil: {{ 1 }}'})
    changed = type(config)(config.pytorch, config.storage_initializer, hostile)
    vs = render_virtual_service(torchserve, changed, None)
    assert vs["spec"]["hosts"][0] == 'torchserve.kfserving-test.x"\n  evil: {{ 1 }}'
    assert set(vs["spec"]) == {"hosts", "gateways", "http"}


def test_ingress_ready_once_the_virtualservice_exists_else_follows_the_predictor() -> None:
    host = "torchserve.ns.example.com"
    assert ingress_condition({"status": "True"}, True, host) == {"type": "IngressReady", "status": "True"}
    assert ingress_condition({"status": "True"}, False, host)["reason"] == "VirtualServicePending"
    waiting = ingress_condition({"status": "Unknown"}, False, host)
    assert (waiting["status"], waiting["reason"]) == ("Unknown", "PredictorNotReady")
    assert ingress_condition({"status": "False"}, False, host)["status"] == "False"


def test_top_level_urls(torchserve) -> None:
    assert ingress_urls(torchserve, default_config()) == (
        "http://torchserve.kfserving-test.example.com", "http://torchserve.kfserving-test.svc.cluster.local")
