"""s3://bucket/prefix with botocore: every object under the prefix, keeping relative paths.

Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any botocore credential source; none at all
means anonymous, unsigned requests), AWS_ENDPOINT_URL or S3_ENDPOINT (``host:port`` gets a scheme from
S3_USE_HTTPS, default 1), S3_VERIFY_SSL (0 turns verification off; AWS_CA_BUNDLE names a CA bundle),
AWS_REGION / AWS_DEFAULT_REGION, S3_ADDRESSING_STYLE (path by default for custom endpoints).
"""

from __future__ import annotations

import base64
import http.client
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isvc_runtime.storage.errors import StorageError, TransientError
from isvc_runtime.storage.files import (
    download_listing,
    insecure_warning_once,
    relative_key,
    safe_relpath,
    split_bucket_uri,
)
from isvc_runtime.storage.progress import Progress
from isvc_runtime.storage.retry import with_retries

_CHUNK = 8 * 1024 * 1024
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeTooSkewed",
}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def endpoint_url() -> str | None:
    url = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if not url:
        return None
    if "://" not in url:
        url = ("https://" if _flag("S3_USE_HTTPS", True) else "http://") + url
    return url


def make_client() -> Any:
    # botocore directly: boto3's import pulls in s3transfer, start-up time this tool does not need
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    session = botocore.session.get_session()
    endpoint = endpoint_url()
    region = (
        os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or session.get_config_variable("region")
    )
    style = os.environ.get("S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    options: dict[str, Any] = {
        "retries": {"total_max_attempts": 1},  # one retry layer: ours
        "s3": {"addressing_style": style},
        "max_pool_connections": 16,
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    if session.get_credentials() is None:
        options["signature_version"] = UNSIGNED
    verify: bool | str | None = None
    if not _flag("S3_VERIFY_SSL", True):
        verify = False
        insecure_warning_once("S3_VERIFY_SSL=0")
    return session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or "us-east-1",
        verify=verify,
        config=Config(**options),
    )


class AccessDenied(StorageError):
    """HTTP 401/403 from S3: bad or missing credentials, or a policy that does not allow the call."""


