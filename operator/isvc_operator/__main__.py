"""`python -m isvc_operator`: the same operator as `kopf run -m isvc_operator`, cluster-wide, standalone
(no kopf peering: of several replicas, the holder of a Lease acts, leadership.py)."""

from __future__ import annotations

import argparse
import os

import kopf

from . import handlers  # noqa: F401  (registers the handlers)
from .leadership import leader_election


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m isvc_operator",
        description="Reconcile serving.kubeflow.org/v1beta1 InferenceServices into Knative Services "
        "(cluster-wide; of several replicas only the holder of the Lease torch-isvc-operator in "
        "ISVC_OPERATOR_NAMESPACE acts).",
        epilog="Environment: ISVC_OPERATOR_NAMESPACE (namespace of the inferenceservice-config ConfigMap), "
        "ISVC_TEMPLATES_DIR (template overrides), ISVC_OPERATOR_LOG_LEVEL, ISVC_LIVENESS_ENDPOINT, "
        "ISVC_OPERATOR_VERBOSE, ISVC_LEADER_ELECTION (true|false), "
        "ISVC_OPERATOR_METRICS_ADDRESS (HOST:PORT of the Prometheus metrics; "
        "default 8081, on loopback outside a pod). Credentials come from the in-cluster ServiceAccount or "
        "KUBECONFIG.",
    )
    parser.add_argument(
        "--liveness-endpoint",
        default=os.environ.get("ISVC_LIVENESS_ENDPOINT") or None,
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz "
        "(default: $ISVC_LIVENESS_ENDPOINT, else none)",
    )
    try:
        elect = leader_election(os.environ)
    except ValueError as error:
        parser.error(str(error))
    parser.add_argument(
        "--no-leader-election",
        dest="leader_election",
        action="store_false",
        default=elect,
        help="act at once, alone, without the Lease (one replica only: two would both act; "
        "default: $ISVC_LEADER_ELECTION, true unless it says false)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=bool(os.environ.get("ISVC_OPERATOR_VERBOSE")),
        help="kopf's verbose logging (default: $ISVC_OPERATOR_VERBOSE)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    kopf.run(standalone=True, clusterwide=True, liveness_endpoint=args.liveness_endpoint,
             memo=kopf.Memo(leader_election=args.leader_election))


if __name__ == "__main__":
    main()
