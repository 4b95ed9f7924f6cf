"""Storage credentials for the storage-initializer, from the predictor's ServiceAccount (KFServing's rules).

The operator never handles a secret value: it reads which keys each Secret referenced by the
ServiceAccount has and its `serving.kubeflow.org/s3-*` annotations (`SecretSummary`), and renders
references (`secretKeyRef`, a secret volume) that the kubelet resolves in the init container only.

- A Secret with an S3 key pair (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or KFServing's older
  `awsAccessKeyID`/`awsSecretAccessKey`) gives `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` as
  secretKeyRefs, plus, from its annotations, `S3_ENDPOINT` and `AWS_ENDPOINT_URL`
  (`s3-endpoint`; the URL gets `https://` unless `s3-usehttps` is "0"/"false"), `S3_USE_HTTPS`
  (`s3-usehttps`), `AWS_REGION` (`s3-region`) and `S3_VERIFY_SSL` (`s3-verifyssl`): the names the
  storage initializer reads (runtime/isvc_runtime/storage/s3.py).
- A Secret with `gcloud-application-credentials.json` is mounted read-only at /var/secrets/ (volume
  `user-gcp-sa`) and `GOOGLE_APPLICATION_CREDENTIALS` points at the file.
- The first Secret of each kind in the ServiceAccount's order wins; others of the same kind are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

S3_KEY_PAIRS = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("awsAccessKeyID", "awsSecretAccessKey"))
GCS_CREDENTIALS_KEY = "gcloud-application-credentials.json"
GCS_VOLUME = "user-gcp-sa"
GCS_MOUNT = "/var/secrets/"
ANNOTATION_PREFIX = "serving.kubeflow.org/"
S3_ANNOTATIONS = ("s3-endpoint", "s3-usehttps", "s3-region", "s3-verifyssl")
DEFAULT_SERVICE_ACCOUNT = "default"


@dataclass(frozen=True)
class SecretSummary:
    """What the operator keeps of a Secret: its name, key names and the S3 annotations. No values."""

    name: str
    keys: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StorageCredentials:
    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)


def summarize_secret(secret: dict[str, Any]) -> SecretSummary:
    """The summary of a Secret as the API returns it (the values are dropped here, never stored)."""
    metadata = secret.get("metadata") or {}
    keys = set((secret.get("data") or {}).keys()) | set((secret.get("stringData") or {}).keys())
    annotations = metadata.get("annotations") or {}
    wanted = tuple((name, str(annotations[ANNOTATION_PREFIX + name]))
                   for name in S3_ANNOTATIONS if ANNOTATION_PREFIX + name in annotations)
    return SecretSummary(name=str(metadata.get("name", "")), keys=tuple(sorted(keys)), annotations=wanted)


def service_account_name(isvc: dict[str, Any]) -> str:
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    return predictor.get("serviceAccountName") or DEFAULT_SERVICE_ACCOUNT


def referenced_secrets(service_account: dict[str, Any] | None) -> list[str]:
    """The names of the Secrets a ServiceAccount lists in `secrets`, in order."""
    names = []
    for item in (service_account or {}).get("secrets") or []:
        name = (item or {}).get("name")
        if name and name not in names:
            names.append(str(name))
    return names


def _s3_env(secret: SecretSummary, access: str, secret_key: str) -> list[dict[str, Any]]:
    def ref(env_name: str, key: str) -> dict[str, Any]:
        return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}

    env = [ref("AWS_ACCESS_KEY_ID", access), ref("AWS_SECRET_ACCESS_KEY", secret_key)]
    annotations = dict(secret.annotations)
    use_https = annotations.get("s3-usehttps")
    if endpoint := annotations.get("s3-endpoint"):
        https = use_https is None or use_https.strip().lower() not in ("0", "false", "no", "off")
        url = endpoint if "://" in endpoint else ("https://" if https else "http://") + endpoint
        env += [{"name": "S3_ENDPOINT", "value": endpoint}, {"name": "AWS_ENDPOINT_URL", "value": url}]
    if use_https is not None:
        env.append({"name": "S3_USE_HTTPS", "value": use_https})
    if region := annotations.get("s3-region"):
        env.append({"name": "AWS_REGION", "value": region})
    if (verify := annotations.get("s3-verifyssl")) is not None:
        env.append({"name": "S3_VERIFY_SSL", "value": verify})
    return env


def storage_credentials(secrets: list[SecretSummary]) -> StorageCredentials:
    """Env, volumes and mounts for the storage-initializer from the ServiceAccount's Secrets."""
    credentials = StorageCredentials()
    have_s3 = have_gcs = False
    for secret in secrets:
        keys = set(secret.keys)
        pair = next(((a, s) for a, s in S3_KEY_PAIRS if a in keys and s in keys), None)
        if pair is not None and not have_s3:
            credentials.env.extend(_s3_env(secret, *pair))
            have_s3 = True
        elif GCS_CREDENTIALS_KEY in keys and not have_gcs:
            credentials.volumes.append({"name": GCS_VOLUME, "secret": {"secretName": secret.name}})
            credentials.volume_mounts.append({"name": GCS_VOLUME, "mountPath": GCS_MOUNT, "readOnly": True})
            credentials.env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS",
                                    "value": GCS_MOUNT + GCS_CREDENTIALS_KEY})
            have_gcs = True
    return credentials
