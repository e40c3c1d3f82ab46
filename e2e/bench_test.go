package e2e_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

// BenchmarkDelegateTask measures DelegateTask through all three services on
// real sockets, with the simulator as upstream, at several concurrencies and
// on both stores. It reports requests per second and p50/p99 latency.
//
//	SWITCHYARD_TEST_DATABASE_URL=... go test -run '^$' -bench DelegateTask -benchtime 2000x ./e2e/
func BenchmarkDelegateTask(b *testing.B) {
	for _, store := range []string{"memory", "postgres"} {
		for _, concurrency := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("store=%s/concurrency=%d", store, concurrency), func(b *testing.B) {
				opts := stackOptions{}
				if store == "postgres" {
					opts.databaseURL = pgtest.NewSchema(b, migrations.All()...).AppURL
				}
				benchmarkDelegate(b, startStack(b, opts), concurrency)
			})
		}
	}
}

func benchmarkDelegate(b *testing.B, s *stack, concurrency int) {
	// Eight accounts on the largest tier, so neither the pool nor the
	// simulator limits the run.
	for i := range 8 {
		s.register(b, "bench", fmt.Sprintf("account-%d", i), fmt.Sprintf("sk-ant-sim-scale-bench-%d", i), "scale")
	}
	ctx := testContext(b)
	req := &orchestratorv1.DelegateTaskRequest{OrganizationId: "bench", Category: "quick", Prompt: "Benchmark prompt: say hello.", SessionId: "bench"}

	latencies := make([]time.Duration, b.N)
	var next atomic.Int64
	var failures atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				resp, err := s.orchestrator.DelegateTask(ctx, req)
				latencies[i] = time.Since(t0)
				if err != nil || resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d tasks did not succeed", n, b.N)
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(latencies[b.N/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[(b.N*99)/100].Microseconds())/1000, "p99-ms")
}
