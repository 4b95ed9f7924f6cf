"""gs://bucket/prefix with google-cloud-storage: every object under the prefix, keeping relative paths.

Credentials: GOOGLE_APPLICATION_CREDENTIALS (or any other application-default source) when present,
anonymous access otherwise. STORAGE_EMULATOR_HOST points the client at an emulator (anonymous unless
GOOGLE_APPLICATION_CREDENTIALS is set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from isvc_runtime.storage.errors import StorageError, TransientError
from isvc_runtime.storage.files import (
    CountingWriter,
    download_listing,
    relative_key,
    safe_relpath,
    split_bucket_uri,
)
from isvc_runtime.storage.progress import Progress
from isvc_runtime.storage.retry import with_retries


def make_client() -> Any:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    emulator = bool(os.environ.get("STORAGE_EMULATOR_HOST"))
    if path := os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        try:
            credentials, project = google.auth.load_credentials_from_file(
                path, scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
            )
        except (DefaultCredentialsError, ValueError, OSError) as e:
            raise StorageError(f"GOOGLE_APPLICATION_CREDENTIALS is unusable: {type(e).__name__}") from None
        if not emulator:  # emulators take no credentials: the file is checked, then not sent
            return storage.Client(credentials=credentials, project=project or "<none>")
    if emulator:
        return storage.Client.create_anonymous_client()
    try:
        return storage.Client()
    except (DefaultCredentialsError, OSError):
        return storage.Client.create_anonymous_client()


def classify(e: BaseException, what: str) -> StorageError:
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.resumable_media import common as media_common

    if isinstance(e, auth_exc.RefreshError | auth_exc.DefaultCredentialsError):
        return StorageError(f"{what}: bad Google credentials ({type(e).__name__})")
    if isinstance(e, gexc.Unauthorized | gexc.Forbidden):
        return StorageError(f"{what}: access denied (HTTP {e.code}), check the Google credentials")
    if isinstance(e, gexc.TooManyRequests | gexc.ServerError):
        return TransientError(f"{what}: HTTP {e.code} {e.message}")
    if isinstance(e, gexc.GoogleAPICallError):
        return StorageError(f"{what}: HTTP {e.code} {e.message}")
    if isinstance(e, media_common.InvalidResponse):
        status = getattr(e.response, "status_code", 0) or 0
        if status >= 500 or status == 429:
            return TransientError(f"{what}: HTTP {status}")
        return StorageError(f"{what}: HTTP {status}")
    if isinstance(e, requests.exceptions.SSLError):  # a subclass of ConnectionError, but not transient
        return StorageError(f"{what}: TLS verification failed")
    if isinstance(e, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return TransientError(f"{what}: {type(e).__name__}")
    if isinstance(e, media_common.DataCorruption):
        return TransientError(f"{what}: checksum mismatch")
    return StorageError(f"{what}: {type(e).__name__}: {e}")


def split_uri(uri: str) -> tuple[str, str]:
    return split_bucket_uri(uri, "gs://")


def fetch(uri: str, model: Path, progress: Progress) -> None:
    bucket_name, prefix = split_uri(uri)
    client = make_client()
    bucket = client.bucket(bucket_name)

    def listing() -> list[tuple[Any, str, int]]:
        try:
            found = []
            for blob in client.list_blobs(bucket_name, prefix=prefix or None, retry=None):
                rel = relative_key(blob.name, prefix)
                if rel and not rel.endswith("/"):
                    found.append((blob.name, safe_relpath(rel), int(blob.size or 0)))
            return found
        except StorageError:
            raise
        except Exception as e:
            raise classify(e, f"listing gs://{bucket_name}/{prefix}") from None

    objects = with_retries(listing, f"listing gs://{bucket_name}/{prefix}")

    def download(name: str, target: Path) -> None:
        def attempt() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as raw:
                sink = CountingWriter(raw, progress)
                try:
                    bucket.blob(name).download_to_file(sink, retry=None, checksum="md5")  # type: ignore[arg-type]
                except Exception as e:
                    progress.update(-sink.written)
                    raise classify(e, f"gs://{bucket_name}/{name}") from None

        with_retries(attempt, f"gs://{bucket_name}/{name}")

    download_listing(uri, objects, prefix, model, progress, download)
