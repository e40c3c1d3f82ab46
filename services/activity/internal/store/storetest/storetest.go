// Package storetest is the conformance suite every store.Store backend must
// pass. It uses only the store interface, so it runs unchanged against
// memstore and pgstore, and fresh organization and activity ids in every
// subtest, so subtests may share one database and run in parallel.
package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// Run runs every subtest, each against a store made by newStore. newStore
// may return the same store (or database) every time.
//
// The subtests run in parallel, except those of AbandonExpired, which run
// one after the other: a sweep spans every organization, so on a shared
// store two of them would abandon each other's activities. Only they give
// activities deadlines, so no other subtest is affected by a sweep.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateReturnsRunningActivity", testCreateReturnsRunningActivity},
		{"CreateIsIdempotentOnID", testCreateIsIdempotentOnID},
		{"ConcurrentCreatesOfOneIDCreateOnce", testConcurrentCreatesOfOneIDCreateOnce},
		{"SameIDInTwoOrganizationsIsTwoActivities", testSameIDInTwoOrganizations},
		{"OrganizationsAreIsolated", testOrganizationsAreIsolated},
		{"UnknownActivityIsNotFound", testUnknownActivityIsNotFound},
		{"ProgressIsSequencedInOrder", testProgressIsSequencedInOrder},
		{"ConcurrentProgressHasNoGapsOrDuplicates", testConcurrentProgress},
		{"ProgressIsLimited", testProgressIsLimited},
		{"ProgressOnlyWhileRunning", testProgressOnlyWhileRunning},
		{"CompleteStoresCompletionAndMergesMetadata", testCompleteStoresCompletion},
		{"CompleteAsFailed", testCompleteAsFailed},
		{"CompleteMetadataMergeWithEmptySides", testCompleteMetadataMergeWithEmptySides},
		{"EndedActivityIsNeverOverwritten", testEndedActivityIsNeverOverwritten},
		{"ConcurrentCompletionsEndOnce", testConcurrentCompletionsEndOnce},
		{"CompleteTimeBeforeStartIsClamped", testCompleteTimeBeforeStartIsClamped},
		{"JSONRoundTrips", testJSONRoundTrips},
		{"ReturnedMapsAreCopies", testReturnedMapsAreCopies},
		{"EmptyObjectsReadAsNil", testEmptyObjectsReadAsNil},
		{"ListIsNewestFirst", testListIsNewestFirst},
		{"ListBreaksTimeTiesByIDDescending", testListBreaksTimeTies},
		{"ListPagesHaveNoGapsOrDuplicates", testListPages},
		{"ListFilters", testListFilters},
		{"ListPagesWithFilter", testListPagesWithFilter},
		{"ListReportsWhetherMoreFollow", testListReportsMore},
		{"ListStopsAtMaxBytes", testListStopsAtMaxBytes},
		{"ListOfUnknownOrganizationIsEmpty", testListOfUnknownOrganizationIsEmpty},
		{"CancelledContextFails", testCancelledContextFails},
	}
	for _, tc := range append(tests, changeTests...) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
	t.Run("AbandonExpired", func(t *testing.T) {
		t.Parallel()
		for _, tc := range abandonTests {
			t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
		}
	})
}

// base is a start time with the microsecond precision stores keep.
var base = time.Date(2031, 3, 4, 5, 6, 7, 123456000, time.UTC)

func newOrg() string { return "org-" + uuid.NewString() }

func newActivity(start time.Time) store.NewActivity {
	return store.NewActivity{
		ID:        uuid.NewString(),
		SessionID: "session-1",
		UserID:    "user-1",
		AgentType: "ai_executor",
		AgentName: "built-in",
		Category:  "quick",
		Input:     map[string]any{"prompt": "hello", "skills": []any{"a", "b"}},
		Metadata:  map[string]any{"account_id": "acc-1", "attempt": float64(1)},
		StartTime: start,
	}
}

