"""Knative Serving's admission and API for the e2e tests: a defaulting-webhook stand-in (webhook.py) and
fixture CRDs for Knative and Istio (crds/). The Knative controllers' stand-in lives in :mod:`e2e.standin`."""
