package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// abandonTests cover deadlines, AbandonExpired and what may follow an
// abandonment. Run runs them one at a time (see Run).
var abandonTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"DeadlineRoundTrips", testDeadlineRoundTrips},
	{"AbandonsOnlyExpiredRunningActivities", testAbandonsOnlyExpired},
	{"AbandonIsBoundedEarliestDeadlineFirst", testAbandonIsBounded},
	{"AbandonCompleteTimeIsNeverBeforeStart", testAbandonCompleteTimeClamped},
	{"AbandonReasonNamesDeadlineAndGrace", testAbandonReason},
	{"ConcurrentSweepsAbandonOnce", testConcurrentSweepsAbandonOnce},
	{"AbandonedTakesNoProgressAndIsNotRecreated", testAbandonedTakesNoProgress},
	{"LateCompletionReplacesAbandonment", testLateCompletion},
	{"ConcurrentLateCompletionsEndOnce", testConcurrentLateCompletions},
	{"ListFiltersAbandoned", testListFiltersAbandoned},
	{"AbandonmentIsAChange", testAbandonmentIsAChange},
	{"AbandonWithCancelledContextFails", testAbandonCancelled},
}

const grace = 30 * time.Second

// lateFrom is what the tracker lets a completion end.
var lateFrom = []store.Status{store.StatusRunning, store.StatusAbandoned}

// createExpiring creates a RUNNING activity with a deadline and, when the
// test ends, completes it if it is still running, so that no later sweep on
// a shared store finds it.
func createExpiring(t *testing.T, s store.Store, org string, start, deadline time.Time) store.Activity {
	t.Helper()
	na := newActivity(start)
	na.Deadline = deadline
	a := create(t, s, org, na)
	t.Cleanup(func() {
		_, err := s.CompleteActivity(context.Background(), org, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: start})
		if err != nil && !errors.Is(err, store.ErrAlreadyEnded) {
			t.Errorf("completing leftover activity %s: %v", na.ID, err)
		}
	})
	return a
}

func abandon(t *testing.T, s store.Store, now time.Time, limit int) int {
	t.Helper()
	n, err := s.AbandonExpired(context.Background(), now, grace, limit)
	require.NoError(t, err)
	return n
}

// abandoned is a as AbandonExpired at now should leave it.
func abandoned(a store.Activity, now time.Time) store.Activity {
	a.Status = store.StatusAbandoned
	a.ErrorMessage = store.AbandonReason(a.Deadline, grace)
	a.CompleteTime = now
	return a
}

func testDeadlineRoundTrips(t *testing.T, s store.Store) {
	org := newOrg()
	na := newActivity(base)
	na.Deadline = base.Add(10*time.Minute + 123*time.Microsecond)
	a := create(t, s, org, na)
	requireActivity(t, expected(org, na), a)
	got, _ := get(t, s, org, na.ID)
	requireActivity(t, expected(org, na), got)
	listed := list(t, s, org, store.ListQuery{})
	require.Len(t, listed, 1)
	requireTime(t, na.Deadline, listed[0].Deadline)
	_, err := s.CompleteActivity(context.Background(), org, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base})
	require.NoError(t, err)
}

func testAbandonsOnlyExpired(t *testing.T, s store.Store) {
	ctx := context.Background()
	orgA, orgB := newOrg(), newOrg()
	deadline := base.Add(time.Minute)
	now := deadline.Add(grace).Add(time.Microsecond)

	expiredA := createExpiring(t, s, orgA, base, deadline)
	_, err := s.AppendProgress(ctx, orgA, expiredA.ID, store.NewProgressEvent{Message: "step", CreateTime: base})
	require.NoError(t, err)
	expiredB := createExpiring(t, s, orgB, base, deadline.Add(-time.Hour))
	onTheDot := createExpiring(t, s, orgA, base, deadline.Add(time.Microsecond)) // deadline + grace == now
	future := createExpiring(t, s, orgA, base, now.Add(time.Hour))
	noDeadline := create(t, s, orgA, newActivity(base.Add(-24*time.Hour)))
	done := createExpiring(t, s, orgB, base, deadline.Add(-time.Hour))
	done, err = s.CompleteActivity(ctx, orgB, done.ID, store.Completion{Status: store.StatusFailed, ErrorMessage: "real", CompleteTime: base})
	require.NoError(t, err)

	require.Equal(t, 2, abandon(t, s, now, 1000), "the expired activities of both organizations, nothing else")
	got, evs := get(t, s, orgA, expiredA.ID)
	requireActivity(t, abandoned(expiredA, now), got)
	require.Len(t, evs, 1, "events are kept")
	require.Equal(t, "abandoned: no completion by the deadline "+deadline.Format("2006-01-02T15:04:05.000000Z")+" plus grace 30s", got.ErrorMessage)
	require.Equal(t, now.Sub(base), got.Duration())
	got, _ = get(t, s, orgB, expiredB.ID)
	requireActivity(t, abandoned(expiredB, now), got)
	for _, unchanged := range []struct {
		org string
		a   store.Activity
	}{{orgA, onTheDot}, {orgA, future}, {orgA, noDeadline}, {orgB, done}} {
		got, _ := get(t, s, unchanged.org, unchanged.a.ID)
		requireActivity(t, unchanged.a, got)
	}

	require.Zero(t, abandon(t, s, now, 1000), "an abandoned activity is not abandoned again")
	got, _ = get(t, s, orgA, expiredA.ID)
	requireTime(t, now, got.CompleteTime)
	require.Equal(t, 1, abandon(t, s, now.Add(time.Microsecond), 1000), "a microsecond later the deadline on the dot has passed too")
}