func create(t *testing.T, s store.Store, org string, na store.NewActivity) store.Activity {
	t.Helper()
	a, created, err := s.CreateActivity(context.Background(), org, na)
	require.NoError(t, err)
	require.True(t, created)
	return a
}

func get(t *testing.T, s store.Store, org, id string) (store.Activity, []store.ProgressEvent) {
	t.Helper()
	a, evs, err := s.GetActivity(context.Background(), org, id)
	require.NoError(t, err)
	return a, evs
}

// list returns everything q matches, in one call when q.Limit is zero.
func list(t *testing.T, s store.Store, org string, q store.ListQuery) []store.Activity {
	t.Helper()
	as, _ := listPage(t, s, org, q)
	return as
}

func listPage(t *testing.T, s store.Store, org string, q store.ListQuery) ([]store.Activity, bool) {
	t.Helper()
	if q.Limit == 0 {
		q.Limit = 1000
	}
	as, more, err := s.ListActivities(context.Background(), org, q)
	require.NoError(t, err)
	require.LessOrEqual(t, len(as), q.Limit)
	require.False(t, more && len(as) == 0, "more is reported only after a non-empty page")
	return as, more
}

func ids(as []store.Activity) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}

// requireActivity compares activities with time.Equal, since a backend may
// return an equal instant in a different representation, and checks that
// times come back in UTC.
func requireActivity(t *testing.T, want, got store.Activity) {
	t.Helper()
	requireTime(t, want.StartTime, got.StartTime)
	requireTime(t, want.CompleteTime, got.CompleteTime)
	requireTime(t, want.Deadline, got.Deadline)
	want.StartTime, got.StartTime = time.Time{}, time.Time{}
	want.CompleteTime, got.CompleteTime = time.Time{}, time.Time{}
	want.Deadline, got.Deadline = time.Time{}, time.Time{}
	require.Equal(t, want, got)
}

func requireEvent(t *testing.T, want, got store.ProgressEvent) {
	t.Helper()
	requireTime(t, want.CreateTime, got.CreateTime)
	want.CreateTime, got.CreateTime = time.Time{}, time.Time{}
	require.Equal(t, want, got)
}

func requireTime(t *testing.T, want, got time.Time) {
	t.Helper()
	require.Truef(t, want.Equal(got), "time: want %v, got %v", want, got)
	if !got.IsZero() {
		require.Equal(t, time.UTC, got.Location(), "times are returned in UTC")
	}
}

// expected is the activity CreateActivity should have stored for na.
func expected(org string, na store.NewActivity) store.Activity {
	return store.Activity{
		ID:             na.ID,
		OrganizationID: org,
		SessionID:      na.SessionID,
		UserID:         na.UserID,
		AgentType:      na.AgentType,
		AgentName:      na.AgentName,
		Category:       na.Category,
		Status:         store.StatusRunning,
		Input:          na.Input,
		Metadata:       na.Metadata,
		StartTime:      na.StartTime,
		Deadline:       na.Deadline,
	}
}

func testCreateReturnsRunningActivity(t *testing.T, s store.Store) {
	org := newOrg()
	na := newActivity(base)
	a := create(t, s, org, na)
	requireActivity(t, expected(org, na), a)
	require.Zero(t, a.Duration())

	got, evs := get(t, s, org, na.ID)
	requireActivity(t, expected(org, na), got)
	require.Empty(t, evs)
}

func testCreateIsIdempotentOnID(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	first := newActivity(base)
	create(t, s, org, first)

	again := newActivity(base.Add(time.Hour))
	again.ID = first.ID
	again.SessionID = "another-session"
	again.Input = map[string]any{"prompt": "different"}
	a, created, err := s.CreateActivity(ctx, org, again)
	require.NoError(t, err)
	require.False(t, created, "an existing id is returned, not created again")
	requireActivity(t, expected(org, first), a)

	got, _ := get(t, s, org, first.ID)
	requireActivity(t, expected(org, first), got)

	// Idempotence holds for an ended activity too: it is returned as stored.
	_, err = s.CompleteActivity(ctx, org, first.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base.Add(time.Second)})
	require.NoError(t, err)
	a, created, err = s.CreateActivity(ctx, org, again)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, store.StatusCompleted, a.Status)
}

