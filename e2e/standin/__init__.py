"""Development stand-ins for what cannot run on one machine, never part of the product packages (see
README.md): Knative Serving's controllers for status only (:class:`~e2e.standin.knative.KnativeStandin`,
used by the operator's e2e tests), the same plus the kubelet (:class:`~e2e.standin.serving.ServingStandin`:
revisions as local processes), and Istio's gateways (:class:`~e2e.standin.ingress.Ingress`: Host-header
routing on loopback). Used by ``make demo`` and the e2e tests."""
