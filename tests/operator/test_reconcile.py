"""`reconcile` against the in-memory fake cluster (fake_kube.py): what it writes, when it writes nothing,
the events it posts, and what an API error or a change arriving mid-reconcile leaves behind."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any

import kopf
import pytest
from fake_kube import SECRET, SERVICE_ACCOUNT, FakeCluster
from isvc_operator import handlers
from isvc_operator.config import DEFAULTS, parse_config
from isvc_operator.known import INFERENCE_SERVICE, KNATIVE_SERVICE, VIRTUAL_SERVICE, Key, Known
from isvc_operator.reconcile import RETRY_DELAYS, reconcile
from isvc_operator.render import render_knative_service
from operator_samples import load_sample

NAMESPACE = "kfserving-test"
ISVC: Key = (NAMESPACE, "torchserve")
KSVC: Key = (NAMESPACE, "torchserve-predictor-default")
LOG = logging.getLogger("isvc_operator.test")


def config_data(**ingress: str) -> dict[str, str]:
    sections = copy.deepcopy(DEFAULTS)
    sections["ingress"].update(ingress)
    return {section: json.dumps(value) for section, value in sections.items()}


def new_isvc(**predictor: Any) -> dict[str, Any]:
    isvc = load_sample("torchserve", NAMESPACE)
    for generated in ("uid", "generation"):
        del isvc["metadata"][generated]
    isvc["spec"]["predictor"].update(predictor)
    return isvc


def cluster_holding(isvc: dict[str, Any]) -> FakeCluster:
    """A fake cluster with the operator's ConfigMap and ``isvc``, its watch caches filled."""
    cluster = FakeCluster()
    cluster.put_config(config_data())
    cluster.put(INFERENCE_SERVICE, isvc)
    cluster.list_all()
    return cluster


@pytest.fixture
def cluster() -> FakeCluster:
    return cluster_holding(new_isvc())


def run(cluster: FakeCluster, known: Known, key: Key = ISVC) -> str:
    return reconcile(key, known, cluster, LOG)


def settle(cluster: FakeCluster, known: Known) -> None:
    """Deliver every watch event and reconcile what each concerns, as the kopf handlers do."""
    for _ in range(100):
        if not cluster.pending:
            return
        for key in cluster.deliver(known=known):
            run(cluster, known, key)
    raise AssertionError("the operator keeps writing: its writes never settle")


def knative_reports_ready(cluster: FakeCluster) -> None:
    ksvc = cluster.get(KNATIVE_SERVICE, KSVC)
    revision = f"{KSVC[1]}-00001"
    cluster.put(KNATIVE_SERVICE, {**ksvc, "status": {
        "observedGeneration": ksvc["metadata"]["generation"],
        "conditions": [{"type": "Ready", "status": "True"}],
        "url": f"http://{KSVC[1]}.{NAMESPACE}.example.com",
        "latestCreatedRevisionName": revision, "latestReadyRevisionName": revision,
        "traffic": [{"latestRevision": True, "percent": 100, "revisionName": revision}]}})


def condition(cluster: FakeCluster, type_: str) -> dict[str, Any]:
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    return next(c for c in isvc["status"]["conditions"] if c["type"] == type_)


def test_first_reconcile_applies_the_rendered_ksvc_and_writes_the_status(cluster, known) -> None:
    assert run(cluster, known) == "changed"
    assert cluster.writes() == ["apply_knative_service", "apply_status"]
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    desired = render_knative_service(isvc, parse_config(config_data()))
    assert cluster.get(KNATIVE_SERVICE, KSVC)["spec"] == desired["spec"]
    assert condition(cluster, "PredictorReady")["status"] == "Unknown"
    assert cluster.events == []


def test_reconciling_an_unchanged_isvc_again_calls_no_api(cluster, known) -> None:
    run(cluster, known)
    settle(cluster, known)
    cluster.calls.clear()
    assert run(cluster, known) == "unchanged"
    assert cluster.calls == []


def test_a_restarted_operator_writes_nothing_to_unchanged_objects(cluster, known) -> None:
    run(cluster, known)
    knative_reports_ready(cluster)
    settle(cluster, known)
    versions = {kind: {k: o["metadata"]["resourceVersion"] for k, o in objects.items()}
                for kind, objects in cluster.objects.items()}
    cluster.list_all()
    assert run(cluster, cluster.known()) == "unchanged"
    assert cluster.pending == []
    assert {kind: {k: o["metadata"]["resourceVersion"] for k, o in objects.items()}
            for kind, objects in cluster.objects.items()} == versions


def test_knative_ready_makes_the_isvc_ready_with_one_event_and_a_virtual_service(cluster, known) -> None:
    run(cluster, known)
    knative_reports_ready(cluster)
    settle(cluster, known)
    assert condition(cluster, "Ready")["status"] == "True"
    assert cluster.get(INFERENCE_SERVICE, ISVC)["status"]["url"] == f"http://torchserve.{NAMESPACE}.example.com"
    assert cluster.get(VIRTUAL_SERVICE, ISVC) is not None
    assert [event[2] for event in cluster.events] == ["InferenceServiceReady"]
    run(cluster, known)
    assert [event[2] for event in cluster.events] == ["InferenceServiceReady"]


