"""The development harness: a local Kubernetes (:mod:`e2e.localkube`), the stand-ins for what cannot run
here (:mod:`e2e.standin`), the demo (:mod:`e2e.demo`), and the e2e tests. Never part of the product."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