func testConcurrentCreatesOfOneIDCreateOnce(t *testing.T, s store.Store) {
	org := newOrg()
	id := uuid.NewString()
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		errs    []error
		users   = map[string]bool{}
	)
	for i := range n {
		wg.Go(func() {
			na := newActivity(base)
			na.ID = id
			na.UserID = fmt.Sprintf("user-%d", i)
			a, c, err := s.CreateActivity(context.Background(), org, na)
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			if c {
				created++
			}
			users[a.UserID] = true
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, created, "exactly one concurrent create wins")
	require.Len(t, users, 1, "every caller sees the winner's activity")
}

func testSameIDInTwoOrganizations(t *testing.T, s store.Store) {
	ctx := context.Background()
	orgA, orgB := newOrg(), newOrg()
	naA := newActivity(base)
	naB := newActivity(base.Add(time.Minute))
	naB.ID = naA.ID
	naB.UserID = "user-of-b"

	create(t, s, orgA, naA)
	b, created, err := s.CreateActivity(ctx, orgB, naB)
	require.NoError(t, err)
	require.True(t, created, "ids are scoped by organization")
	requireActivity(t, expected(orgB, naB), b)

	_, err = s.CompleteActivity(ctx, orgA, naA.ID, store.Completion{Status: store.StatusFailed, ErrorMessage: "boom", CompleteTime: base.Add(time.Hour)})
	require.NoError(t, err)
	_, err = s.AppendProgress(ctx, orgB, naB.ID, store.NewProgressEvent{Message: "b step", CreateTime: base.Add(time.Hour)})
	require.NoError(t, err)

	gotA, evsA := get(t, s, orgA, naA.ID)
	require.Equal(t, store.StatusFailed, gotA.Status)
	require.Empty(t, evsA)
	gotB, evsB := get(t, s, orgB, naB.ID)
	requireActivity(t, expected(orgB, naB), gotB)
	require.Len(t, evsB, 1)
}

func testOrganizationsAreIsolated(t *testing.T, s store.Store) {
	ctx := context.Background()
	orgA, orgB := newOrg(), newOrg()
	na := newActivity(base)
	create(t, s, orgA, na)
	create(t, s, orgB, newActivity(base)) // B has activities of its own

	_, _, err := s.GetActivity(ctx, orgB, na.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.AppendProgress(ctx, orgB, na.ID, store.NewProgressEvent{Message: "intrusion", CreateTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.CompleteActivity(ctx, orgB, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NotContains(t, ids(list(t, s, orgB, store.ListQuery{})), na.ID)
	require.NotContains(t, ids(list(t, s, orgB, store.ListQuery{Filter: store.ListFilter{SessionID: na.SessionID}})), na.ID)

	got, evs := get(t, s, orgA, na.ID)
	requireActivity(t, expected(orgA, na), got)
	require.Empty(t, evs, "another organization's append left nothing")
	require.Equal(t, []string{na.ID}, ids(list(t, s, orgA, store.ListQuery{})))
}

func testUnknownActivityIsNotFound(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	create(t, s, org, newActivity(base))
	missing := uuid.NewString()

	_, _, err := s.GetActivity(ctx, org, missing)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.AppendProgress(ctx, org, missing, store.NewProgressEvent{Message: "x", CreateTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.CompleteActivity(ctx, org, missing, store.Completion{Status: store.StatusCompleted, CompleteTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testProgressIsSequencedInOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)

	var appended []store.ProgressEvent
	for i := 1; i <= 3; i++ {
		ev := store.NewProgressEvent{
			Message:    fmt.Sprintf("attempt %d of 3", i),
			Data:       map[string]any{"attempt": float64(i)},
			CreateTime: base.Add(time.Duration(i) * time.Second),
		}
		pe, err := s.AppendProgress(ctx, org, na.ID, ev)
		require.NoError(t, err)
		requireEvent(t, store.ProgressEvent{
			ActivityID: na.ID, Sequence: int64(i), Message: ev.Message, Data: ev.Data, CreateTime: ev.CreateTime,
		}, pe)
		appended = append(appended, pe)
	}

	_, evs := get(t, s, org, na.ID)
	require.Len(t, evs, len(appended))
	for i := range appended {
		requireEvent(t, appended[i], evs[i])
	}
}

func testConcurrentProgress(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)

	const n = 64
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		got  = map[int64]string{} // sequence → message
	)
	for i := range n {
		wg.Go(func() {
			pe, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: fmt.Sprintf("step %d", i), CreateTime: base})
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			got[pe.Sequence] = pe.Message
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, got, n, "every append got its own sequence number")

	_, evs := get(t, s, org, na.ID)
	require.Len(t, evs, n)
	for i, ev := range evs {
		require.Equal(t, int64(i+1), ev.Sequence, "sequences are 1..n in order, without gaps")
		require.Equal(t, got[ev.Sequence], ev.Message, "the stored event is the one its append reported")
	}
}

func testProgressIsLimited(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	for i := range store.MaxProgressEvents {
		_, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: fmt.Sprint(i), CreateTime: base})
		require.NoError(t, err)
	}
	_, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "one too many", CreateTime: base})
	require.ErrorIs(t, err, store.ErrProgressLimit)

	_, evs := get(t, s, org, na.ID)
	require.Len(t, evs, store.MaxProgressEvents)
}

func testProgressOnlyWhileRunning(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	_, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "before end", CreateTime: base})
	require.NoError(t, err)
	_, err = s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base.Add(time.Second)})
	require.NoError(t, err)

	_, err = s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "after end", CreateTime: base.Add(2 * time.Second)})
	require.ErrorIs(t, err, store.ErrAlreadyEnded)
	_, evs := get(t, s, org, na.ID)
	require.Len(t, evs, 1)
	require.Equal(t, "before end", evs[0].Message)
}

