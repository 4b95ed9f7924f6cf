"""http:// and https:// URLs: one streamed GET; .zip/.tar/.tar.gz/.tgz are extracted, others kept by name.

Environment: STORAGE_HTTP_HEADERS (a JSON object of extra request headers, e.g. an Authorization
header; never printed), STORAGE_CA_BUNDLE (a PEM file of CAs to trust; REQUESTS_CA_BUNDLE and
SSL_CERT_FILE work too), STORAGE_HTTP_VERIFY=0 (turns TLS verification off; on by default),
HTTP_PROXY / HTTPS_PROXY / NO_PROXY (honoured as usual).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from isvc_runtime.storage.errors import StorageError, TransientError, redact_uri
from isvc_runtime.storage.files import CountingWriter, download_path, insecure_warning_once, place_single_file
from isvc_runtime.storage.progress import Progress
from isvc_runtime.storage.retry import with_retries

_CHUNK = 1024 * 1024


def request_headers() -> dict[str, str]:
    raw = os.environ.get("STORAGE_HTTP_HEADERS", "")
    if not raw.strip():
        return {}
    try:
        headers = json.loads(raw)
    except ValueError:
        raise StorageError("STORAGE_HTTP_HEADERS is not a JSON object") from None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise StorageError("STORAGE_HTTP_HEADERS must be a JSON object of string values")
    return {str(k): v for k, v in headers.items()}


def tls_verify() -> bool | str:
    if os.environ.get("STORAGE_HTTP_VERIFY", "1").strip().lower() in ("0", "false", "no", "off"):
        insecure_warning_once("STORAGE_HTTP_VERIFY=0")
        return False
    bundle = os.environ.get("STORAGE_CA_BUNDLE")
    if bundle:
        if not os.path.isfile(bundle):
            raise StorageError(f"STORAGE_CA_BUNDLE {bundle} is not a file")
        return bundle
    return True


def file_name(url: str, content_disposition: str | None) -> str:
    """The name the download is kept under: the URL's last path segment, else Content-Disposition."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name and content_disposition:
        match = re.search(r'filename="?([^";]+)"?', content_disposition)
        if match:
            name = match.group(1)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        name = "model"
    return name


def fetch(uri: str, model: Path, progress: Progress) -> None:
    import requests

    shown = redact_uri(uri)
    session = requests.Session()
    session.headers.update(request_headers())
    verify = tls_verify()
    result: dict[str, object] = {}

    def attempt() -> None:
        before = progress.done
        try:
            with session.get(uri, stream=True, verify=verify, timeout=(10, 60)) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    raise TransientError(f"GET {shown}: HTTP {status} {response.reason}")
                if status >= 400:
                    hint = ", check STORAGE_HTTP_HEADERS" if status in (401, 403) else ""
                    raise StorageError(f"GET {shown}: HTTP {status} {response.reason}{hint}")
                name = file_name(response.url or uri, response.headers.get("Content-Disposition"))
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and "total" not in result:
                    progress.add_total(int(length))
                    result["total"] = int(length)
                target = download_path(model, name)
                with open(target, "wb") as raw:
                    sink = CountingWriter(raw, progress)
                    for chunk in response.iter_content(_CHUNK):
                        sink.write(chunk)
                    written = sink.written
                encoded = response.headers.get("Content-Encoding", "identity") != "identity"
                if length and length.isdigit() and not encoded and written != int(length):
                    raise TransientError(f"GET {shown}: connection closed after {written} of {length} bytes")
                result["name"] = name
                result["path"] = target
        except requests.exceptions.SSLError:
            progress.update(before - progress.done)
            hint = "set STORAGE_CA_BUNDLE to trust a CA"
            raise StorageError(f"GET {shown}: TLS verification failed ({hint})") from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            progress.update(before - progress.done)
            raise TransientError(f"GET {shown}: {type(e).__name__}") from None
        except TransientError:
            progress.update(before - progress.done)
            raise

    with_retries(attempt, f"GET {shown}")
    place_single_file(Path(str(result["path"])), str(result["name"]), model)
