// The node's pod sandbox process, packed into the pause image by e2e/images/build.sh (no dependencies).
module torch-isvc/e2e/cluster/pause

go 1.26.0