func testAbandonIsBounded(t *testing.T, s store.Store) {
	org := newOrg()
	now := base.Add(time.Hour)
	var as []store.Activity
	for _, minutes := range []int{4, 1, 3, 0, 2} {
		as = append(as, createExpiring(t, s, org, base, base.Add(time.Duration(minutes)*time.Minute)))
	}
	status := func(i int) store.Status {
		got, _ := get(t, s, org, as[i].ID)
		return got.Status
	}
	require.Equal(t, 2, abandon(t, s, now, 2))
	require.Equal(t, store.StatusAbandoned, status(3), "earliest deadline first")
	require.Equal(t, store.StatusAbandoned, status(1))
	require.Equal(t, store.StatusRunning, status(4))
	require.Equal(t, 2, abandon(t, s, now, 2))
	require.Equal(t, store.StatusRunning, status(0))
	require.Equal(t, 1, abandon(t, s, now, 2))
	require.Zero(t, abandon(t, s, now, 2))
	for i := range as {
		require.Equal(t, store.StatusAbandoned, status(i))
	}
}

func testAbandonCompleteTimeClamped(t *testing.T, s store.Store) {
	org := newOrg()
	// A replica whose clock runs ahead started it after the sweeper's now.
	start := base.Add(time.Hour)
	a := createExpiring(t, s, org, start, base)
	require.Equal(t, 1, abandon(t, s, base.Add(time.Minute), 1000))
	got, _ := get(t, s, org, a.ID)
	requireTime(t, start, got.CompleteTime)
	require.Zero(t, got.Duration())
}

func testAbandonReason(t *testing.T, s store.Store) {
	org := newOrg()
	deadline := base.Add(time.Minute)
	for _, g := range []time.Duration{0, time.Microsecond, 1500 * time.Millisecond, 90 * time.Second, 2*time.Hour + time.Millisecond} {
		a := createExpiring(t, s, org, base, deadline)
		n, err := s.AbandonExpired(context.Background(), base.Add(3*time.Hour), g, 1000)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		got, _ := get(t, s, org, a.ID)
		require.Equal(t, store.AbandonReason(deadline, g), got.ErrorMessage, "grace %s", g)
	}
}