func testCompleteStoresCompletion(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	na.Metadata = map[string]any{"account_id": "acc-1", "keep": "start"}
	create(t, s, org, na)

	c := store.Completion{
		Status:       store.StatusCompleted,
		Output:       map[string]any{"text": "done", "tokens": float64(42)},
		Metadata:     map[string]any{"account_id": "acc-2", "cost_usd": 0.0012},
		CompleteTime: base.Add(1500 * time.Millisecond),
	}
	a, err := s.CompleteActivity(ctx, org, na.ID, c)
	require.NoError(t, err)

	want := expected(org, na)
	want.Status = store.StatusCompleted
	want.Output = c.Output
	want.Metadata = map[string]any{"account_id": "acc-2", "keep": "start", "cost_usd": 0.0012}
	want.CompleteTime = c.CompleteTime
	requireActivity(t, want, a)
	require.Equal(t, 1500*time.Millisecond, a.Duration())

	got, _ := get(t, s, org, na.ID)
	requireActivity(t, want, got)
}

func testCompleteAsFailed(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	a, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{
		Status: store.StatusFailed, ErrorMessage: "429 on every account", CompleteTime: base.Add(time.Second),
	})
	require.NoError(t, err)
	require.Equal(t, store.StatusFailed, a.Status)
	require.Equal(t, "429 on every account", a.ErrorMessage)
	require.Nil(t, a.Output)
	require.Equal(t, na.Metadata, a.Metadata, "no completion metadata leaves metadata as it was")
}

