package pgstore_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/pgstore"
)

// BenchmarkCreateComplete measures the two writes every task makes,
// CreateActivity then CompleteActivity of a new activity, from 1, 32 and
// 64 goroutines at once (as many RPCs in flight as a busy replica has),
// over four organizations. ns/op is per task, so two writes; writes/flush
// is the mean group commit. batch=1 is one transaction per write, as the
// store wrote before group commit; writers=2 is the default.
func BenchmarkCreateComplete(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []pgstore.Option
	}{
		{"batch=1", []pgstore.Option{pgstore.WithMaxBatch(1)}},
		{"writers=1", []pgstore.Option{pgstore.WithWriters(1)}},
		{"writers=2", nil},
		{"writers=4", []pgstore.Option{pgstore.WithWriters(4)}},
	} {
		for _, goroutines := range []int{1, 32, 64} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", bc.name, goroutines), func(b *testing.B) {
				pool, _ := appPool(b)
				s := newStore(b, pool, bc.opts...)
				benchmarkCreateComplete(b, s, goroutines)
				if flushes, writes, _ := pgstore.FlushStats(s); flushes > 0 {
					b.ReportMetric(float64(writes)/float64(flushes), "writes/flush")
				}
			})
		}
	}
}

func benchmarkCreateComplete(b *testing.B, s store.Store, goroutines int) {
	ctx := context.Background()
	orgs := []string{"org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString()}
	task := func(i int) error {
		start := time.Now().UTC().Truncate(time.Microsecond)
		org := orgs[i%len(orgs)]
		na := store.NewActivity{
			ID: uuid.NewString(), SessionID: "session-1", UserID: "user-1", AgentType: "ai_executor", AgentName: "built-in",
			Category: "quick", Input: map[string]any{"prompt": "Summarise the design in three bullet points."},
			Metadata: map[string]any{"account_id": "acc-1"}, StartTime: start,
		}
		if _, _, err := s.CreateActivity(ctx, org, na); err != nil {
			return err
		}
		_, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{
			Status: store.StatusCompleted, Output: map[string]any{"text": "- one\n- two\n- three"},
			Metadata: map[string]any{"cost_usd": 0.0021}, CompleteTime: start.Add(time.Second),
		})
		return err
	}
	b.ReportAllocs()
	if goroutines == 1 {
		for i := 0; b.Loop(); i++ {
			if err := task(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism((goroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := task(i); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