func testConcurrentSweepsAbandonOnce(t *testing.T, s store.Store) {
	org := newOrg()
	const n = 20
	for i := range n {
		createExpiring(t, s, org, base, base.Add(time.Duration(i)*time.Millisecond))
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		errs  []error
	)
	for range 8 {
		wg.Go(func() {
			for {
				k, err := s.AbandonExpired(context.Background(), base.Add(time.Hour), grace, 3)
				mu.Lock()
				total += k
				errs = append(errs, err)
				mu.Unlock()
				if err != nil || k == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, n, total, "every activity abandoned exactly once")
	for _, a := range list(t, s, org, store.ListQuery{}) {
		require.Equal(t, store.StatusAbandoned, a.Status)
	}
}

func testAbandonedTakesNoProgress(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	a := createExpiring(t, s, org, base, base)
	now := base.Add(time.Hour)
	require.Equal(t, 1, abandon(t, s, now, 1000))

	_, err := s.AppendProgress(ctx, org, a.ID, store.NewProgressEvent{Message: "too late", CreateTime: now})
	require.ErrorIs(t, err, store.ErrAlreadyEnded)
	again := newActivity(now)
	again.ID = a.ID
	got, created, err := s.CreateActivity(ctx, org, again)
	require.NoError(t, err)
	require.False(t, created, "an abandoned activity is returned as stored, not started again")
	requireActivity(t, abandoned(a, now), got)
}

func testLateCompletion(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	a := createExpiring(t, s, org, base, base)
	now := base.Add(time.Hour)
	require.Equal(t, 1, abandon(t, s, now, 1000))

	late := store.Completion{
		From:         lateFrom,
		Status:       store.StatusCompleted,
		Output:       map[string]any{"text": "finally"},
		Metadata:     map[string]any{"cost_usd": 0.5},
		CompleteTime: now.Add(time.Minute),
	}
	stored, err := s.CompleteActivity(ctx, org, a.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: late.CompleteTime})
	require.ErrorIs(t, err, store.ErrAlreadyEnded, "without From naming ABANDONED, only RUNNING may be completed")
	requireActivity(t, abandoned(a, now), stored)

	done, err := s.CompleteActivity(ctx, org, a.ID, late)
	require.NoError(t, err)
	want := a
	want.Status = store.StatusCompleted
	want.Output = late.Output
	want.Metadata = map[string]any{"account_id": "acc-1", "attempt": float64(1), "cost_usd": 0.5}
	want.CompleteTime = late.CompleteTime
	requireActivity(t, want, done)
	got, _ := get(t, s, org, a.ID)
	requireActivity(t, want, got)

	stored, err = s.CompleteActivity(ctx, org, a.ID, store.Completion{From: lateFrom, Status: store.StatusFailed, ErrorMessage: "other", CompleteTime: now})
	require.ErrorIs(t, err, store.ErrAlreadyEnded, "the real outcome, once recorded, stays")
	requireActivity(t, want, stored)
	require.Zero(t, abandon(t, s, now.Add(time.Hour), 1000))
}

func testConcurrentLateCompletions(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	a := createExpiring(t, s, org, base, base)
	require.Equal(t, 1, abandon(t, s, base.Add(time.Hour), 1000))
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []store.Activity
		losers  []store.Activity
		errs    []error
	)
	for i := range n {
		wg.Go(func() {
			got, err := s.CompleteActivity(ctx, org, a.ID, store.Completion{
				From: lateFrom, Status: store.StatusCompleted, Output: map[string]any{"n": float64(i)}, CompleteTime: base.Add(2 * time.Hour),
			})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, got)
				return
			}
			errs = append(errs, err)
			losers = append(losers, got)
		})
	}
	wg.Wait()
	require.Len(t, winners, 1, "exactly one late completion wins")
	for i, err := range errs {
		require.ErrorIs(t, err, store.ErrAlreadyEnded)
		requireActivity(t, winners[0], losers[i])
	}
}

func testListFiltersAbandoned(t *testing.T, s store.Store) {
	org := newOrg()
	gone := createExpiring(t, s, org, base, base)
	running := createExpiring(t, s, org, base.Add(time.Second), base.Add(24*time.Hour))
	require.Equal(t, 1, abandon(t, s, base.Add(time.Hour), 1000))
	require.Equal(t, []string{gone.ID}, ids(list(t, s, org, store.ListQuery{Filter: store.ListFilter{Status: store.StatusAbandoned}})))
	require.Equal(t, []string{running.ID}, ids(list(t, s, org, store.ListQuery{Filter: store.ListFilter{Status: store.StatusRunning}})))
}

func testAbandonCancelled(t *testing.T, s store.Store) {
	org := newOrg()
	a := createExpiring(t, s, org, base, base)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.AbandonExpired(ctx, base.Add(time.Hour), grace, 1000)
	require.Error(t, err)
	got, _ := get(t, s, org, a.ID)
	require.Equal(t, store.StatusRunning, got.Status)
}

// An abandonment takes a change number like any other change, in every
// organization it touches, and so does the late completion after it.
func testAbandonmentIsAChange(t *testing.T, s store.Store) {
	ctx := context.Background()
	orgA, orgB := newOrg(), newOrg()
	deadline := base.Add(time.Minute)
	a := createExpiring(t, s, orgA, base, deadline)
	b := createExpiring(t, s, orgB, base, deadline)
	hwA, hwB := highWater(t, s, orgA), highWater(t, s, orgB)

	now := deadline.Add(grace + time.Second)
	require.Equal(t, 2, abandon(t, s, now, 10))
	gotA := onlyChange(t, s, orgA, hwA, abandoned(a, now), nil)
	onlyChange(t, s, orgB, hwB, abandoned(b, now), nil)

	late, err := s.CompleteActivity(ctx, orgA, a.ID, store.Completion{From: lateFrom, Status: store.StatusCompleted, CompleteTime: now})
	require.NoError(t, err)
	onlyChange(t, s, orgA, gotA.Seq, late, nil)
}