def test_a_render_error_goes_to_the_status_with_one_event_and_no_ksvc(known, cluster) -> None:
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    isvc["spec"]["predictor"]["pytorch"]["resources"] = {"limits": {"cpu": "lots"}}
    cluster.put(INFERENCE_SERVICE, isvc)
    settle(cluster, known)
    run(cluster, known)
    assert cluster.get(KNATIVE_SERVICE, KSVC) is None
    predictor = condition(cluster, "PredictorReady")
    assert (predictor["status"], predictor["reason"]) == ("False", "RenderFailed")
    assert [event[2] for event in cluster.events] == ["RenderFailed"]


@pytest.mark.parametrize("status", [409, 410, 500])
def test_an_api_error_is_a_temporary_error_with_a_growing_delay_and_one_event(cluster, known,
                                                                             status: int) -> None:
    cluster.fail("apply_knative_service", status, status)
    with pytest.raises(kopf.TemporaryError) as first:
        run(cluster, known)
    with pytest.raises(kopf.TemporaryError) as second:
        run(cluster, known)
    assert (first.value.delay, second.value.delay) == RETRY_DELAYS[:2]
    assert [event[2] for event in cluster.events] == ["ReconcileFailed"]
    assert str(status) in cluster.events[0][3]
    assert run(cluster, known) == "changed"  # the retry: nothing was lost
    assert cluster.get(KNATIVE_SERVICE, KSVC) is not None
    assert known.failures == {}


def test_a_conflict_on_the_status_keeps_the_applied_ksvc_and_the_retry_writes_the_status(cluster,
                                                                                         known) -> None:
    cluster.fail("apply_status", 409)
    with pytest.raises(kopf.TemporaryError):
        run(cluster, known)
    assert cluster.get(KNATIVE_SERVICE, KSVC) is not None
    assert "status" not in cluster.get(INFERENCE_SERVICE, ISVC)
    cluster.calls.clear()
    run(cluster, known)
    assert cluster.writes() == ["apply_status"]  # the ksvc was applied already: not again


def test_a_promotion_is_persisted_before_the_traffic_and_survives_a_failed_apply(cluster, known) -> None:
    run(cluster, known)
    knative_reports_ready(cluster)
    settle(cluster, known)
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    assert isvc["status"]["components"]["predictor"]["latestRolledoutRevision"] == f"{KSVC[1]}-00001"
    isvc["spec"]["predictor"]["pytorch"]["storageUri"] += "/v2"
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 20
    cluster.put(INFERENCE_SERVICE, isvc)
    cluster.fail("apply_knative_service", 500)
    with pytest.raises(kopf.TemporaryError):
        settle(cluster, known)
    assert cluster.writes()[-1] == "apply_knative_service"  # the failed one; nothing applied
    run(cluster, known)
    traffic = cluster.get(KNATIVE_SERVICE, KSVC)["spec"]["traffic"]
    assert traffic == [{"latestRevision": True, "percent": 0},
                       {"tag": "prev", "revisionName": f"{KSVC[1]}-00001", "latestRevision": False,
                        "percent": 100}]  # pinned until the new revision is ready


