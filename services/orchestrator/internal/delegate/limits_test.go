package delegate_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/limits"
)

func (h *harness) callCount() int { return len(h.exec.keysCalled()) }

func (h *harness) selectCount() int {
	h.pool.mu.Lock()
	defer h.pool.mu.Unlock()
	return len(h.pool.selects)
}

func (h *harness) activityCount() int {
	h.activity.mu.Lock()
	defer h.activity.mu.Unlock()
	return len(h.activity.activities)
}

// The N+1th concurrent task of an organization is refused before it selects
// an account or starts an activity, while another organization's task
// still runs; once one ends, the organization may start another.
func TestConcurrencyLimitRefusesBeforeAnythingRuns(t *testing.T) {
	lim, err := limits.New(limits.Config{Defaults: limits.Limits{MaxConcurrent: 2, PerSecond: 1000, Burst: 1000}})
	require.NoError(t, err)
	h := newHarness(t, delegate.Config{Limiter: lim}, threeAccounts...)
	h.exec.block = make(chan struct{})

	orgA, orgB := task(), task()
	orgA.OrganizationID, orgB.OrganizationID = "org-a", "org-b"
	done := make(chan error, 3)
	for _, tk := range []delegate.Task{orgA, orgA, orgB} {
		go func() {
			_, err := h.runner.Run(context.Background(), tk)
			done <- err
		}()
	}
	for h.callCount() < 3 { // two of org-a and one of org-b are on the model
		runtime.Gosched()
	}
	selects, activities := h.selectCount(), h.activityCount()

	_, err = h.runner.Run(context.Background(), orgA)
	var le *delegate.LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, limits.LimitConcurrent, le.Limit)
	require.Equal(t, 2, le.Limits.MaxConcurrent)
	require.Positive(t, le.RetryAfter)

	// The stream is refused the same way, before its first event.
	var events []delegate.Event
	_, err = h.runner.Stream(context.Background(), orgA, func(e delegate.Event) { events = append(events, e) })
	require.ErrorAs(t, err, &le)
	require.Empty(t, events)

	require.Equal(t, selects, h.selectCount(), "a refused task selects no account")
	require.Equal(t, activities, h.activityCount(), "and starts no activity")
	require.Equal(t, 3, h.callCount())

	close(h.exec.block)
	for range 3 {
		require.NoError(t, <-done)
	}
	_, err = h.runner.Run(context.Background(), orgA)
	require.NoError(t, err, "a finished task gives its place back")
}

// The rate limit: a burst of tasks runs, the next is refused with the time
// until a token, and once that time has passed (a fake clock) it runs.
func TestRateLimitRefusesWithTheTimeUntilAToken(t *testing.T) {
	clock := fakeclock.New(time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC))
	lim, err := limits.New(limits.Config{Defaults: limits.Limits{MaxConcurrent: 100, PerSecond: 4, Burst: 2}, Now: clock.Now})
	require.NoError(t, err)
	h := newHarness(t, delegate.Config{Limiter: lim}, threeAccounts...)
	for range 2 {
		_, err := h.runner.Run(context.Background(), task())
		require.NoError(t, err)
	}
	selects := h.selectCount()
	_, err = h.runner.Run(context.Background(), task())
	var le *delegate.LimitError
	require.ErrorAs(t, err, &le)
	require.Equal(t, limits.LimitRate, le.Limit)
	require.Equal(t, "250ms", le.RetryAfter.String())
	require.Equal(t, selects, h.selectCount())

	clock.Advance(le.RetryAfter)
	_, err = h.runner.Run(context.Background(), task())
	require.NoError(t, err)
}
