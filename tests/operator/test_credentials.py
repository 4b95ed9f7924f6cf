"""Storage credentials from the ServiceAccount's Secrets: env, volume and mount for the init container."""

from __future__ import annotations

from isvc_operator.config import default_config
from isvc_operator.credentials import (
    SecretSummary,
    referenced_secrets,
    service_account_name,
    storage_credentials,
    summarize_secret,
)
from isvc_operator.render import render_knative_service

S3 = SecretSummary("s3creds", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), (
    ("s3-endpoint", "minio:9000"), ("s3-usehttps", "0"), ("s3-region", "eu-west-1"), ("s3-verifyssl", "0")))
GCS = SecretSummary("gcscreds", ("gcloud-application-credentials.json",))


def ref(name: str, secret: str, key: str) -> dict[str, object]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def test_s3_secret_gives_key_refs_and_endpoint_env_from_its_annotations() -> None:
    assert storage_credentials([S3]).env == [
        ref("AWS_ACCESS_KEY_ID", "s3creds", "AWS_ACCESS_KEY_ID"),
        ref("AWS_SECRET_ACCESS_KEY", "s3creds", "AWS_SECRET_ACCESS_KEY"),
        {"name": "S3_ENDPOINT", "value": "minio:9000"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"},
        {"name": "S3_USE_HTTPS", "value": "0"},
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "S3_VERIFY_SSL", "value": "0"},
    ]


def test_s3_endpoint_defaults_to_https_and_keeps_an_explicit_scheme() -> None:
    plain = SecretSummary("a", ("awsAccessKeyID", "awsSecretAccessKey"),
                          (("s3-endpoint", "s3.amazonaws.com"),))
    env = storage_credentials([plain]).env
    assert env[0] == ref("AWS_ACCESS_KEY_ID", "a", "awsAccessKeyID")
    assert {"name": "AWS_ENDPOINT_URL", "value": "https://s3.amazonaws.com"} in env
    given = SecretSummary("b", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), (("s3-endpoint", "http://m:1"),))
    assert {"name": "AWS_ENDPOINT_URL", "value": "http://m:1"} in storage_credentials([given]).env


def test_gcs_secret_is_mounted_with_google_application_credentials() -> None:
    credentials = storage_credentials([GCS])
    assert credentials.env == [{"name": "GOOGLE_APPLICATION_CREDENTIALS",
                                "value": "/var/secrets/gcloud-application-credentials.json"}]
    assert credentials.volumes == [{"name": "user-gcp-sa", "secret": {"secretName": "gcscreds"}}]
    assert credentials.volume_mounts == [
        {"name": "user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True}]


def test_unrelated_and_duplicate_secrets_are_ignored_first_of_each_kind_wins() -> None:
    other = SecretSummary("token", ("token",))
    second_s3 = SecretSummary("later", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    credentials = storage_credentials([other, S3, second_s3, GCS, SecretSummary("g2", GCS.keys)])
    assert sum(e["name"] == "AWS_ACCESS_KEY_ID" for e in credentials.env) == 1
    assert "later" not in str(credentials.env)
    assert len(credentials.volumes) == 1
    assert storage_credentials([SecretSummary("half", ("AWS_ACCESS_KEY_ID",))]).env == []


def test_secret_summary_keeps_key_names_and_s3_annotations_but_no_value() -> None:
    summary = summarize_secret({
        "metadata": {"name": "s3creds",
                     "annotations": {"serving.kubeflow.org/s3-region": "r1", "other": "x"}},
        "data": {"AWS_ACCESS_KEY_ID": "QUtJQVZBTFVF", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"}})
    assert summary == SecretSummary("s3creds", ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                                    (("s3-region", "r1"),))
    assert "QUtJQVZBTFVF" not in repr(summary) and "c2VjcmV0" not in repr(summary)


def test_service_account_defaults_and_its_secret_names_in_order(isvc_factory) -> None:
    assert service_account_name(isvc_factory()) == "default"
    assert service_account_name(isvc_factory(serviceAccountName="models")) == "models"
    account = {"secrets": [{"name": "b"}, {"name": "a"}, {"name": "b"}, {}]}
    assert referenced_secrets(account) == ["b", "a"]
    assert referenced_secrets(None) == []


def test_credentials_reach_the_storage_initializer_only(torchserve) -> None:
    ksvc = render_knative_service(torchserve, default_config(), credentials=storage_credentials([S3, GCS]))
    pod = ksvc["spec"]["template"]["spec"]
    [init], [main] = pod["initContainers"], pod["containers"]
    assert [e["name"] for e in init["env"]][:2] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert init["env"][-1]["name"] == "GOOGLE_APPLICATION_CREDENTIALS"
    assert init["volumeMounts"][-1] == {"name": "user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True}
    assert {"name": "user-gcp-sa", "secret": {"secretName": "gcscreds"}} in pod["volumes"]
    assert [e["name"] for e in main["env"]] == ["PROTOCOL_VERSION"]
    assert [m["name"] for m in main["volumeMounts"]] == ["kfserving-provision-location"]


def test_no_credentials_render_no_init_env(torchserve) -> None:
    pod = render_knative_service(torchserve, default_config())["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert "env" not in init