func testCompleteMetadataMergeWithEmptySides(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	na.Metadata = nil
	create(t, s, org, na)
	a, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{
		Status: store.StatusCompleted, Metadata: map[string]any{"attempts": float64(2)}, CompleteTime: base,
	})
	require.NoError(t, err)
	require.Equal(t, map[string]any{"attempts": float64(2)}, a.Metadata)

	na2 := newActivity(base)
	na2.Metadata = nil
	create(t, s, org, na2)
	a, err = s.CompleteActivity(ctx, org, na2.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base})
	require.NoError(t, err)
	require.Nil(t, a.Metadata)
}

func testEndedActivityIsNeverOverwritten(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	first := store.Completion{Status: store.StatusCompleted, Output: map[string]any{"text": "first"}, CompleteTime: base.Add(time.Second)}
	ended, err := s.CompleteActivity(ctx, org, na.ID, first)
	require.NoError(t, err)

	for _, c := range []store.Completion{
		first, // even an identical repeat: judging repeats is the caller's job
		{Status: store.StatusFailed, ErrorMessage: "late failure", CompleteTime: base.Add(time.Minute)},
		{Status: store.StatusCompleted, Output: map[string]any{"text": "second"}, Metadata: map[string]any{"x": "y"}, CompleteTime: base.Add(time.Minute)},
	} {
		stored, err := s.CompleteActivity(ctx, org, na.ID, c)
		require.ErrorIs(t, err, store.ErrAlreadyEnded)
		requireActivity(t, ended, stored)
	}
	got, _ := get(t, s, org, na.ID)
	requireActivity(t, ended, got)
}

func testConcurrentCompletionsEndOnce(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)

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
			a, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{
				Status: store.StatusCompleted, Output: map[string]any{"n": float64(i)}, CompleteTime: base.Add(time.Second),
			})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, a)
			} else {
				errs = append(errs, err)
				losers = append(losers, a)
			}
		})
	}
	wg.Wait()
	require.Len(t, winners, 1, "exactly one completion wins")
	for i, err := range errs {
		require.ErrorIs(t, err, store.ErrAlreadyEnded)
		requireActivity(t, winners[0], losers[i])
	}
	got, _ := get(t, s, org, na.ID)
	requireActivity(t, winners[0], got)
}

func testCompleteTimeBeforeStartIsClamped(t *testing.T, s store.Store) {
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	a, err := s.CompleteActivity(context.Background(), org, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base.Add(-time.Second)})
	require.NoError(t, err)
	requireTime(t, base, a.CompleteTime)
	require.Zero(t, a.Duration())
}

// jsonObject holds every kind of JSON value, decoded as encoding/json
// decodes into map[string]any.
func jsonObject() map[string]any {
	return map[string]any{
		"string":   "héllo \"wörld\" \n\t<tag>&",
		"emoji":    "🚂",
		"int":      float64(42),
		"neg":      float64(-7),
		"float":    3.25,
		"big":      float64(1 << 52),
		"tiny":     1e-9,
		"true":     true,
		"false":    false,
		"null":     nil,
		"empty":    "",
		"array":    []any{"a", float64(1), true, nil, map[string]any{"k": "v"}, []any{}},
		"object":   map[string]any{"nested": map[string]any{"deeper": []any{float64(1), float64(2)}}},
		"emptyObj": map[string]any{},
		"":         "empty key",
	}
}

func testJSONRoundTrips(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	na.Input = jsonObject()
	na.Metadata = jsonObject()
	create(t, s, org, na)
	pe, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", Data: jsonObject(), CreateTime: base})
	require.NoError(t, err)
	require.Equal(t, jsonObject(), pe.Data)
	a, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusCompleted, Output: jsonObject(), CompleteTime: base})
	require.NoError(t, err)
	require.Equal(t, jsonObject(), a.Output)

	got, evs := get(t, s, org, na.ID)
	require.Equal(t, jsonObject(), got.Input)
	require.Equal(t, jsonObject(), got.Output)
	require.Equal(t, jsonObject(), got.Metadata)
	require.Len(t, evs, 1)
	require.Equal(t, jsonObject(), evs[0].Data)
	listed := list(t, s, org, store.ListQuery{})
	require.Len(t, listed, 1)
	require.Equal(t, jsonObject(), listed[0].Input)
}

