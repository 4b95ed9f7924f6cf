"""Wiring: command line → model store → registry → ASGI app → uvicorn. The one place parts meet."""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from starlette.applications import Starlette

from . import metrics
from .config import RuntimeConfig
from .cpus import available_cpus
from .dataplane import DataPlane
from .errors import ConfigError
from .grpc.ports import GrpcEndpoint, grpc_endpoint, port_required
from .memory import tune_allocator
from .model_store import discover
from .payload_logger import PayloadLogger, add_logger_arguments, logger_settings
from .payload_logger.metrics import LoggerCollector
from .processes import (
    MULTIPROC_DIR_ENV,
    listening_socket,
    peers_loading,
    process_index,
    ready_mark,
    supervise,
)
from .protocol import DEFAULT as DEFAULT_PROTOCOL
from .protocol import protocol_version
from .registry import ModelRegistry, Prepared, load_prepared, prepare_models
from .rest.app import build_app
from .rest.endpoints import Endpoints, routes

log = logging.getLogger("isvc_runtime")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m isvc_runtime",
        description="Serve a TorchServe model store over KServe v1/v2 and TorchServe's /predictions.",
    )
    parser.add_argument(
        "--model-store",
        required=True,
        type=Path,
        help="directory: config/ + model-store/, a dir of .mar files, or one unpacked archive",
    )
    parser.add_argument(
        "--http-port", type=int, default=None, help="port (default: inference_address's port, else 8080)"
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="gRPC (Open Inference Protocol) port (default: grpc_inference_port, else 8081)",
    )
    parser.add_argument(
        "--host", default=None, help="bind address (default: inference_address's host, else 0.0.0.0)"
    )
    parser.add_argument(
        "--model-name",
        default=None,
        help="also serve the model under this name (the InferenceService's name)",
    )
    parser.add_argument(
        "--config-file",
        type=Path,
        default=None,
        help="config.properties to use (default: MODEL_STORE/config/config.properties)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="max rows per handler call, all models")
    parser.add_argument(
        "--max-batch-delay", type=float, default=None, help="ms to wait for a batch to fill, all models"
    )
    parser.add_argument(
        "--response-timeout",
        type=float,
        default=None,
        help="seconds a request waits for its batch's answer (then 504), all models (responseTimeout)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="concurrent handler calls per model (default: minWorkers, else 1)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.environ.get("ISVC_PROCESSES", "1"),  # argparse applies ``type`` to a str default
        help="server processes sharing the port, each with its own copy of the models (default: "
        "$ISVC_PROCESSES, else 1)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: chosen from the CPUs available)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus metrics port (default: TS_METRICS_ADDRESS port, else 8082; 0: inference port only)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where archives are unpacked (default: a temp dir)"
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ISVC_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    add_logger_arguments(parser)
    args = parser.parse_args(argv)
    for flag in (
        "http_port",
        "grpc_port",
        "metrics_port",
        "batch_size",
        "workers",
        "torch_threads",
        "processes",
    ):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag.endswith("port") else 1):
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.max_batch_delay is not None and args.max_batch_delay < 0:
        parser.error("--max-batch-delay must not be negative")
    if args.response_timeout is not None and not args.response_timeout > 0:
        parser.error("--response-timeout must be positive")
    return args


def default_torch_threads(cpus: int, workers: int, processes: int = 1) -> int:
    """Intra-op threads per handler call. The event loop (HTTP, JSON) needs a core of its own under
    load, and oversubscribing cores is what makes TorchServe's defaults collapse; so: each server
    process's share of the CPUs, less one for its event loop, shared by its concurrent workers, at least 1."""
    return max(1, (cpus // max(1, processes) - 1) // max(1, workers))


#: Environment variables by which a user chose how OpenMP's idle threads wait; then nothing is changed.
OMP_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

#: How many times torch's idle intra-op threads poll for work before they sleep (libgomp's
#: ``GOMP_SPINCOUNT``; its own default is 300,000 when no policy is set, 0 under ``OMP_WAIT_POLICY=PASSIVE``).
OMP_SPIN_COUNT = 3000


def brief_omp_spin(env: MutableMapping[str, str]) -> bool:
    """Let torch's idle intra-op threads poll briefly for the next parallel region, then sleep
    (``GOMP_SPINCOUNT`` = :data:`OMP_SPIN_COUNT`), unless the user chose how OpenMP threads wait; True when
    set. Must run before torch is imported: the OpenMP runtime reads it once, when it loads.

    Both of libgomp's usual choices cost a server on few cores (bench/results.md, "OpenMP's wait"): with
    its default spin (300,000 polls) a worker stays busy long after every parallel region, on the core the
    event loop needs (HTTP, gRPC, decoding); asleep at once (``OMP_WAIT_POLICY=PASSIVE``, this runtime's
    setting before) every operator of a forward pays a kernel wake-up per worker. Measured paired on 2
    cores against PASSIVE: ResNet-18's default v1 1.22x req/s at c1, 1.12x at c32; MNIST's tuned gRPC
    c32 with two busy processes beside it 1.03x (p99 0.87x), where 30,000 polls lost 1.46x to PASSIVE."""
    if any(name in env for name in OMP_WAIT_SETTINGS):
        return False
    env["GOMP_SPINCOUNT"] = str(OMP_SPIN_COUNT)
    return True


def configure_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set when parallel work ran before
        torch.set_num_interop_threads(1)


# Signs of an NVIDIA driver: its /proc entry on a host or a plain container; sandboxes such as gVisor
# pass the device nodes (/dev/nvidiactl) but not the driver's /proc entries.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl")


def gpu_count() -> int:
    """CUDA devices visible, without importing torch when no NVIDIA driver is present."""
    if not any(Path(p).exists() for p in NVIDIA_DRIVER_PATHS) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class _Server:
    """uvicorn's server, except that SIGTERM (the kubelet's stop) ends the process with status 0
    after in-flight requests finish, instead of re-raising the signal."""

    def __init__(self, config: object) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                super().handle_exit(sig, frame)
                if sig == signal.SIGTERM:
                    self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

        self.server = Server(config)  # type: ignore[arg-type]

    def run(self, sockets: list[socket.socket] | None = None) -> bool:
        """Serve until stopped (on ``sockets`` when given, else on the configured host and port); False
        when the start-up failed (a port taken, the gRPC server's too)."""
        self.server.run(sockets=sockets)
        return self.server.started


def start_loading(
    prepared: list[Prepared],
    config: RuntimeConfig,
    torch_threads: int,
    *,
    enable_gc: bool = False,
    loaded_mark: Path | None = None,
) -> threading.Thread:
    """Load every model on a background thread, started before the server binds so that loading
    overlaps the server's own start-up; readiness stays honest (each model answers 503 until loaded).
    ``enable_gc``: switch the collector back on afterwards (``python -m`` starts with it off);
    ``loaded_mark``: a file to create once every model loaded (for the server's other processes)."""

    def load_all() -> None:
        try:
            configure_torch(torch_threads)
            load_prepared(prepared, limit_max_image_pixels=config.limit_max_image_pixels)
            if loaded_mark is not None and all(item.runner.ready for item in prepared):
                loaded_mark.touch()
            # torch and the models leave ~300k long-lived objects; a full collection over them takes
            # ~200 ms with the GIL held, a stall every few thousand requests. Freezing them keeps later
            # collections to what requests allocate. No collection first: the models are already
            # answering, and it would hold the first requests (the cold start) for ~200 ms.
            gc.freeze()
        except BaseException as exc:  # keep the server up and honest: every unloaded model reports it
            for item in prepared:
                if item.runner.state == "loading":
                    item.runner.set_failed(f"{type(exc).__name__}: {exc}")
            log.exception("model loading stopped")
        finally:
            if enable_gc:
                gc.enable()

    thread = threading.Thread(target=load_all, name="model-loader", daemon=True)
    thread.start()
    return thread


def serving_app(
    registry: ModelRegistry,
    config: RuntimeConfig,
    exporter: metrics.RuntimeMetrics,
    payload_logger: PayloadLogger | None = None,
    grpc: GrpcEndpoint | None = None,
    grace_s: float | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    *,
    shared_port: bool = False,
) -> Starlette:
    """The inference port's application: every protocol's endpoints over one data plane, plus
    ``GET /metrics``; with ``payload_logger``, its inference requests and answers logged (gRPC's too); with
    ``grpc``, the gRPC server over the same data plane, started and stopped (``grace_s`` for in-flight
    calls) with the application's lifespan, in its event loop. ``protocol``: ``PROTOCOL_VERSION``
    (:mod:`isvc_runtime.protocol`): what ``GET /`` answers; grpc-v2 makes the gRPC port required.
    ``shared_port``: other server processes bind the gRPC port too."""
    # The explanation endpoints import torch: here, once the loader thread is already importing it
    # (start_loading), not when this module is imported (before the allocator is tuned).
    from .explain.endpoints import ExplainEndpoints

    dataplane = DataPlane(registry)
    endpoints = Endpoints(dataplane, config.max_request_size, protocol)
    explain = ExplainEndpoints(endpoints)
    table = routes(
        endpoints,
        v1_actions={"explain": explain.v1_explain},
        v2_actions={"explain": explain.v2_explain},
        get_routes={"/metrics": exporter.endpoint},
    )
    if grpc is None:
        return build_app(table, on_shutdown=registry.stop, payload_logger=payload_logger)
    from .grpc.service import GrpcServer

    grpc_server = GrpcServer(
        dataplane,
        grpc.host,
        grpc.port,
        config.max_request_size,
        required=port_required(grpc, protocol),
        payload_logger=payload_logger,
        reuse_port=shared_port,
    )

    async def stop() -> None:
        await grpc_server.stop(grace_s)
        await registry.stop()

    return build_app(table, on_startup=grpc_server.start, on_shutdown=stop, payload_logger=payload_logger)


def main(argv: Sequence[str] | None = None, *, gc_disabled: bool = False) -> int:
    """``gc_disabled``: the caller switched the collector off for the imports; it comes back on once
    the models are loaded."""
    args = parse_args(argv)
    index = process_index(os.environ)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s"
        + ("[%(process)d]" if args.processes > 1 else "")
        + ": %(message)s",
        stream=sys.stderr,
    )
    if args.processes > 1 and index is None:
        if gc_disabled:
            gc.enable()
        return supervise(
            sys.argv[1:] if argv is None else argv, args.processes, work_dir_given=args.work_dir is not None
        )
    tune_allocator()  # before torch allocates: batches reuse freed memory (see memory.py)
    brief_omp_spin(os.environ)  # before torch loads (start_loading imports it)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="isvc-runtime-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        try:
            protocol = protocol_version(os.environ)
            logging_to = logger_settings(args)
            config, sources = discover(args.model_store, config_file=args.config_file)
            registry, prepared = prepare_models(
                sources,
                config,
                work_dir=work_dir,
                batch_size=args.batch_size,
                max_batch_delay_ms=args.max_batch_delay,
                workers=args.workers,
                response_timeout_s=args.response_timeout,
                alias=args.model_name,
                gpu_count=min(gpu_count(), config.number_of_gpu)
                if config.number_of_gpu is not None
                else gpu_count(),
            )
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        workers = max(r.settings.workers for r in registry.runners)
        cpus = available_cpus()
        threads = args.torch_threads or default_torch_threads(cpus, workers, args.processes)
        # A compute-bound model's calls may take the event loop's core too (runner.share_cpus), unless
        # the user fixed the thread count.
        fixed = args.torch_threads is not None or "OMP_NUM_THREADS" in os.environ
        for runner in registry.runners:
            runner.share_cpus(threads, None if fixed else max(threads, cpus // args.processes // workers))
        port = (
            args.http_port
            if args.http_port is not None
            else (config.port if config.port_configured else 8080)
        )
        host = args.host or config.host
        try:
            grpc = grpc_endpoint(
                config.grpc_keys, flag_port=args.grpc_port, flag_host=args.host, http_host=host
            )
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        log.info(
            "serving %s on %s:%d, gRPC on %s:%d (%s), protocol %s (torch threads %d)",
            ", ".join(registry.names()),
            host,
            port,
            grpc.host,
            grpc.port,
            grpc.source,
            protocol,
            threads,
        )
        exporter = metrics.install(registry, host=host, port=args.metrics_port)
        payload_logger = PayloadLogger(logging_to) if logging_to is not None else None
        if payload_logger is not None:  # the URL's host only: a query may carry a token
            log.info("payload logger: mode %s, sink %s", logging_to.mode, urlsplit(logging_to.url).netloc)
            exporter.registry.register(LoggerCollector(payload_logger, *exporter.identity))
        loaded_mark = None
        if index is not None:  # one of several processes (processes.py)
            shared = Path(os.environ[MULTIPROC_DIR_ENV])
            loaded_mark = ready_mark(shared, index)
            registry.peers_loading = functools.partial(peers_loading, shared, args.processes, index)
        start_loading(prepared, config, threads, enable_gc=gc_disabled, loaded_mark=loaded_mark)
        import uvicorn

        grace_s = max(r.settings.response_timeout_s for r in registry.runners)
        sockets = None
        if index is not None:  # one of several processes: the port is shared (processes.py)
            try:
                sockets = [listening_socket(host, port)]
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
                return 1
        uvicorn_config = uvicorn.Config(
            serving_app(
                registry,
                config,
                exporter,
                payload_logger,
                grpc,
                grace_s,
                protocol,
                shared_port=index is not None,
            ),
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level=args.log_level,
            timeout_graceful_shutdown=grace_s,
            server_header=False,
        )
        return 0 if _Server(uvicorn_config).run(sockets) else 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


def run(*, gc_disabled: bool = False) -> None:
    try:
        sys.exit(main(gc_disabled=gc_disabled))
    except KeyboardInterrupt:
        sys.exit(130)
