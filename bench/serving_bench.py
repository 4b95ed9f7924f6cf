"""Side-by-side serving benchmark: TorchServe 0.12.0 against our runtime, same archive, same load.

    make bench                          # or: .venv/bin/python bench/serving_bench.py [--quick]

One run on one machine:
  1. installs TorchServe 0.12.0 + torch-model-archiver into bench/.venv-torchserve when missing, and wrk;
  2. builds the MNIST model store with examples/mnist/build_model_store.py into a temp dir (our archive),
     and a second archive of the same model/weights/normalisation with a TorchServe handler;
  3. measures the in-process ceiling (the model's forward alone);
  4. serves the archive with (a) TorchServe defaults, (b) TorchServe's best error-free v1 setup,
     (c) our runtime's defaults, (d) our runtime tuned, plus a short check that TorchServe with
     batchSize=8 on its KServe v1 envelope answers 503;
  5. drives each with wrk (one thread, keep-alive, seed request): req/s, p50, p99 at each concurrency
     for v1 predict and v2 infer, explain p50 at concurrency 1, cold start (launch -> first 200);
  6. prints one table, writes our section of bench/results.md, and prints the key ratios as the
     LAST line (one JSON object).
Every process started is stopped at the end, on Ctrl-C and on failure (process groups).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import serving_ceiling
import serving_env
import serving_load
import serving_procs
import serving_report

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # the runtime's command line, as the tests start it

from support.modules import load_module  # noqa: E402
from support.runtime import runtime_command  # noqa: E402

from e2e.processes import free_port  # noqa: E402

# ../shared beside the checkout, or where $TORCH_ISVC_SHARED_DIR says (as examples/mnist/data.py reads it)
SHARED = Path(os.environ.get("TORCH_ISVC_SHARED_DIR") or REPO_ROOT.parent / "shared")
MNIST_REQUEST = SHARED / "data" / "requests" / "v1" / "mnist.json"
RESULTS_MD = BENCH_DIR / "results.md"
TS_HANDLER = BENCH_DIR / "ts_mnist_handler.py"
MNIST_DIR = REPO_ROOT / "examples" / "mnist"
EXPLAIN_STEPS = 15  # TorchServe's VisionHandler hard-codes n_steps=15: both sides use it
EXPECTED_DIGIT = 2  # the seed request is a "2"

# Our runtime, tuned for throughput: batch across requests, and intra-op threads on every CPU. The default
# (CPUs minus one) keeps a core for the event loop, which needs about a quarter of one at c32 with
# batching: on 2 CPUs every core gave +33-45% req/s at c32 (2,744 -> 3,662), p99 13.6 -> 20.7 ms.
OURS_TUNED_ARGS = (
    "--batch-size",
    "32",
    "--max-batch-delay",
    "5",
    "--torch-threads",
    str(len(os.sched_getaffinity(0))),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- machine


def machine_description() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    torch_version = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    java = (
        subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
        if shutil.which("java")
        else []
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "torch": torch_version,
        "python": platform.python_version(),
        "java": java[0] if java else "unknown",
        "kernel": platform.release(),
        "revision": source_revision(),
    }


def source_revision() -> str:
    """The commit measured, with ``+dirty`` when the working tree had changes (runtime edits too)."""
    if shutil.which("git") is None:
        return "unknown"
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "runtime", "examples"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (head or "unknown") + ("+dirty" if dirty else "")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# ----------------------------------------------------------------------------------------- stores


def build_stores(work: Path, *, torchserve: bool = True) -> tuple[Path, Path]:
    """Our model store (the example's own builder) and TorchServe's model-store directory (left empty
    when ``torchserve`` is false: no TorchServe setup is measured)."""
    builder = load_module(MNIST_DIR / "build_model_store.py", "bench_build_model_store")
    ours = work / "ours"
    builder.build_model_store(ours, model_store=str(ours / "model-store"))
    ts_store = work / "torchserve" / "model-store"
    if not torchserve:
        return ours, ts_store
    ts_store.mkdir(parents=True)
    subprocess.run(
        [
            str(serving_env.ts_bin("torch-model-archiver")),
            "--model-name",
            "mnist",
            "--version",
            "1.0",
            "--model-file",
            str(MNIST_DIR / "mnist.py"),
            "--serialized-file",
            str(MNIST_DIR / "mnist_cnn.pt"),
            "--handler",
            str(TS_HANDLER),
            "--export-path",
            str(ts_store),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return ours, ts_store


def ts_config(
    ts_store: Path,
    *,
    batch_size: int = 1,
    max_batch_delay_ms: int = 10,
    workers: int = 1,
    job_queue_size: int = 10,
    model_name: str = "mnist",
) -> tuple[str, int]:
    """The seed's config.properties for TorchServe on free loopback ports, with the KServe v1 envelope
    (what KServe's TorchServe predictor sets); returns (text, inference port)."""
    builder = load_module(MNIST_DIR / "build_model_store.py", "bench_build_model_store")
    ports = [free_port() for _ in range(5)]
    text = builder.config_properties(
        model_name=model_name,
        model_store=str(ts_store),
        inference_port=ports[0],
        management_port=ports[1],
        metrics_port=ports[2],
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
    )
    text = text.replace("http://0.0.0.0:", "http://127.0.0.1:")
    text = text.replace("job_queue_size=10", f"job_queue_size={job_queue_size}")
    text = text.replace('"minWorkers":1', f'"minWorkers":{workers}')
    text += f"service_envelope=kserve\ngrpc_inference_port={ports[3]}\ngrpc_management_port={ports[4]}\n"
    return text, ports[0]


# ---------------------------------------------------------------------------------------- servers


def torchserve_server(
    name: str, work: Path, ts_store: Path, *, env: dict[str, str], **config: Any
) -> serving_procs.Server:
    run_dir = work / name
    (run_dir / "tmp").mkdir(parents=True)  # the server's directory, made before serving_procs.server_in
    text, port = ts_config(ts_store, **config)
    config_path = run_dir / "config.properties"
    config_path.write_text(text)
    torchserve = str(serving_env.ts_bin("torchserve"))
    # TMPDIR isolates TorchServe's pid file (tempfile.gettempdir()) so --stop finds this instance only.
    full_env = {
        "TMPDIR": str(run_dir / "tmp"),
        "LOG_LOCATION": str(run_dir / "logs"),
        "METRICS_LOCATION": str(run_dir / "logs"),
        **env,
    }
    command = [torchserve, "--start", "--foreground", "--ncs", "--disable-token-auth"]
    command += ["--model-store", str(ts_store), "--ts-config", str(config_path)]
    return serving_procs.server_in(
        work, name, command, port, env=full_env, stop_command=[torchserve, "--stop"]
    )


def our_server(
    name: str, work: Path, store: Path, args: Sequence[str], *, grpc: bool = False
) -> serving_procs.Server:
    """Our runtime on free loopback ports; with ``grpc``, its gRPC server on a port of its own too."""
    port = free_port()
    grpc_port = free_port() if grpc else None
    grpc_args = ("--grpc-port", str(grpc_port)) if grpc_port else ()
    command = runtime_command(store, port, "--work-dir", str(work / name / "work"), *grpc_args, *args)
    return serving_procs.server_in(work, name, command, port, grpc_port=grpc_port)


# ------------------------------------------------------------------------------------------ bodies


def request_bodies(work: Path) -> dict[str, Path]:
    mnist_request = json.loads(MNIST_REQUEST.read_bytes())
    png_b64 = mnist_request["instances"][0]["data"]
    base64.b64decode(png_b64, validate=True)
    bodies = {
        "v1": MNIST_REQUEST.read_bytes(),
        "v2": json.dumps(
            {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [png_b64]}]}
        ).encode(),
        "explain_ours": json.dumps({**mnist_request, "parameters": {"n_steps": EXPLAIN_STEPS}}).encode(),
    }
    paths = {}
    for name, body in bodies.items():
        path = work / f"body-{name}.json"
        path.write_bytes(body)
        paths[name] = path
    return paths


