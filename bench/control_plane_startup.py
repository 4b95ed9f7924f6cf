"""Startup and teardown time of the local control plane (etcd + kube-apiserver + controller-manager)
from the cached binaries. Target: median startup <= 15 s.

    .venv/bin/python bench/control_plane_startup.py [--runs 5]

"Startup" runs from ControlPlane.start() until kube-apiserver /readyz and the controller-manager's
/healthz both answer 200 (certificates and keys are generated inside that window); "first CRUD" adds
one namespace create through the API; "stop" is SIGTERM to all process groups until reaped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.localkube import ControlPlane
from e2e.processes import install_signal_handlers


def one_run(index: int) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    cp = ControlPlane().start()
    try:
        ready = time.perf_counter() - t0
        status, body = cp.request(
            "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": f"bench-{index}"}}
        )
        if status != 201:
            raise RuntimeError(f"namespace create failed: {status} {body}")
        crud = time.perf_counter() - t0
    finally:
        t1 = time.perf_counter()
        cp.stop()
        stop = time.perf_counter() - t1
    return ready, crud, stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    install_signal_handlers()
    rows = [one_run(i) for i in range(args.runs)]
    print(f"{'run':>4} {'startup s':>10} {'first CRUD s':>13} {'stop s':>7}")
    for i, (ready, crud, stop) in enumerate(rows, 1):
        print(f"{i:>4} {ready:>10.2f} {crud:>13.2f} {stop:>7.2f}")
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(f"{'med':>4} {med[0]:>10.2f} {med[1]:>13.2f} {med[2]:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
