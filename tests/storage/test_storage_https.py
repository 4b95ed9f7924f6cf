"""http(s):// against a real TLS file server with a throwaway CA; retries, proxies, kills, progress."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from isvc_runtime.storage.placement import COMPLETE_MARKER, STAGING_PREFIX
from storage_support import FileServer, clean_env, run_initializer, served_dir, tree_bytes, write_tar


def _visible(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))


def test_https_tar_gz_is_extracted_into_the_torchserve_store_layout(
    file_server: FileServer, tls: dict[str, Path], model_files: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    _root, files = model_files
    served = served_dir(tmp_path)
    write_tar(served / "mnist.tar.gz", list(files.items()), mode="w:gz")
    dest = tmp_path / "models"
    dest.mkdir()
    with file_server(served) as base:
        result = run_initializer(f"{base}/mnist.tar.gz", dest, clean_env(STORAGE_CA_BUNDLE=str(tls["ca"])))
    assert result.returncode == 0, result.stderr
    assert tree_bytes(dest) == files
    assert (dest / COMPLETE_MARKER).is_file()


def test_https_zip_and_plain_files(file_server: FileServer, tls: dict[str, Path], tmp_path: Path) -> None:
    import zipfile

    served = served_dir(tmp_path)
    with zipfile.ZipFile(served / "bundle.zip", "w") as zf:
        zf.writestr("config/config.properties", "a=b\n")
    (served / "mnist.mar").write_bytes(b"mar bytes")
    env = clean_env(REQUESTS_CA_BUNDLE=str(tls["ca"]))  # the standard variable works too
    with file_server(served) as base:
        zipped = run_initializer(f"{base}/bundle.zip", tmp_path / "z", env)
        plain = run_initializer(f"{base}/mnist.mar", tmp_path / "p", env)
    assert zipped.returncode == 0, zipped.stderr
    assert plain.returncode == 0, plain.stderr
    assert tree_bytes(tmp_path / "z") == {"config/config.properties": b"a=b\n"}
    assert tree_bytes(tmp_path / "p") == {"mnist.mar": b"mar bytes"}


def test_https_untrusted_certificate_is_refused_by_default(file_server: FileServer, tmp_path: Path) -> None:
    served = served_dir(tmp_path, {"m.mar": b"m"})
    with file_server(served) as base:
        result = run_initializer(f"{base}/m.mar", tmp_path / "out", clean_env())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS verification failed" in lines[0], result.stderr
    assert _visible(tmp_path / "out") == []


def test_server_failing_twice_is_retried_to_success(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path, {"m.mar": b"model"})
    with file_server(served, fail_first=2) as base:
        result = run_initializer(
            f"{base}/m.mar", tmp_path / "out", clean_env(STORAGE_CA_BUNDLE=str(tls["ca"]))
        )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("HTTP 503") == 2
    assert "retry 1/5" in result.stderr and "retry 2/5" in result.stderr
    assert tree_bytes(tmp_path / "out") == {"m.mar": b"model"}


def test_server_failing_beyond_the_retry_budget_is_an_error(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path, {"m.mar": b"model"})
    env = clean_env(STORAGE_CA_BUNDLE=str(tls["ca"]), STORAGE_RETRIES="1")
    with file_server(served, fail_first=5) as base:
        result = run_initializer(f"{base}/m.mar", tmp_path / "out", env)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("HTTP 503 Service Unavailable (gave up after 2 attempts)")
    )


def test_not_found_fails_at_once_without_leaking_url_secrets(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path)
    with file_server(served) as base:
        url = base.replace("https://", "https://alice:pa55word@") + "/missing.mar?X-Amz-Signature=deadbeef42"
        result = run_initializer(url, tmp_path / "out", clean_env(STORAGE_CA_BUNDLE=str(tls["ca"])))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 404" in lines[0] and "retry" not in lines[0], result.stderr
    assert "pa55word" not in result.stderr and "deadbeef42" not in result.stderr
    assert "/missing.mar?REDACTED" in lines[0]


def test_headers_from_the_environment_are_sent_and_never_printed(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path, {"m.mar": b"model"})
    token = "Bearer tok-4f9c2e-very-secret"
    with file_server(served, header=f"Authorization: {token}") as base:
        denied = run_initializer(f"{base}/m.mar", tmp_path / "a", clean_env(STORAGE_CA_BUNDLE=str(tls["ca"])))
        env = clean_env(
            STORAGE_CA_BUNDLE=str(tls["ca"]), STORAGE_HTTP_HEADERS=json.dumps({"Authorization": token})
        )
        allowed = run_initializer(f"{base}/m.mar", tmp_path / "b", env)
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr and "STORAGE_HTTP_HEADERS" in denied.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert tree_bytes(tmp_path / "b") == {"m.mar": b"model"}
    assert "tok-4f9c2e" not in denied.stderr + allowed.stderr


def test_http_proxy_from_the_environment_is_honoured(file_server: FileServer, tmp_path: Path) -> None:
    # the file server also answers proxy-style requests (absolute URIs), so it stands as the proxy here;
    # the origin's name does not resolve at all, so success means the request went through the proxy
    served = served_dir(tmp_path, {"m.mar": b"via proxy"})
    with file_server(served, tls_on=False) as proxy:
        env = clean_env(HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="", no_proxy="")
        result = run_initializer("http://models.example.invalid/m.mar", tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    assert tree_bytes(tmp_path / "out") == {"m.mar": b"via proxy"}


def test_sigkill_mid_download_leaves_no_partial_model_and_next_run_recovers(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path)
    payload = os.urandom(8 * 1024 * 1024)
    (served / "big.mar").write_bytes(payload)
    dest = tmp_path / "models"
    dest.mkdir()
    env = clean_env(STORAGE_CA_BUNDLE=str(tls["ca"]))
    with file_server(served, rate=2 * 1024 * 1024) as base:
        proc = subprocess.Popen(
            [sys.executable, "-m", "isvc_runtime.storage", f"{base}/big.mar", str(dest)],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            partial = 0
            while time.monotonic() < deadline and partial < 1024 * 1024:
                partial = sum(p.stat().st_size for p in dest.glob(f"{STAGING_PREFIX}*/*") if p.is_file())
                time.sleep(0.05)
            assert partial >= 1024 * 1024, "the download never got going"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        assert _visible(dest) == []
        assert not (dest / COMPLETE_MARKER).exists()
    with file_server(served) as base:
        result = run_initializer(f"{base}/big.mar", dest, env)
    assert result.returncode == 0, result.stderr
    assert (dest / "big.mar").read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == [COMPLETE_MARKER, "big.mar"]


def test_large_transfer_reports_progress_with_rate_and_eta_at_a_bounded_pace(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path, {"w.bin": os.urandom(3 * 1024 * 1024)})
    env = clean_env(STORAGE_CA_BUNDLE=str(tls["ca"]), STORAGE_PROGRESS_SECONDS="0.5")
    with file_server(served, rate=1024 * 1024) as base:
        started = time.monotonic()
        result = run_initializer(f"{base}/w.bin", tmp_path / "out", env)
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if "ETA" in line]
    assert progress, result.stderr
    pattern = re.compile(
        r"^storage-initializer: [\d.]+ [KM]iB / 3\.0 MiB \(\d+%\) at [\d.]+ [KM]iB/s, ETA \d+s$"
    )
    assert all(pattern.match(line) for line in progress), progress
    assert len(progress) <= elapsed / 0.5 + 1


def test_sigterm_mid_download_cleans_up_and_exits_143(
    file_server: FileServer, tls: dict[str, Path], tmp_path: Path
) -> None:
    served = served_dir(tmp_path, {"big.mar": os.urandom(8 * 1024 * 1024)})
    dest = tmp_path / "models"
    dest.mkdir()
    # 8 s of download at 1 MiB/s: the SIGTERM lands mid-download even when this process is starved of CPU
    # for seconds (on a loaded machine it once came only after a 2 MiB/s download had ended).
    with file_server(served, rate=1024 * 1024) as base:
        proc = subprocess.Popen(
            [sys.executable, "-m", "isvc_runtime.storage", f"{base}/big.mar", str(dest)],
            env=clean_env(STORAGE_CA_BUNDLE=str(tls["ca"])),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(dest.glob(f"{STAGING_PREFIX}*/*")):
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "storage-initializer: error: interrupted"
    assert list(dest.iterdir()) == []


def test_verification_turned_off_says_so_once_and_downloads(file_server: FileServer, tmp_path: Path) -> None:
    served = served_dir(tmp_path, {"m.mar": b"model"})
    with file_server(served, fail_first=1) as base:
        result = run_initializer(f"{base}/m.mar", tmp_path / "out", clean_env(STORAGE_HTTP_VERIFY="0"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "storage-initializer: TLS certificate verification is off (STORAGE_HTTP_VERIFY=0)"
    assert "InsecureRequestWarning" not in result.stderr
    assert tree_bytes(tmp_path / "out") == {"m.mar": b"model"}