func testReturnedMapsAreCopies(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	a := create(t, s, org, na)

	// Changing what the caller passed or got back changes nothing stored.
	na.Input["prompt"] = "changed by caller"
	a.Input["prompt"] = "changed by reader"
	a.Metadata["new"] = "key"
	a.Input["skills"].([]any)[0] = "z"

	pe, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", Data: map[string]any{"k": "v"}, CreateTime: base})
	require.NoError(t, err)
	pe.Data["k"] = "changed"

	got, evs := get(t, s, org, na.ID)
	require.Equal(t, map[string]any{"prompt": "hello", "skills": []any{"a", "b"}}, got.Input)
	require.Equal(t, map[string]any{"account_id": "acc-1", "attempt": float64(1)}, got.Metadata)
	require.Equal(t, map[string]any{"k": "v"}, evs[0].Data)

	got.Input["prompt"] = "changed again"
	evs[0].Data["k"] = "changed again"
	listed := list(t, s, org, store.ListQuery{})
	listed[0].Metadata["x"] = "y"
	again, evs := get(t, s, org, na.ID)
	require.Equal(t, "hello", again.Input["prompt"])
	require.NotContains(t, again.Metadata, "x")
	require.Equal(t, "v", evs[0].Data["k"])
}

func testEmptyObjectsReadAsNil(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	na.Input = map[string]any{}
	na.Metadata = map[string]any{}
	a := create(t, s, org, na)
	require.Nil(t, a.Input)
	require.Nil(t, a.Metadata)
	pe, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", Data: map[string]any{}, CreateTime: base})
	require.NoError(t, err)
	require.Nil(t, pe.Data)
	a, err = s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusCompleted, Output: map[string]any{}, Metadata: map[string]any{}, CompleteTime: base})
	require.NoError(t, err)
	require.Nil(t, a.Output)
	require.Nil(t, a.Metadata)
	got, evs := get(t, s, org, na.ID)
	require.Nil(t, got.Input)
	require.Nil(t, got.Output)
	require.Nil(t, got.Metadata)
	require.Nil(t, evs[0].Data)
}

func testListIsNewestFirst(t *testing.T, s store.Store) {
	org := newOrg()
	// Created in an order unrelated to their start times.
	for _, offset := range []int{3, 1, 4, 0, 2} {
		create(t, s, org, newActivity(base.Add(time.Duration(offset)*time.Minute)))
	}
	got := list(t, s, org, store.ListQuery{})
	require.Len(t, got, 5)
	for i := 1; i < len(got); i++ {
		require.True(t, got[i-1].StartTime.After(got[i].StartTime), "newest first: %v then %v", got[i-1].StartTime, got[i].StartTime)
	}
	requireTime(t, base.Add(4*time.Minute), got[0].StartTime)

	limited := list(t, s, org, store.ListQuery{Limit: 2})
	require.Equal(t, ids(got[:2]), ids(limited))
}

func testListBreaksTimeTies(t *testing.T, s store.Store) {
	org := newOrg()
	for range 6 {
		create(t, s, org, newActivity(base))
	}
	create(t, s, org, newActivity(base.Add(time.Second)))
	got := list(t, s, org, store.ListQuery{})
	require.Len(t, got, 7)
	requireTime(t, base.Add(time.Second), got[0].StartTime)
	for i := 2; i < len(got); i++ {
		require.Greater(t, got[i-1].ID, got[i].ID, "equal start times are ordered by id, descending")
	}
}

