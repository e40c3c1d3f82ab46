package tracker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

const grace = 30 * time.Second

func abandon(t *testing.T, tr *tracker.Tracker) int {
	t.Helper()
	n, err := tr.AbandonExpired(context.Background(), grace, 0)
	require.NoError(t, err)
	return n
}

func TestStartKeepsTheDeadlineToTheMicrosecond(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	deadline := time.Date(2030, 1, 2, 4, 4, 5, 123456789, time.FixedZone("CET", 3600))
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: deadline})
	require.Equal(t, time.UTC, a.Deadline.Location())
	require.True(t, deadline.Truncate(time.Microsecond).Equal(a.Deadline), "got %v", a.Deadline)
	got, _, err := tr.Get(ctx, "org", a.ID)
	require.NoError(t, err)
	require.Equal(t, a.Deadline, got.Deadline)

	none := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	require.True(t, none.Deadline.IsZero())
}

func TestAbandonExpiredTakesTheServiceClockAndTheGrace(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	deadline := t0.Add(time.Minute)
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: deadline})
	forever := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	past := start(t, tr, tracker.StartInput{OrganizationID: "other-org", Deadline: t0.Add(-time.Hour)})

	require.Equal(t, 1, abandon(t, tr), "a deadline already past at the start is accepted, and abandoned after the grace")
	clock.Advance(time.Minute + grace)
	require.Zero(t, abandon(t, tr), "deadline plus grace is now: not yet passed")
	clock.Advance(time.Microsecond)
	require.Equal(t, 1, abandon(t, tr))

	got, _, err := tr.Get(ctx, "org", a.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusAbandoned, got.Status)
	require.True(t, clock.Now().Equal(got.CompleteTime))
	require.Equal(t, "abandoned: no completion by the deadline 2030-01-02T03:05:05.000000Z plus grace 30s", got.ErrorMessage)
	got, _, err = tr.Get(ctx, "other-org", past.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusAbandoned, got.Status)

	clock.Advance(365 * 24 * time.Hour)
	require.Zero(t, abandon(t, tr))
	got, _, err = tr.Get(ctx, "org", forever.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusRunning, got.Status, "an activity without a deadline is never abandoned")
}

func TestAbandonExpiredArguments(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	_, err := tr.AbandonExpired(ctx, -time.Second, 0)
	requireInvalid(t, err, "grace")
	_, err = tr.AbandonExpired(ctx, grace, -1)
	requireInvalid(t, err, "limit")

	for range tracker.AbandonBatch + 1 {
		start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: t0})
	}
	clock.Advance(time.Hour)
	require.Equal(t, tracker.AbandonBatch, abandon(t, tr), "limit 0 is one batch")
	require.Equal(t, 1, abandon(t, tr))
	n, err := tr.AbandonExpired(ctx, grace, 5)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestAbandonedActivityLifecycle(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: t0, Metadata: map[string]any{"request_id": "r1"}})
	clock.Advance(time.Minute)
	require.Equal(t, 1, abandon(t, tr))

	_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: a.ID, Message: "still here"})
	require.ErrorIs(t, err, store.ErrAlreadyEnded)
	again, created, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", ActivityID: a.ID, Deadline: t0.Add(time.Hour)})
	require.NoError(t, err)
	require.False(t, created, "an abandoned activity is returned, never restarted")
	require.Equal(t, store.StatusAbandoned, again.Status)
	require.True(t, t0.Equal(again.Deadline))
	_, err = tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: a.ID, Status: store.StatusAbandoned})
	requireInvalid(t, err, "status")

	clock.Advance(time.Minute)
	late := tracker.CompleteInput{
		OrganizationID: "org", ActivityID: a.ID, Status: store.StatusFailed,
		Output: map[string]any{"partial": "text"}, ErrorMessage: "upstream 529", Metadata: map[string]any{"attempts": 3.0},
	}
	done, err := tr.Complete(ctx, late)
	require.NoError(t, err, "a late completion records the real outcome")
	require.Equal(t, store.StatusFailed, done.Status)
	require.Equal(t, "upstream 529", done.ErrorMessage)
	require.Equal(t, map[string]any{"partial": "text"}, done.Output)
	require.Equal(t, map[string]any{"request_id": "r1", "attempts": 3.0}, done.Metadata)
	require.True(t, clock.Now().Equal(done.CompleteTime))
	require.Equal(t, 2*time.Minute, done.Duration())

	clock.Advance(time.Minute)
	repeat, err := tr.Complete(ctx, late)
	require.NoError(t, err)
	require.Equal(t, done, repeat, "the late completion repeats like any other")
	_, err = tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: a.ID, Status: store.StatusCompleted})
	require.ErrorIs(t, err, tracker.ErrCompletionConflict, "the real outcome, once recorded, is final")
	got, _, err := tr.Get(ctx, "org", a.ID)
	require.NoError(t, err)
	require.Equal(t, done, got)
}

func TestCompleteBeforeTheSweepIsNeverAbandoned(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: t0})
	_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: a.ID, Status: store.StatusCompleted})
	require.NoError(t, err)
	clock.Advance(time.Hour)
	require.Zero(t, abandon(t, tr))
	got, _, err := tr.Get(ctx, "org", a.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, got.Status)
}

func TestListFiltersAbandoned(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: t0})
	start(t, tr, tracker.StartInput{OrganizationID: "org"})
	clock.Advance(time.Hour)
	require.Equal(t, 1, abandon(t, tr))
	res, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", Status: store.StatusAbandoned})
	require.NoError(t, err)
	require.Equal(t, []string{a.ID}, ids(res.Activities))
}