def test_an_isvc_edit_arriving_mid_reconcile_is_reconciled_by_its_own_event(cluster, known) -> None:
    def user_edits() -> None:
        isvc = cluster.get(INFERENCE_SERVICE, ISVC)
        isvc["spec"]["predictor"]["pytorch"]["storageUri"] += "/v2"
        cluster.put(INFERENCE_SERVICE, isvc)
        cluster.deliver(known=known)  # the watch delivers it while the reconcile runs

    cluster.during("apply_knative_service", user_edits)
    run(cluster, known)
    init = cluster.get(KNATIVE_SERVICE, KSVC)["spec"]["template"]["spec"]["initContainers"][0]
    assert not init["args"][0].endswith("/v2")  # rendered before the edit
    run(cluster, known)  # the handler of the edit's event
    settle(cluster, known)
    isvc = cluster.get(INFERENCE_SERVICE, ISVC)
    init = cluster.get(KNATIVE_SERVICE, KSVC)["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][0].endswith("/v2")
    assert isvc["status"]["observedGeneration"] == isvc["metadata"]["generation"] == 2


def test_an_older_watch_event_never_hides_what_the_reconcile_wrote(cluster, known) -> None:
    run(cluster, known)
    cluster.deliver(1, known=known)  # the isvc's status write only; the ksvc's apply is still pending
    written = known.knative_service(KSVC)
    assert written is not None and written == cluster.get(KNATIVE_SERVICE, KSVC)
    assert run(cluster, known) == "unchanged"


def test_a_ksvc_deleted_by_hand_is_recreated(cluster, known) -> None:
    run(cluster, known)
    settle(cluster, known)
    first = cluster.get(KNATIVE_SERVICE, KSVC)
    cluster.remove(KNATIVE_SERVICE, KSVC)
    settle(cluster, known)
    again = cluster.get(KNATIVE_SERVICE, KSVC)
    assert again is not None and again["metadata"]["uid"] != first["metadata"]["uid"]
    assert again["spec"] == first["spec"]


def test_a_missing_configmap_warns_each_isvc_once(cluster) -> None:
    cluster.remove("configmap", ("torch-isvc-system", "inferenceservice-config"))
    cluster.list_all()
    known = cluster.known()
    run(cluster, known)
    run(cluster, known)
    assert [(event[0], event[2]) for event in cluster.events] == [("torchserve", "ConfigMissing")]
    image = cluster.get(KNATIVE_SERVICE, KSVC)["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "torch-isvc/runtime:0.1.0"


def test_ingress_mode_none_removes_the_virtual_service_the_isvc_owns(cluster, known) -> None:
    run(cluster, known)
    knative_reports_ready(cluster)
    settle(cluster, known)
    assert cluster.get(VIRTUAL_SERVICE, ISVC) is not None
    cluster.put_config(config_data(mode="none"))
    settle(cluster, known)
    assert cluster.get(VIRTUAL_SERVICE, ISVC) is None
    assert cluster.get(INFERENCE_SERVICE, ISVC)["status"]["url"] == f"http://{KSVC[1]}.{NAMESPACE}.example.com"


def test_secrets_are_read_once_per_service_account_version_and_never_kept(cluster, known) -> None:
    cluster.put(SECRET, {"metadata": {"name": "s3creds", "namespace": NAMESPACE},
                         "data": {"AWS_ACCESS_KEY_ID": "a2V5", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}})
    account = {"metadata": {"name": "default", "namespace": NAMESPACE}, "secrets": [{"name": "s3creds"}]}
    cluster.put(SERVICE_ACCOUNT, account)
    settle(cluster, known)
    run(cluster, known)
    run(cluster, known)
    assert cluster.calls.count("secret_summary") == 1
    env = cluster.get(KNATIVE_SERVICE, KSVC)["spec"]["template"]["spec"]["initContainers"][0]["env"]
    assert {"name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3creds", "key": "AWS_SECRET_ACCESS_KEY"}}} in env
    assert "c2VjcmV0" not in repr(known.secret_summaries)
    cluster.put(SERVICE_ACCOUNT, {**account, "secrets": []})
    settle(cluster, known)
    run(cluster, known)
    assert cluster.calls.count("secret_summary") == 1
    env = cluster.get(KNATIVE_SERVICE, KSVC)["spec"]["template"]["spec"]["initContainers"][0].get("env") or []
    assert not any(item["name"] == "AWS_SECRET_ACCESS_KEY" for item in env)


def test_the_handlers_retry_a_failed_reconcile_after_the_errors_delay(cluster) -> None:
    operator = handlers.Operator(cluster.known(), cluster, None, LOG)
    cluster.fail("apply_knative_service", 500)

    async def scenario() -> None:
        await operator.reconcile(ISVC)
        assert cluster.get(KNATIVE_SERVICE, KSVC) is None and ISVC in operator.retries
        await asyncio.sleep(RETRY_DELAYS[0] + 0.5)
        assert cluster.get(KNATIVE_SERVICE, KSVC) is not None and operator.retries == {}

    asyncio.run(scenario())


def test_a_new_event_supersedes_the_pending_retry_of_the_same_isvc(cluster) -> None:
    operator = handlers.Operator(cluster.known(), cluster, None, LOG)
    cluster.fail("apply_knative_service", 500)

    async def scenario() -> None:
        await operator.reconcile(ISVC)
        pending = operator.retries[ISVC]
        await operator.reconcile(ISVC)  # the next watch event, before the retry is due
        await asyncio.sleep(0)
        assert pending.cancelled() and operator.retries == {}
        assert cluster.calls.count("apply_knative_service") == 2

    asyncio.run(scenario())


def test_a_configmap_edit_is_announced_once_and_rerenders_every_isvc(cluster) -> None:
    operator = handlers.Operator(cluster.known(), cluster, None, LOG)
    memo = kopf.Memo(operator=operator)
    config_map = ("torch-isvc-system", "inferenceservice-config")

    async def config_event(type_: str | None) -> None:
        cluster.deliver(known=operator.known)
        await handlers.on_config_change(event={"type": type_}, namespace=config_map[0], name=config_map[1],
                                        meta={"uid": "cm-uid"}, memo=memo)

    async def scenario() -> None:
        await config_event(None)  # the initial listing: the isvcs' own listing events render them
        assert cluster.get(KNATIVE_SERVICE, KSVC) is None
        cluster.put_config({**config_data(), "predictors": "{not json"})
        await config_event("MODIFIED")
        await config_event("MODIFIED")  # the same problems again: nothing more to say
        assert [(event[0], event[2]) for event in cluster.events] == [(config_map[1], "InvalidConfig")]
        assert cluster.get(KNATIVE_SERVICE, KSVC) is not None  # rendered with the defaults

    asyncio.run(scenario())