// listAll pages through q with the given page size, following cursors
// while the store reports more, as the tracker does.
func listAll(t *testing.T, s store.Store, org string, q store.ListQuery, pageSize int) []string {
	t.Helper()
	var all []string
	q.Limit = pageSize
	q.After = nil
	for range 1000 {
		page, more := listPage(t, s, org, q)
		all = append(all, ids(page)...)
		if !more {
			return all
		}
		c := store.CursorOf(page[len(page)-1])
		q.After = &c
	}
	t.Fatal("pagination did not end")
	return nil
}

func testListPages(t *testing.T, s store.Store) {
	org := newOrg()
	// Groups of activities sharing a start time, so that page boundaries
	// fall inside groups.
	for i := range 13 {
		create(t, s, org, newActivity(base.Add(time.Duration(i/4)*time.Second)))
	}
	want := ids(list(t, s, org, store.ListQuery{}))
	require.Len(t, want, 13)
	for _, size := range []int{1, 2, 3, 4, 5, 13, 14} {
		require.Equal(t, want, listAll(t, s, org, store.ListQuery{}, size), "page size %d", size)
	}
}

func testListFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	mk := func(session string, minute int, st store.Status) string {
		na := newActivity(base.Add(time.Duration(minute) * time.Minute))
		na.SessionID = session
		create(t, s, org, na)
		if st != store.StatusRunning {
			_, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: st, CompleteTime: na.StartTime.Add(time.Second)})
			require.NoError(t, err)
		}
		return na.ID
	}
	s1Run := mk("s1", 0, store.StatusRunning)
	s1Done := mk("s1", 1, store.StatusCompleted)
	s2Fail := mk("s2", 2, store.StatusFailed)
	s2Done := mk("s2", 3, store.StatusCompleted)
	noSession := mk("", 4, store.StatusRunning)

	at := func(minute int) time.Time { return base.Add(time.Duration(minute) * time.Minute) }
	for _, tc := range []struct {
		name string
		f    store.ListFilter
		want []string
	}{
		{"none", store.ListFilter{}, []string{noSession, s2Done, s2Fail, s1Done, s1Run}},
		{"session", store.ListFilter{SessionID: "s1"}, []string{s1Done, s1Run}},
		{"unknown session", store.ListFilter{SessionID: "s9"}, nil},
		{"running", store.ListFilter{Status: store.StatusRunning}, []string{noSession, s1Run}},
		{"completed", store.ListFilter{Status: store.StatusCompleted}, []string{s2Done, s1Done}},
		{"failed", store.ListFilter{Status: store.StatusFailed}, []string{s2Fail}},
		{"from is inclusive", store.ListFilter{StartFrom: at(3)}, []string{noSession, s2Done}},
		{"to is exclusive", store.ListFilter{StartTo: at(1)}, []string{s1Run}},
		{"window", store.ListFilter{StartFrom: at(1), StartTo: at(3)}, []string{s2Fail, s1Done}},
		{"everything combined", store.ListFilter{SessionID: "s2", Status: store.StatusCompleted, StartFrom: at(0), StartTo: at(4)}, []string{s2Done}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(list(t, s, org, store.ListQuery{Filter: tc.f}))
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func testListPagesWithFilter(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	for i := range 12 {
		na := newActivity(base.Add(time.Duration(i/3) * time.Second))
		create(t, s, org, na)
		if i%2 == 0 {
			_, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusFailed, CompleteTime: base.Add(time.Hour)})
			require.NoError(t, err)
		}
	}
	q := store.ListQuery{Filter: store.ListFilter{Status: store.StatusFailed}}
	want := ids(list(t, s, org, q))
	require.Len(t, want, 6)
	for _, size := range []int{1, 2, 4} {
		require.Equal(t, want, listAll(t, s, org, q, size), "page size %d", size)
	}
}

