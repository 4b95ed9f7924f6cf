"""A local Kubernetes control plane until Ctrl-C or SIGTERM (`make cluster-up`).

``python -m e2e.localkube`` prints the kubeconfig path (last line of its greeting) and stops everything it
started on exit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from e2e.processes import install_signal_handlers

from .control_plane import ControlPlane, ControlPlaneError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.localkube", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--kubeconfig-out", type=Path, default=None,
        help="also copy the admin kubeconfig here (it is removed again on exit)",
    )
    args = parser.parse_args(argv)
    install_signal_handlers()
    started = time.monotonic()
    try:
        cp = ControlPlane().start()
    except ControlPlaneError as exc:
        print(f"localkube: {exc}", file=sys.stderr)
        return 1
    copied: Path | None = None
    try:
        version = cp.server_version().get("gitVersion", "?")
        kubeconfig = cp.kubeconfig
        if args.kubeconfig_out is not None:
            copied = args.kubeconfig_out
            shutil.copyfile(cp.kubeconfig, copied)
            copied.chmod(0o600)
            kubeconfig = copied
        pids = " ".join(f"{name}={pid}" for name, pid in cp.pids.items())
        print(
            f"localkube: Kubernetes {version} ready in {time.monotonic() - started:.1f}s at {cp.server}\n"
            f"localkube: workdir {cp.workdir} pids {pids}\n"
            f"localkube: Ctrl-C to stop; export KUBECONFIG={kubeconfig}\n"
            f"{kubeconfig}",
            flush=True,
        )
        while not (exited := cp.exited()):
            time.sleep(0.5)
        for name, status in exited.items():
            print(f"localkube: {name} exited ({status}):\n{cp.log_tail(name)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localkube: stopping", file=sys.stderr)
        return 0
    finally:
        cp.stop()
        if copied is not None:
            copied.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
