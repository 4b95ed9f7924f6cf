// Command grpcload drives one unary gRPC method with a fixed request, the way wrk drives an HTTP POST:
// -c concurrent callers for -d, each waiting for its answer before the next call, on -connections
// HTTP/2 connections (default: one per caller, as wrk's keep-alive connections).
//
//	grpcload -addr 127.0.0.1:8081 -method /inference.GRPCInferenceService/ModelInfer -body req.pb -c 32 -d 5s
//
// The request file holds the serialised protobuf message; it is sent as it is and the answer is not
// decoded (bench/serving_grpc.py checks one answer before the load), so the client spends its CPU on
// HTTP/2 and nothing else. The one output line has the keys of bench/wrk_post.lua's, read by
// bench/serving_load.py, plus cpu_us: this process's own CPU time, from which the bench states the
// load generator's ceiling.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawCodec sends the request bytes unchanged and discards the answer's: no protobuf work per call.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal([]byte, any) error   { return nil }
func (rawCodec) Name() string                  { return "proto" }

type tally struct {
	latencies                   []time.Duration
	statusErrors, connectErrors int
	timeouts                    int
}

func (t *tally) add(latency time.Duration, err error) {
	switch status.Code(err) {
	case codes.OK:
	case codes.DeadlineExceeded:
		t.timeouts++
		return
	case codes.Unavailable:
		t.connectErrors++
		return
	default:
		t.statusErrors++
	}
	t.latencies = append(t.latencies, latency)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	index := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(index, 0)]
}

func ready(ctx context.Context, conn *grpc.ClientConn) error {
	conn.Connect()
	for state := conn.GetState(); state != connectivity.Ready; state = conn.GetState() {
		if !conn.WaitForStateChange(ctx, state) {
			return fmt.Errorf("connection not ready: %v", state)
		}
	}
	return nil
}

func cpuTime() time.Duration {
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:8081", "host:port of the gRPC server")
	method := flag.String("method", "/inference.GRPCInferenceService/ModelInfer", "full method name")
	bodyFile := flag.String("body", "", "file with the serialised request message")
	concurrency := flag.Int("c", 1, "concurrent callers")
	connections := flag.Int("connections", 0, "HTTP/2 connections shared by the callers (0: one per caller)")
	duration := flag.Duration("d", 5*time.Second, "how long to call")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of one call")
	flag.Parse()
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	if *concurrency < 1 {
		return errors.New("-c must be at least 1")
	}
	if *connections <= 0 || *connections > *concurrency {
		*connections = *concurrency
	}
	conns := make([]*grpc.ClientConn, *connections)
	for i := range conns {
		conn, err := grpc.NewClient(*addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(math.MaxInt32)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		err = ready(ctx, conn)
		cancel()
		if err != nil {
			return err
		}
		conns[i] = conn
	}
	tallies := make([]tally, *concurrency)
	var wg sync.WaitGroup
	cpuBefore := time.Duration(cpuTime())
	started := time.Now()
	deadline := started.Add(*duration)
	for i := range tallies {
		wg.Add(1)
		go func(t *tally, conn *grpc.ClientConn) {
			defer wg.Done()
			var answer []byte
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				begin := time.Now()
				err := conn.Invoke(ctx, *method, &body, &answer)
				t.add(time.Since(begin), err)
				cancel()
			}
		}(&tallies[i], conns[i%len(conns)])
	}
	wg.Wait()
	elapsed := time.Since(started)
	cpu := cpuTime() - cpuBefore
	var all []time.Duration
	total := tally{}
	for _, t := range tallies {
		all = append(all, t.latencies...)
		total.statusErrors += t.statusErrors
		total.connectErrors += t.connectErrors
		total.timeouts += t.timeouts
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	var sum time.Duration
	for _, latency := range all {
		sum += latency
	}
	mean := 0.0
	if len(all) > 0 {
		mean = float64(sum.Microseconds()) / float64(len(all))
	}
	fmt.Printf("WRK_JSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,"+
		"\"max_us\":%d,\"mean_us\":%.1f,\"status_errors\":%d,\"connect_errors\":%d,\"read_errors\":0,"+
		"\"write_errors\":0,\"timeouts\":%d,\"cpu_us\":%d}\n",
		len(all), elapsed.Microseconds(), percentile(all, 50).Microseconds(), percentile(all, 90).Microseconds(),
		percentile(all, 99).Microseconds(), percentile(all, 100).Microseconds(), mean, total.statusErrors,
		total.connectErrors, total.timeouts, cpu.Microseconds())
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grpcload:", err)
		os.Exit(1)
	}
}
