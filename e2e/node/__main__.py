"""``python -m e2e.node`` (``make node-up``): a real node until Ctrl-C or SIGTERM, then nothing left."""

from __future__ import annotations

import argparse
import sys
import time

from e2e.node.components import NodeError
from e2e.node.node import start_node
from e2e.processes import install_signal_handlers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.node", description=__doc__.split("\n")[0])
    parser.add_argument("--images", default="pause,storage-initializer,runtime,operator",
                        help="images (e2e/images/build.sh targets) to import into the node's containerd")
    args = parser.parse_args(argv)
    install_signal_handlers()
    try:
        node = start_node(images=[image for image in args.images.split(",") if image])
    except NodeError as exc:
        print(f"node: {exc}", file=sys.stderr)
        return 1
    try:
        timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in node.timings.items())
        print(f"node: {node.layout.name} Ready in network namespace {node.ns.name} ({timings})\n"
              f"node: Ctrl-C to stop; export KUBECONFIG={node.kubeconfig}",
              flush=True)
        while True:
            node.components.check_alive("serving")
            time.sleep(1)
    except NodeError as exc:
        print(f"node: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("node: stopping", file=sys.stderr)
        return 0
    finally:
        node.stop()


if __name__ == "__main__":
    sys.exit(main())
