"""`python -m isvc_operator`: the same operator as `kopf run -m isvc_operator`, cluster-wide, standalone."""

from __future__ import annotations

import os

import kopf

from . import handlers  # noqa: F401  (registers the handlers)


def main() -> None:
    kopf.configure(verbose=bool(os.environ.get("ISVC_OPERATOR_VERBOSE")))
    kopf.run(
        standalone=True,
        clusterwide=True,
        liveness_endpoint=os.environ.get("ISVC_LIVENESS_ENDPOINT") or None,
    )


if __name__ == "__main__":
    main()
