"""Knative Serving's admission and API for the e2e tests: Knative's real admission webhook (webhook.py) and
the real Knative and Istio CRDs, read from the Go module cache (sources.py, manifests.py). The Knative
controllers' stand-in lives in :mod:`e2e.standin`."""
