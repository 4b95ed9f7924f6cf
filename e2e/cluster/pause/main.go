// Command pause holds a pod's namespaces open for as long as the pod lives: it is the pod sandbox's only
// process. As PID 1 of the pod's PID namespace (when shared) it reaps the zombies of exited children; it
// exits on SIGINT or SIGTERM, when the runtime takes the sandbox down.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for received := range signals {
		if received != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