def v1_answer_ok(answer: bytes) -> bool:
    try:
        return json.loads(answer).get("predictions") == [EXPECTED_DIGIT]
    except (ValueError, AttributeError):
        return False


def v2_answer_ok(answer: bytes) -> bool:
    try:
        outputs = json.loads(answer)["outputs"]
        return [int(v) for v in outputs[0]["data"]] == [EXPECTED_DIGIT]
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def explain_answer_ok(answer: bytes) -> bool:
    try:
        explanation = json.loads(answer)["explanations"][0]
        return len(explanation) == 1 and len(explanation[0]) == 28 and len(explanation[0][0]) == 28
    except (ValueError, KeyError, IndexError, TypeError):
        return False


# --------------------------------------------------------------------------------------- measuring


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, wrk: str, bodies: dict[str, Path]) -> None:
        self.args = args
        self.work = work
        self.wrk = wrk
        self.bodies = bodies
        self.notes: list[str] = []
        self.batch_error = ""
        self.loads: list[float] = []  # 1-minute load average at each load point

    def point(
        self, server: serving_procs.Server, path: str, body: str, connections: int, seconds: float
    ) -> dict[str, Any]:
        url = f"http://127.0.0.1:{server.port}{path}"
        self.loads.append(os.getloadavg()[0])
        result = serving_load.run_wrk(
            self.wrk, url, self.bodies[body], connections=connections, seconds=seconds
        ).as_dict()
        log(
            f"  {server.name} {path} c{connections}: {result['rps']:.0f} req/s,"
            f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}"
        )
        return result

    def check(self, server: serving_procs.Server, path: str, body: str, ok: Callable[[bytes], bool]) -> bool:
        """One request answers 200 with the right content; a 503 (a queue still draining after a
        load point) is retried for a few seconds, anything else fails at once."""
        deadline = time.monotonic() + 15
        while True:
            status, answer = serving_procs.post(server.port, path, self.bodies[body].read_bytes())
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        good = status == 200 and ok(answer)
        if not good:
            log(f"  {server.name} {path}: HTTP {status} {answer[:200]!r}")
        return good

    def measure(
        self,
        server: serving_procs.Server,
        *,
        label: str,
        settings: str,
        v1_path: str,
        v2_path: str | None,
        explain: tuple[str, str] | None,
    ) -> dict[str, Any]:
        log(f"{label}: starting")
        entry: dict[str, Any] = {"label": label, "settings": settings, "v1": {}, "v2": {}, "explain": None}
        server.start()
        try:
            entry["cold_start_s"] = server.wait_first_answer(
                v1_path, self.bodies["v1"].read_bytes(), accept=v1_answer_ok
            )
            log(f"  cold start {entry['cold_start_s']:.2f} s")
            seconds = self.args.seconds
            serving_load.run_wrk(
                self.wrk,
                f"http://127.0.0.1:{server.port}{v1_path}",
                self.bodies["v1"],
                connections=8,
                seconds=self.args.warmup,
            )
            for c in self.args.concurrency:
                entry["v1"][c] = self.point(server, v1_path, "v1", c, seconds)
            if v2_path is not None and self.check(server, v2_path, "v2", v2_answer_ok):
                for c in self.args.concurrency:
                    entry["v2"][c] = self.point(server, v2_path, "v2", c, seconds)
            if explain is not None:
                path, body = explain
                if self.check(server, path, body, explain_answer_ok):
                    entry["explain"] = self.point(server, path, body, 1, self.args.explain_seconds)
                else:
                    self.notes.append(f"{label}: explain not available ({path}), shown as n/a")
            entry["answers_ok"] = self.check(server, v1_path, "v1", v1_answer_ok)
        finally:
            left = server.stop()
            if left:
                raise RuntimeError(f"{server.name}: processes left after stop: {left}")
        return entry

    def ts_batch_check(self, ts_store: Path, clients: int = 8, rounds: int = 8) -> dict[str, Any]:
        """TorchServe with batchSize=8 on the KServe v1 envelope: ``clients`` threads each send
        ``rounds`` seed requests; count the answers by HTTP status (and one lone request's status)."""
        server = torchserve_server(
            "ts_batch8",
            self.work,
            ts_store,
            env={"OMP_NUM_THREADS": "1"},
            batch_size=8,
            max_batch_delay_ms=10,
            job_queue_size=100,
        )
        log("TorchServe batchSize=8 (KServe v1 envelope): starting")
        body = self.bodies["v1"].read_bytes()
        server.start()
        try:
            self._wait_ts_ready(server)
            single_status, _ = serving_procs.post(server.port, "/predictions/mnist", body)

            def client(_: int) -> list[str]:
                statuses = []
                for _round in range(rounds):
                    try:
                        status, answer = serving_procs.post(server.port, "/predictions/mnist", body)
                        statuses.append(str(status))
                        if status != 200 and not self.batch_error:
                            self.batch_error = answer[:160].decode(errors="replace")
                    except OSError as exc:
                        statuses.append(type(exc).__name__)
                return statuses

            self.batch_error = ""
            with ThreadPoolExecutor(clients) as pool:
                statuses = [s for chunk in pool.map(client, range(clients)) for s in chunk]
        finally:
            left = server.stop()
            if left:
                raise RuntimeError(f"{server.name}: processes left after stop: {left}")
        counts = dict(Counter(statuses))
        log(f"  batchSize=8: {counts}; single request: {single_status}; {self.batch_error}")
        return {
            "requests": len(statuses),
            "counts": counts,
            "errors": sum(n for status, n in counts.items() if status != "200"),
            "single_status": single_status,
            "error_body": " ".join(self.batch_error.split()),
        }

    def _wait_ts_ready(self, server: serving_procs.Server, timeout: float = 180) -> None:
        """Until any answer (even a 503) comes from the model's endpoint, i.e. a worker is up."""
        import http.client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
                connection.request("GET", "/ping")
                response = connection.getresponse()
                healthy = response.status == 200 and b"Healthy" in response.read()
                connection.close()
                if healthy:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{server.name} not healthy after {timeout} s:\n{server.log_tail()}")


