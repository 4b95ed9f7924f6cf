"""The S3 fast read path checks length and CRC32 itself; anything it cannot check goes through botocore.

The body here is a real ``http.client`` response from the loopback file server, wrapped the way
botocore (StreamingBody) and urllib3 (HTTPResponse) wrap it; only those two thin wrappers are stand-ins.
"""

from __future__ import annotations

import base64
import http.client
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from isvc_runtime.storage.errors import TransientError
from isvc_runtime.storage.s3 import body_reader
from storage_support import FileServer

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def response_from_server(file_server: FileServer, tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "obj").write_bytes(PAYLOAD)
    connections: list[http.client.HTTPConnection] = []
    with file_server(tmp_path, tls_on=False) as base:
        port = int(base.rsplit(":", 1)[1])

        def make(**fields: Any) -> dict[str, Any]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connections.append(conn)
            conn.request("GET", "/obj")
            raw = conn.getresponse()
            fallback = SimpleNamespace(readinto=lambda b: -1)  # marks the botocore path when taken
            body = SimpleNamespace(_raw_stream=SimpleNamespace(_fp=raw), readinto=fallback.readinto)
            return {"Body": body, "ContentLength": len(PAYLOAD), **fields}

        yield make
    for conn in connections:
        conn.close()


def _drain(response: dict[str, Any]) -> bytes:
    readinto, finish = body_reader(response)
    buffer = memoryview(bytearray(64 * 1024))
    out = bytearray()
    while n := readinto(buffer):
        if n < 0:
            return b"<botocore path>"
        out += buffer[:n]
    finish()
    return bytes(out)


def _crc(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_fast_path_reads_the_body_and_checks_a_matching_crc32(response_from_server: Any) -> None:
    assert _drain(response_from_server(ChecksumCRC32=_crc(PAYLOAD))) == PAYLOAD


def test_fast_path_refuses_a_body_whose_crc32_differs(response_from_server: Any) -> None:
    with pytest.raises(TransientError, match="CRC32"):
        _drain(response_from_server(ChecksumCRC32=_crc(b"something else")))


def test_fast_path_refuses_a_body_shorter_than_its_content_length(response_from_server: Any) -> None:
    response = response_from_server()
    response["ContentLength"] = len(PAYLOAD) + 10
    with pytest.raises(TransientError, match=f"after {len(PAYLOAD)} of {len(PAYLOAD) + 10} bytes"):
        _drain(response)


@pytest.mark.parametrize(
    "fields",
    [
        {"ContentEncoding": "gzip"},
        {"ChecksumSHA256": "x"},
        {"ChecksumCRC32": "x", "ChecksumType": "COMPOSITE"},
    ],
)
def test_bodies_it_cannot_check_go_through_botocore(
    response_from_server: Any, fields: dict[str, str]
) -> None:
    assert _drain(response_from_server(**fields)) == b"<botocore path>"