func testListReportsMore(t *testing.T, s store.Store) {
	org := newOrg()
	for i := range 3 {
		create(t, s, org, newActivity(base.Add(time.Duration(i)*time.Second)))
	}
	for _, tc := range []struct {
		limit, want int
		more        bool
	}{{1, 1, true}, {2, 2, true}, {3, 3, false}, {4, 3, false}} {
		page, more := listPage(t, s, org, store.ListQuery{Limit: tc.limit})
		require.Len(t, page, tc.want, "limit %d", tc.limit)
		require.Equal(t, tc.more, more, "limit %d", tc.limit)
	}

	all := list(t, s, org, store.ListQuery{})
	last := store.CursorOf(all[1])
	page, more := listPage(t, s, org, store.ListQuery{Limit: 1, After: &last})
	require.Equal(t, ids(all[2:]), ids(page))
	require.False(t, more, "nothing follows the oldest activity")

	// The filter decides what "more" counts.
	page, more = listPage(t, s, org, store.ListQuery{Limit: 1, Filter: store.ListFilter{StartFrom: base.Add(2 * time.Second)}})
	require.Len(t, page, 1)
	require.False(t, more)

	page, more = listPage(t, s, newOrg(), store.ListQuery{Limit: 1})
	require.Empty(t, page)
	require.False(t, more)
}

func testListStopsAtMaxBytes(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	// Each activity weighs a little over 10,000 bytes, however a backend
	// encodes JSON; the budgets below leave wide margins around multiples
	// of it.
	const blob = 10_000
	var want []string
	for i := range 5 {
		na := newActivity(base.Add(time.Duration(-i) * time.Second)) // newest first
		na.Input = map[string]any{"blob": strings.Repeat("x", blob/2)}
		na.Metadata = nil
		create(t, s, org, na)
		// Half in output or error message, which count too.
		c := store.Completion{Status: store.StatusCompleted, Output: map[string]any{"blob": strings.Repeat("y", blob/2)}, CompleteTime: base}
		if i%2 == 1 {
			c = store.Completion{Status: store.StatusFailed, ErrorMessage: strings.Repeat("e", blob/2), CompleteTime: base}
		}
		_, err := s.CompleteActivity(ctx, org, na.ID, c)
		require.NoError(t, err)
		want = append(want, na.ID)
	}

	for _, tc := range []struct {
		maxBytes, want int
		more           bool
	}{
		{0, 5, false}, // no budget
		{1, 1, true},  // the first activity is returned whatever its size
		{blob + blob/2, 1, true},
		{2*blob + blob/2, 2, true},
		{10 * blob, 5, false},
	} {
		page, more := listPage(t, s, org, store.ListQuery{Limit: 10, MaxBytes: tc.maxBytes})
		require.Equal(t, want[:tc.want], ids(page), "max bytes %d", tc.maxBytes)
		require.Equal(t, tc.more, more, "max bytes %d", tc.maxBytes)
	}

	// The limit still applies within the budget, and pages cut by size
	// neither skip nor repeat activities.
	page, more := listPage(t, s, org, store.ListQuery{Limit: 2, MaxBytes: 10 * blob})
	require.Equal(t, want[:2], ids(page))
	require.True(t, more)
	require.Equal(t, want, listAll(t, s, org, store.ListQuery{MaxBytes: 2*blob + blob/2}, 10))
}

func testListOfUnknownOrganizationIsEmpty(t *testing.T, s store.Store) {
	require.Empty(t, list(t, s, newOrg(), store.ListQuery{}))
}

func testCancelledContextFails(t *testing.T, s store.Store) {
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	_, _, err := s.CreateActivity(ctx, org, newActivity(base))
	require.Error(t, err)
	_, err = s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", CreateTime: base})
	require.Error(t, err)
	_, err = s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base})
	require.Error(t, err)
	_, _, err = s.GetActivity(ctx, org, na.ID)
	require.Error(t, err)
	_, _, err = s.ListActivities(ctx, org, store.ListQuery{Limit: 10})
	require.Error(t, err)

	got, evs := get(t, s, org, na.ID)
	require.Equal(t, store.StatusRunning, got.Status, "a failed call changed nothing")
	require.Empty(t, evs)
}
