"""Development stand-ins for what cannot run on one machine: Knative Serving + the kubelet
(:class:`ServingStandin`: revisions as local processes, ksvc status) and Istio's gateways
(:class:`Ingress`: Host-header routing on loopback). Used by ``make demo`` and the e2e tests; never part
of the product packages. See README.md."""