def classify(e: BaseException, what: str) -> StorageError:
    from botocore.exceptions import (
        ClientError,
        FlexibleChecksumError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
        ResponseStreamingError,
        SSLError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = f"{what}: HTTP {status}" + (f" {code}" if code and not code.isdigit() else "")
        if status in (401, 403) or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            return AccessDenied(f"{message}: access denied, check the S3 credentials")
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            return TransientError(message)
        return StorageError(message)
    if isinstance(e, SSLError):  # before ConnectionError, its base: a bad certificate is not transient
        return StorageError(f"{what}: TLS verification failed (set AWS_CA_BUNDLE to trust a CA)")
    if isinstance(e, NoCredentialsError | PartialCredentialsError):
        return StorageError(f"{what}: incomplete S3 credentials")
    transient = (
        BotoConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
        IncompleteReadError,
        FlexibleChecksumError,  # the body did not match its checksum: fetch it again
    )
    if isinstance(e, (*transient, ConnectionError, TimeoutError)):
        return TransientError(f"{what}: {type(e).__name__}: {e}")
    return StorageError(f"{what}: {type(e).__name__}: {e}")


def split_uri(uri: str) -> tuple[str, str]:
    return split_bucket_uri(uri, "s3://")


def list_objects(client: Any, bucket: str, prefix: str) -> list[tuple[str, str, int]]:
    """(key, relative path, size) of every object under the prefix."""

    def page_through() -> list[tuple[str, str, int]]:
        found = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    rel = relative_key(obj["Key"], prefix)
                    if rel is not None and rel and not rel.endswith("/"):
                        found.append((obj["Key"], safe_relpath(rel), int(obj.get("Size", 0))))
        except Exception as e:
            if isinstance(e, StorageError):
                raise
            raise classify(e, f"listing s3://{bucket}/{prefix}") from None
        return found

    return with_retries(page_through, f"listing s3://{bucket}/{prefix}")


def body_reader(response: dict[str, Any]) -> tuple[Callable[[memoryview], int], Callable[[], None]]:
    """``(readinto, finish)`` for a GetObject response body.

    The fast path receives straight from the socket into the caller's buffer through the
    ``http.client`` response that botocore and urllib3 wrap: their own ``readinto`` goes through
    ``read`` and copies every chunk two or three times, which costs as much CPU as the transfer on
    a loopback link. It is taken only when the body is plain (no content coding) and its checksum,
    if any, is a whole-object CRC32, which ``finish`` then checks along with the length. Otherwise,
    botocore's own ``readinto`` (which validates any checksum itself) is used.
    """
    body = response["Body"]
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    expected_crc = response.get("ChecksumCRC32")
    other_checksum = any(
        k.startswith("Checksum") and k not in ("ChecksumCRC32", "ChecksumType") for k in response
    )
    plain = response.get("ContentEncoding") in (None, "", "identity")
    full_object = response.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    if not (isinstance(fp, http.client.HTTPResponse) and plain and full_object and not other_checksum):
        return body.readinto, lambda: None
    expected_length = response.get("ContentLength")
    state = {"crc": 0, "length": 0}

    def readinto(buffer: memoryview) -> int:
        n = fp.readinto(buffer)
        if n:
            state["length"] += n
            if expected_crc:
                state["crc"] = zlib.crc32(buffer[:n], state["crc"])
        return n

    def finish() -> None:
        if expected_length is not None and state["length"] != expected_length:
            raise TransientError(f"connection closed after {state['length']} of {expected_length} bytes")
        if expected_crc and base64.b64encode(state["crc"].to_bytes(4, "big")).decode() != expected_crc:
            raise TransientError("body does not match its CRC32 checksum")

    return readinto, finish


def head_object(client: Any, bucket: str, key: str) -> int | None:
    """The object's size, or None when it cannot be read (missing, or access denied too)."""
    try:
        return int(client.head_object(Bucket=bucket, Key=key).get("ContentLength", 0))
    except Exception:
        return None


def fetch(uri: str, model: Path, progress: Progress) -> None:
    bucket, prefix = split_uri(uri)
    client = make_client()
    try:
        objects = list_objects(client, bucket, prefix)
    except AccessDenied:
        # Credentials may allow reading one object without listing the bucket (s3:GetObject only):
        # a URI that names that object still works.
        if not prefix or prefix.endswith("/"):
            raise
        size = head_object(client, bucket, prefix)
        if size is None:
            raise
        objects = [(prefix, safe_relpath(prefix.rsplit("/", 1)[-1]), size)]

    def download(key: str, target: Path) -> None:
        # One streamed GET per object, like curl: measured faster than s3transfer's ranged GETs against
        # local S3 servers, and restarted from scratch by the retry loop when the connection drops.
        def attempt() -> None:
            written = 0
            what = f"s3://{bucket}/{key}"
            try:
                response = client.get_object(Bucket=bucket, Key=key)
                readinto, finish = body_reader(response)
                buffer = memoryview(bytearray(_CHUNK))  # one reused buffer: no per-chunk allocation
                with response["Body"], open(target, "wb", buffering=0) as out:
                    while n := readinto(buffer):
                        done = 0
                        while done < n:
                            done += out.write(buffer[done:n])
                        written += n
                        progress.update(n)
                    finish()
            except TransientError as e:
                progress.update(-written)
                raise TransientError(f"{what}: {e}") from None
            except Exception as e:
                progress.update(-written)
                raise classify(e, what) from None

        target.parent.mkdir(parents=True, exist_ok=True)
        with_retries(attempt, f"s3://{bucket}/{key}")

    download_listing(uri, objects, prefix, model, progress, download)
