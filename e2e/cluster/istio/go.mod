// Pins istio.io/api so the Go module proxy serves it into the module cache, where e2e/knative/ reads
// kubernetes/customresourcedefinitions.gen.yaml (Istio's real CRDs) at run time. No Go code is built from it,
// so `go mod tidy` would drop the requirement: ../build.sh downloads it with `go mod download` instead.
module torch-isvc/e2e/cluster/istio

go 1.24

require istio.io/api v1.32.0
