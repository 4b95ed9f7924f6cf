"""S3 credentials against a moto server that enforces IAM authentication (INITIAL_NO_AUTH_ACTION_COUNT:
the first few calls set up a user, its key, a bucket and an object; every later call is checked)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from storage_support import VENV_BIN, clean_env, free_port, run_initializer, running, tree_bytes

# two users (create_user, create_access_key, put_user_policy each), create_bucket, put_object
SETUP_CALLS = 8
MAR_KEY = "mnist/model-store/mnist.mar"


def _user(iam: Any, name: str, statement: dict[str, Any]) -> dict[str, str]:
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **statement}]}
    iam.put_user_policy(UserName=name, PolicyName="models", PolicyDocument=json.dumps(policy))
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.fixture(scope="module")
def authenticated_s3() -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """(endpoint, credentials allowed everything, credentials allowed GetObject on the .mar only)"""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(cmd, port, env={"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_CALLS)}):
        bootstrap = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **bootstrap)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **bootstrap)
        full = _user(iam, "model-reader", {"Action": "s3:*", "Resource": "*"})
        one = _user(
            iam, "mar-reader", {"Action": "s3:GetObject", "Resource": f"arn:aws:s3:::models/{MAR_KEY}"}
        )
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key=MAR_KEY, Body=b"mar")
        yield endpoint, full, one


def test_valid_access_key_reads_the_model(
    authenticated_s3: tuple[str, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    endpoint, creds, _one = authenticated_s3
    result = run_initializer(
        "s3://models/mnist", tmp_path / "out", clean_env(AWS_ENDPOINT_URL=endpoint, **creds)
    )
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"model-store/mnist.mar": b"mar"}
    assert creds["AWS_SECRET_ACCESS_KEY"] not in result.stderr


@pytest.mark.parametrize(
    "key_id,secret,code",
    [
        (None, "wrong-secret-0123456789", "SignatureDoesNotMatch"),
        ("AKIANOSUCHKEY0000000", "x" * 40, "InvalidAccessKeyId"),
    ],
)
def test_bad_credentials_fail_at_once_with_one_line_and_no_secret(
    authenticated_s3: tuple[str, dict[str, str], dict[str, str]],
    tmp_path: Path,
    key_id: str | None,
    secret: str,
    code: str,
) -> None:
    endpoint, creds, _one = authenticated_s3
    env = clean_env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=key_id or creds["AWS_ACCESS_KEY_ID"],
        AWS_SECRET_ACCESS_KEY=secret,
    )
    result = run_initializer("s3://models/mnist", tmp_path / "out", env)
    assert result.returncode == 1
    expected = f"listing s3://models/mnist: HTTP 403 {code}: access denied, check the S3 credentials"
    assert result.stderr.strip().splitlines() == [f"storage-initializer: error: {expected}"]
    assert secret not in result.stderr
    assert [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")] == []


def test_credentials_for_one_object_without_list_permission_read_that_object(
    authenticated_s3: tuple[str, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    endpoint, _full, one = authenticated_s3
    env = clean_env(AWS_ENDPOINT_URL=endpoint, **one)
    result = run_initializer(f"s3://models/{MAR_KEY}", tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"mnist.mar": b"mar"}
    listing = run_initializer("s3://models/mnist", tmp_path / "prefix", env)
    assert listing.returncode == 1
    assert "listing s3://models/mnist: HTTP 403 AccessDenied: access denied" in listing.stderr
