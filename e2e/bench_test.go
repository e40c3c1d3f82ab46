package e2e_test

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
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
	liftTaskLimits(b, s, "bench")
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

// liftTaskLimits raises org's task limits out of the way of a benchmark,
// which drives one organization as fast as the stack goes.
func liftTaskLimits(b *testing.B, s *stack, org string) {
	_, err := s.pool.UpdateOrganizationSettings(testContext(b), &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: org, TaskLimits: &accountpoolv1.TaskLimits{MaxConcurrentTasks: 100_000, TasksPerSecond: 100_000, Burst: 100_000},
	})
	require.NoError(b, err)
}

// BenchmarkDelegateTaskUnderUsageLoad is the cross-tenant figure of the
// usage limits: organization "quiet" runs DelegateTask one at a time on
// PostgreSQL while organization "busy", whose ledger holds 300,000 rows
// over 60 days, loops GetUsage over 30 days from 4 callers — and, for
// comparison, while busy is idle. GetUsage reads hourly rollups on a pool
// of its own, so quiet's latency should stay within a small factor (the
// rest is the CPU the loop takes on a small machine).
//
//	SWITCHYARD_TEST_DATABASE_URL=... go test -run '^$' -bench UnderUsageLoad -benchtime 300x ./e2e/
func BenchmarkDelegateTaskUnderUsageLoad(b *testing.B) {
	if os.Getenv("SWITCHYARD_TEST_DATABASE_URL") == "" {
		b.Skip("needs SWITCHYARD_TEST_DATABASE_URL")
	}
	schema := pgtest.NewSchema(b, migrations.All()...)
	s := startStack(b, stackOptions{databaseURL: schema.AppURL})
	ctx := testContext(b)
	seedLedger(b, schema.OwnerURL, "busy", 300_000)
	for i := range 2 {
		s.register(b, "quiet", fmt.Sprintf("account-%d", i), fmt.Sprintf("sk-ant-sim-scale-quiet-%d", i), "scale")
	}
	req := &orchestratorv1.DelegateTaskRequest{OrganizationId: "quiet", Category: "quick", Prompt: "Say hello.", SessionId: "quiet"}
	usage := &accountpoolv1.GetUsageRequest{OrganizationId: "busy", StartTime: timestamppb.New(time.Now().Add(-30 * 24 * time.Hour))}
	for _, loaded := range []bool{false, true} {
		b.Run(fmt.Sprintf("usage-loop=%v", loaded), func(b *testing.B) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var reads atomic.Int64
			if loaded {
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							select {
							case <-stop:
								return
							default:
							}
							if _, err := s.pool.GetUsage(ctx, usage); err == nil {
								reads.Add(1)
							}
						}
					}()
				}
			}
			latencies := make([]time.Duration, b.N)
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				t0 := time.Now()
				resp, err := s.orchestrator.DelegateTask(ctx, req)
				latencies[i] = time.Since(t0)
				if err != nil || resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
					b.Fatalf("task %d: %v (%v)", i, err, resp.GetStatus())
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			wg.Wait()
			slices.Sort(latencies)
			b.ReportMetric(float64(latencies[b.N/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(latencies[(b.N*99)/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(reads.Load())/elapsed.Seconds(), "usage-reads/s")
		})
	}
}

// seedLedger writes n usage rows for org over the last 60 days, across 10
// accounts and 2 models, in one statement as the schema owner (the
// rollup trigger sums them as it would the service's writes).
func seedLedger(b *testing.B, ownerURL, org string, n int) {
	ctx := testContext(b)
	conn, err := pgx.Connect(ctx, ownerURL)
	require.NoError(b, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(b, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT set_config('switchyard.organization_id', $1, true)`, org)
	require.NoError(b, err)
	_, err = tx.Exec(ctx, `INSERT INTO usage_records (id, organization_id, account_id, account_name, request_id, attempt, outcome, model, category,
			session_id, user_id, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, http_status, error_type,
			upstream_request_id, duration_ms, create_time)
		SELECT gen_random_uuid(), $1, md5('account' || (g % 10))::uuid, 'account-' || (g % 10), 'seed-' || g, 1, 'success',
			CASE WHEN g % 2 = 0 THEN 'claude-sonnet-4-5' ELSE 'claude-haiku-4-5' END, 'quick', '', '', 1000, 100, 0, 0, 0.01, 200, '', 'u-' || g, 100,
			now() - g * (60 * 24 * 3600 / $2::float8) * interval '1 second'
		FROM generate_series(1, $2::int) g`, org, n)
	require.NoError(b, err)
	require.NoError(b, tx.Commit(ctx))
	_, err = conn.Exec(ctx, `ANALYZE usage_records; ANALYZE usage_rollups`)
	require.NoError(b, err)
}
