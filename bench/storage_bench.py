"""Storage initializer throughput against curl, on the same local servers and the same object.

    .venv/bin/python bench/storage_bench.py [--size-mb 500] [--runs 3] [--no-write]

Serves one object of --size-mb from (1) moto's S3 server and (2) the TLS file server of the tests
(tests/storage/storage_fileserver.py, throwaway CA), then times `curl` and `python -m isvc_runtime.storage`
fetching it, end to end as processes (the initializer's interpreter start-up included). The ratio is
curl's time over the initializer's (throughput relative to curl; goal >= 0.8). Best of --runs each.
Writes the table to the "Storage initializer" section of bench/results.md. Every file it creates
lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness's process helpers (e2e/processes.py)

from e2e.processes import free_port, running  # noqa: E402

FILESERVER = REPO / "tests" / "storage" / "storage_fileserver.py"
RESULTS = REPO / "bench" / "results.md"
VENV_BIN = Path(sys.executable).parent
SECTION = "## Storage initializer"
HEADER = """# Benchmark results

Machine: 2 CPU cores, 24 GiB RAM, no GPU (shared by the team while measuring). Each section says how
to reproduce its numbers.
"""


def timed(cmd: list[str], env: dict[str, str], cleanup: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one run of ``cmd``."""
    shutil.rmtree(cleanup, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(cleanup, ignore_errors=True)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def compare(curl: list[str], ours: list[str], env: dict[str, str], work: Path, runs: int) -> dict[str, float]:
    """Best of ``runs`` for each of curl and the initializer, fetching the big object and a 1-byte one
    (the fixed cost: process start-up, imports, client set-up, connection), interleaved so load from
    other jobs on the machine hits both alike. ``curl``/``ours`` end with the URL/URI of the big
    object; the tiny one has the same name with ``tiny`` in place of ``big``. CPU seconds are those
    of the fastest run."""
    out, dest = work / "curl.out", work / "dest"
    times: dict[str, list[tuple[float, float]]] = {"curl": [], "ours": [], "curl_tiny": [], "ours_tiny": []}
    tiny = [a.replace("big.bin", "tiny.bin") for a in curl], [a.replace("big.bin", "tiny.bin") for a in ours]
    for _ in range(runs):
        times["curl"].append(timed([*curl, "-o", str(out)], dict(os.environ), out))
        times["ours"].append(timed([*ours, str(dest)], env, dest))
        times["curl_tiny"].append(timed([*tiny[0], "-o", str(out)], dict(os.environ), out))
        times["ours_tiny"].append(timed([*tiny[1], str(dest)], env, dest))
    best = {k: min(v) for k, v in times.items()}
    result = {k: wall for k, (wall, _cpu) in best.items()}
    result["curl_cpu"] = best["curl"][1]
    result["ours_cpu"] = best["ours"][1]
    return result


def write_object(path: Path, size: int) -> None:
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def bench_s3(work: Path, obj: Path, runs: int) -> dict[str, float]:
    import boto3
    from boto3.s3.transfer import TransferConfig

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with running([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, timeout=60):
        creds = {"aws_access_key_id": "AKIABENCH", "aws_secret_access_key": "bench-secret"}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds)
        client.create_bucket(Bucket="bench", ACL="public-read")
        client.upload_file(
            str(obj),
            "bench",
            "models/big.bin",
            ExtraArgs={"ACL": "public-read"},
            Config=TransferConfig(multipart_threshold=8 * 1024**3),
        )
        client.put_object(Bucket="bench", Key="models/tiny.bin", Body=b"x", ACL="public-read")
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
            "AWS_REGION": "us-east-1",
        }
        return compare(
            ["curl", "-sSf", f"{endpoint}/bench/models/big.bin"],
            [sys.executable, "-m", "isvc_runtime.storage", "s3://bench/models/big.bin"],
            env,
            work,
            runs,
        )


def bench_https(work: Path, obj: Path, runs: int) -> dict[str, float]:
    sys.path.insert(0, str(FILESERVER.parent))
    from storage_fileserver import make_tls_material

    tls = make_tls_material(work / "tls")
    port = free_port()
    cmd = [sys.executable, str(FILESERVER), str(obj.parent), str(port)]
    cmd += ["--cert", str(tls["cert"]), "--key", str(tls["key"])]
    url = f"https://127.0.0.1:{port}/{obj.name}"
    with running(cmd, port, timeout=60):
        env = {**os.environ, "STORAGE_CA_BUNDLE": str(tls["ca"])}
        return compare(
            ["curl", "-sSf", "--cacert", str(tls["ca"]), url],
            [sys.executable, "-m", "isvc_runtime.storage", url],
            env,
            work,
            runs,
        )


def update_results(table: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + table
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + table + ("\n" + text[end + 1 :] if end != -1 else "")
    RESULTS.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args()
    size = args.size_mb * 1000 * 1000
    rows = []
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        obj = work / "www" / "big.bin"
        write_object(obj, size)
        (work / "www" / "tiny.bin").write_bytes(b"x")
        for name, bench in (("s3 (moto_server, http)", bench_s3), ("https (TLS file server)", bench_https)):
            rows.append((name, bench(work, obj, args.runs)))
    mb = size / 1e6
    lines = [
        f"{SECTION}",
        "",
        f"`python -m isvc_runtime.storage` vs `curl` fetching the same {args.size_mb} MB object from",
        f"the same local server; best of {args.runs} interleaved runs each, whole processes timed",
        "(interpreter start-up included). *Ratio* is curl's time over the initializer's (relative",
        "throughput, goal >= 0.8). *Fixed cost* is each tool fetching a 1-byte object from the same",
        "server (process start-up, imports, client set-up); *transfer ratio* leaves it out of both.",
        "*CPU* is user+sys seconds of the fastest run of each: wall-clock ratios swing with other",
        "jobs' load on a shared machine, CPU seconds do not.",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other jobs).",
        "Reproduce: `.venv/bin/python bench/storage_bench.py`.",
        "",
        "| source | curl s | curl MB/s | initializer s | initializer MB/s | **ratio** "
        "| fixed cost curl / initializer s | transfer ratio | CPU curl / initializer s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in rows:
        curl, ours = t["curl"], t["ours"]
        transfer = (curl - t["curl_tiny"]) / max(ours - t["ours_tiny"], 1e-9)
        lines.append(
            f"| {name} | {curl:.2f} | {mb / curl:.0f} | {ours:.2f} | {mb / ours:.0f} | **{curl / ours:.2f}** "
            f"| {t['curl_tiny']:.2f} / {t['ours_tiny']:.2f} | {transfer:.2f} "
            f"| {t['curl_cpu']:.2f} / {t['ours_cpu']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        update_results(table)


if __name__ == "__main__":
    main()
