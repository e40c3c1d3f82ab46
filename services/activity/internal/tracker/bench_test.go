package tracker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/pgstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// BenchmarkTrackLifecycle measures what the Orchestrator costs the Activity
// service per task: TrackStart, one TrackProgress (a failover) and
// TrackComplete, below gRPC. The parallel variants run many tasks at once,
// as replicas of the Orchestrator do. The PostgreSQL variants need
// SWITCHYARD_TEST_DATABASE_URL and are skipped without it.
func BenchmarkTrackLifecycle(b *testing.B) {
	b.Run("memstore", func(b *testing.B) { benchmarkLifecycle(b, memstore.New(), false) })
	b.Run("memstore/parallel", func(b *testing.B) { benchmarkLifecycle(b, memstore.New(), true) })
	b.Run("pgstore", func(b *testing.B) { benchmarkLifecycle(b, newPgstore(b), false) })
	b.Run("pgstore/parallel", func(b *testing.B) { benchmarkLifecycle(b, newPgstore(b), true) })
}

func newPgstore(b *testing.B) store.Store {
	b.Helper()
	schema := pgtest.NewSchema(b, migrations.Activity)
	pool, err := pgxutil.Connect(context.Background(), schema.AppURL, "activity-benchmark")
	require.NoError(b, err)
	b.Cleanup(pool.Close)
	return pgstore.New(pool)
}

func benchmarkLifecycle(b *testing.B, s store.Store, parallel bool) {
	tr := tracker.New(s, tracker.Config{})
	ctx := context.Background()
	const org = "org-benchmark"
	lifecycle := func() {
		a, _, err := tr.Start(ctx, tracker.StartInput{
			OrganizationID: org, SessionID: "session-1", UserID: "user-1",
			AgentType: "ai_executor", AgentName: "built-in", Category: "quick",
			Input:    map[string]any{"prompt": "Summarise the design in three bullet points.", "skills": []any{"git"}},
			Metadata: map[string]any{"account_id": "acc-1", "account_name": "primary"},
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Progress(ctx, tracker.ProgressInput{
			OrganizationID: org, ActivityID: a.ID, Message: "attempt 2 of 3 after 429 on account primary",
			Data: map[string]any{"attempt": 2, "account_id": "acc-1"},
		}); err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Complete(ctx, tracker.CompleteInput{
			OrganizationID: org, ActivityID: a.ID, Status: store.StatusCompleted,
			Output:   map[string]any{"text": "- one\n- two\n- three", "model": "claude-sonnet", "input_tokens": 812, "output_tokens": 64},
			Metadata: map[string]any{"account_id": "acc-2", "cost_usd": 0.0021, "attempts": 2},
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	if !parallel {
		for b.Loop() {
			lifecycle()
		}
		return
	}
	// Round trips, not CPUs, bound a database-backed call: run more tasks
	// than there are CPUs, as a fleet of orchestrators would.
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			lifecycle()
		}
	})
}