# -------------------------------------------------------------------------------------------- main


def ts_best_candidate(bench: Bench, work: Path, ts_store: Path, workers: int) -> Callable[[], dict[str, Any]]:
    """TorchServe at its best on the v1 envelope: one intra-op thread per worker, a queue that does not
    refuse work; batchSize stays 1 (more fails on the KServe v1 envelope)."""

    def run() -> dict[str, Any]:
        return bench.measure(
            torchserve_server(
                f"ts_best_w{workers}",
                work,
                ts_store,
                env={"OMP_NUM_THREADS": "1"},
                workers=workers,
                job_queue_size=1000,
            ),
            label=f"TorchServe OMP=1, {workers} worker(s)",
            settings=f"(a) plus `OMP_NUM_THREADS=1`, minWorkers {workers}, job_queue_size 1000"
            " (batchSize stays 1: more fails on the KServe v1 envelope)",
            v1_path="/predictions/mnist",
            v2_path=None,
            explain=("/explanations/mnist", "v1"),
        )

    return run


def order_results(measured: dict[str, Any], concurrency: Sequence[int]) -> dict[str, Any]:
    """(a), (b) = the best TorchServe candidate, the other candidates, (c), (d)."""
    candidates = {k: v for k, v in measured.items() if k.startswith("ts_best_w")}
    best = serving_report.pick_best(candidates, max(concurrency))
    results: dict[str, Any] = {}
    if "ts_default" in measured:
        results["ts_default"] = measured["ts_default"]
    if best is not None:
        results["ts_best"] = {
            **candidates[best],
            "label": f"(b) TorchServe best v1: {candidates[best]['label']}",
        }
    for key, entry in candidates.items():
        if key != best:
            results[key] = {**entry, "label": f"(b candidate) {entry['label']}"}
    for key in ("ours_default", "ours_tuned"):
        if key in measured:
            results[key] = measured[key]
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per load point (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load per server")
    parser.add_argument("--explain-seconds", type=float, default=None, help="seconds of the explain point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--ts-best-workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts tried for TorchServe's best setup (b); the error-free fastest at c32 wins",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=["ts_default", "ts_best", "ours_default", "ours_tuned", "ts_batch8"],
        help="run only these configurations (development; ratios need all four)",
    )
    parser.add_argument("--quick", action="store_true", help="development: 3 s points, c1 and c32 only")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results.md")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp dir (server logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.concurrency = 3.0, 1.0, [1, 32]
    if args.explain_seconds is None:
        args.explain_seconds = args.seconds
    if 32 not in args.concurrency:
        args.concurrency.append(32)
    return args


def ceiling(seconds: float) -> dict[str, float]:
    """The model's forward alone, in-process: single-image forwards/s on one thread, and images/s at
    batch 32 on one thread and on every core (``best``: the higher batch-32 figure, the ceiling)."""
    out = {}
    cores = os.cpu_count() or 1
    for key, threads, batch in (
        ("single_1thread", 1, 1),
        ("batch32_1thread", 1, 32),
        ("batch32_all_cores", cores, 32),
    ):
        out[key] = serving_ceiling.in_subprocess(threads, batch, seconds)
        log(f"ceiling {key}: {out[key]:.0f} images/s")
    out["best"] = max(out["batch32_1thread"], out["batch32_all_cores"])
    return out


def results_section(
    machine: dict[str, str],
    loads: tuple[str, str, str],
    args: argparse.Namespace,
    results: dict[str, Any],
    ceilings: dict[str, float],
    ratios: dict[str, Any],
    batch8: dict[str, Any] | None,
    notes: list[str],
    table: str,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## Serving: our runtime vs TorchServe 0.12.0 (MNIST, `make bench`)",
        "",
        f"Run {when}: {machine['nproc']} CPUs ({machine['cpu']}), {machine['ram']} RAM,"
        f" torch {machine['torch']}, source {machine['revision']},"
        f" Python {machine['python']}, {machine['java']}, kernel {machine['kernel']}.",
        f"Load average (1/5/15 min) before the run: {loads[0]}; after: {loads[1]}; 1-min load at the"
        f" load points: {loads[2]}.",
        f'wrk, one thread, keep-alive, the seed request (a PNG "2"), {args.seconds:g} s per point'
        f" after {args.warmup:g} s warm-up; explain at concurrency 1 with n_steps={EXPLAIN_STEPS}"
        " on both sides.",
        "Cells: successful req/s / p50 ms / p99 ms; `(N err)` counts HTTP >= 400 and socket errors"
        " (wrk's latency percentiles include the error answers).",
        "",
        table,
        "",
        "Setups:",
    ]
    lines += [f"- **{entry['label']}**: {entry['settings']}" for entry in results.values()]
    lines += [
        "",
        f"In-process ceiling (the model's forward alone): {ceilings['single_1thread']:.0f} single-image"
        f" forwards/s on one thread; at batch 32, {ceilings['batch32_1thread']:.0f} images/s on one"
        f" thread and {ceilings['batch32_all_cores']:.0f} images/s on {machine['nproc']} threads."
        f" `ceiling_fraction` divides our tuned v1 c32 throughput by the higher batch-32 figure.",
    ]
    if batch8 is not None:
        lines.append(
            f"TorchServe with batchSize=8 on its KServe v1 envelope (OMP_NUM_THREADS=1): of"
            f" {batch8['requests']} seed requests sent by 8 concurrent clients, {batch8['errors']} failed"
            f" (by status: {batch8['counts']}; e.g. `{batch8['error_body']}`); a lone request got HTTP"
            f" {batch8['single_status']}. Not error-free, so not a candidate for (b)."
        )
    lines += ["", "Key ratios (ours / TorchServe; see bench/serving_report.py for the definitions):", ""]
    lines += ["```json", json.dumps(ratios), "```", "", "Against the targets:", ""]
    lines += [f"- {line}" for line in serving_report.acceptance(ratios)]
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    serving_procs.install_cleanup()
    wrk = serving_env.ensure_wrk(log)
    wanted = set(args.only or ["ts_default", "ts_best", "ours_default", "ours_tuned", "ts_batch8"])
    torchserve = bool(wanted & {"ts_default", "ts_best", "ts_batch8"})
    if torchserve:  # `--only ours_default ours_tuned` runs where TorchServe and Java are not installed
        ts_info = serving_env.ensure_torchserve(log)
        log(f"TorchServe {ts_info['torchserve']} from {ts_info['ts_file']}")
    machine = machine_description()
    load_before = load_average()
    log(f"machine: {machine}; load average {load_before}")
    with tempfile.TemporaryDirectory(prefix="isvc-bench-") as tmp:
        work = Path(tmp)
        ours_store, ts_store = build_stores(work, torchserve=torchserve)
        bodies = request_bodies(work)
        bench = Bench(args, work, wrk, bodies)
        ceilings = ceiling(min(args.seconds, 5.0))
        ts_v1 = "/predictions/mnist"
        ts_explain = ("/explanations/mnist", "v1")
        ours = {
            "v1_path": "/v1/models/mnist:predict",
            "v2_path": "/v2/models/mnist/infer",
            "explain": ("/v1/models/mnist:explain", "explain_ours"),
        }
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            (
                "ts_default",
                lambda: bench.measure(
                    torchserve_server("ts_default", work, ts_store, env={}),
                    label="(a) TorchServe default",
                    settings="the seed's config.properties (1 worker, batchSize 1, job_queue_size 10) with"
                    " `service_envelope=kserve`; no thread settings",
                    v1_path=ts_v1,
                    v2_path=None,
                    explain=ts_explain,
                ),
            ),
            (
                "ours_default",
                lambda: bench.measure(
                    our_server("ours_default", work, ours_store, ()),
                    label="(c) ours default",
                    settings="`python -m isvc_runtime --model-store STORE` on the seed's store, no flags",
                    **ours,
                ),
            ),
            (
                "ours_tuned",
                lambda: bench.measure(
                    our_server("ours_tuned", work, ours_store, OURS_TUNED_ARGS),
                    label="(d) ours tuned",
                    settings=f"`python -m isvc_runtime --model-store STORE {' '.join(OURS_TUNED_ARGS)}`",
                    **ours,
                ),
            ),
        ]
        for workers in args.ts_best_workers:
            plan.append((f"ts_best_w{workers}", ts_best_candidate(bench, work, ts_store, workers)))
        measured: dict[str, Any] = {}
        for key, run in plan:
            if key.split("_w")[0] in wanted:
                measured[key] = run()
        results = order_results(measured, args.concurrency)
        batch8 = bench.ts_batch_check(ts_store) if "ts_batch8" in wanted else None
        if args.keep_work:
            kept = Path(tempfile.mkdtemp(prefix="isvc-bench-kept-"))
            subprocess.run(["cp", "-a", f"{work}/.", str(kept)], check=False)
            log(f"work dir kept in {kept}")
    left = serving_procs.stop_all()
    if left:
        raise RuntimeError(f"processes left running: {left}")
    load_after = load_average()
    during = (
        f"{min(bench.loads):.2f}-{max(bench.loads):.2f} (mean {sum(bench.loads) / len(bench.loads):.2f})"
        if bench.loads
        else "n/a"
    )
    notes = [
        *bench.notes,
        "TorchServe has no v2 protocol over its KServe v1 envelope (the envelope is one per server):"
        " its v2 cells are n/a.",
        "Throughput counts successful answers only: TorchServe's defaults (job_queue_size 10) refuse"
        " most requests at c32 with fast 503s.",
        "Cold start is launch -> first correct answer of the seed request, polled every 20 ms. Ours is"
        " bound by imports: `import torch` (~1.2 s here) and the handler's torchvision, whose import"
        " pulls in torch._dynamo (~1.0 s); TorchServe's worker pays the same imports after its JVM.",
        "The loads are on the same 2 cores as the servers (wrk uses one thread); other jobs on the"
        " machine add noise: compare ratios from one run, and see the load figures above.",
    ]
    ratios = serving_report.key_ratios(results, ceilings["best"])
    rows = serving_report.table_rows(results, args.concurrency)
    print(serving_report.text_table(rows))
    print(
        f"ceiling: {ceilings['single_1thread']:.0f} forwards/s (1 thread, batch 1);"
        f" batch 32: {ceilings['batch32_1thread']:.0f} images/s (1 thread),"
        f" {ceilings['batch32_all_cores']:.0f} images/s (all cores)"
    )
    if batch8 is not None:
        print(
            f"TorchServe batchSize=8 over KServe v1: {batch8['errors']} of {batch8['requests']} concurrent"
            f" requests failed {batch8['counts']}; a lone request: HTTP {batch8['single_status']}"
        )
    print(f"load average before/after: {load_before} / {load_after}; 1-min load during points: {during}")
    if not args.no_results:
        section = results_section(
            machine,
            (load_before, load_after, during),
            args,
            results,
            ceilings,
            ratios,
            batch8,
            notes,
            serving_report.markdown_table(rows),
        )
        document = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
        RESULTS_MD.write_text(serving_report.replace_section(document, section))
        print(f"wrote {RESULTS_MD.relative_to(REPO_ROOT)}")
    print(json.dumps(ratios), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
