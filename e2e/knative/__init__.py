"""Test-only stand-ins for Knative Serving (and fixture CRDs for Knative and Istio). Not product code."""
