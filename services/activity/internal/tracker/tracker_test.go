package tracker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newTracker() (*tracker.Tracker, *fakeclock.Clock) {
	clock := fakeclock.New(t0)
	return tracker.New(memstore.New(), tracker.Config{Now: clock.Now}), clock
}

func start(t *testing.T, tr *tracker.Tracker, in tracker.StartInput) store.Activity {
	t.Helper()
	a, created, err := tr.Start(context.Background(), in)
	require.NoError(t, err)
	require.True(t, created)
	return a
}

func requireInvalid(t *testing.T, err error, field string) {
	t.Helper()
	var ve *tracker.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, field, ve.Field, "problem: %s", ve.Problem)
	require.NotEmpty(t, ve.Problem)
}

func TestStartGeneratesTimeOrderedID(t *testing.T) {
	tr, _ := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", AgentType: "ai_executor"})
	u, err := uuid.Parse(a.ID)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), u.Version())
	require.Equal(t, u.String(), a.ID)
	require.Equal(t, store.StatusRunning, a.Status)
	require.Equal(t, "org", a.OrganizationID)
	require.True(t, t0.Equal(a.StartTime))
}

func TestStartTruncatesClockToMicroseconds(t *testing.T) {
	clock := fakeclock.New(time.Date(2030, 1, 1, 0, 0, 0, 123456789, time.FixedZone("X", 3600)))
	tr := tracker.New(memstore.New(), tracker.Config{Now: clock.Now})
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	require.Equal(t, 123456000, a.StartTime.Nanosecond())
	require.Equal(t, time.UTC, a.StartTime.Location())
	got, _, err := tr.Get(context.Background(), "org", a.ID)
	require.NoError(t, err)
	require.Equal(t, a.StartTime, got.StartTime, "the time a call returns is the time stored")
}

func TestStartIsIdempotentOnGivenID(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	id := uuid.NewString()
	first := start(t, tr, tracker.StartInput{
		OrganizationID: "org", ActivityID: strings.ToUpper(id), SessionID: "s1",
		Input: map[string]any{"prompt": "hi"},
	})
	require.Equal(t, id, first.ID, "ids are returned in lowercase")

	clock.Advance(time.Minute)
	again, created, err := tr.Start(ctx, tracker.StartInput{
		OrganizationID: "org", ActivityID: id, SessionID: "s2", Input: map[string]any{"prompt": "other"},
	})
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, first, again, "the stored activity is returned unchanged")
}

func TestIDsAreScopedByOrganization(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	id := uuid.NewString()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org-a", ActivityID: id, UserID: "alice"})
	b := start(t, tr, tracker.StartInput{OrganizationID: "org-b", ActivityID: id, UserID: "bob"})
	require.Equal(t, a.ID, b.ID)

	_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org-b", ActivityID: id, Status: store.StatusFailed, ErrorMessage: "b failed"})
	require.NoError(t, err)
	gotA, _, err := tr.Get(ctx, "org-a", id)
	require.NoError(t, err)
	require.Equal(t, "alice", gotA.UserID)
	require.Equal(t, store.StatusRunning, gotA.Status, "org B's completion did not touch org A's activity")
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	running := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	validID := running.ID
	big := func(n int) map[string]any { return map[string]any{"s": strings.Repeat("x", n)} }

	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"start without organization", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{})
			return err
		}, "organization_id"},
		{"organization with newline", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org\nfake log line"})
			return err
		}, "organization_id"},
		{"organization too long", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: strings.Repeat("o", tracker.MaxIdentifierBytes+1)})
			return err
		}, "organization_id"},
		{"activity id not a UUID", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", ActivityID: "task-42"})
			return err
		}, "activity_id"},
		{"activity id in braces", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", ActivityID: "{" + uuid.NewString() + "}"})
			return err
		}, "activity_id"},
		{"nil activity id", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", ActivityID: uuid.Nil.String()})
			return err
		}, "activity_id"},
		{"session id not UTF-8", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", SessionID: "\xff"})
			return err
		}, "session_id"},
		{"category too long", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", Category: strings.Repeat("c", 300)})
			return err
		}, "category"},
		{"input too large", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", Input: big(tracker.MaxObjectBytes)})
			return err
		}, "input_data"},
		{"input with NUL", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", Input: map[string]any{"a": []any{"x\x00y"}}})
			return err
		}, "input_data"},
		{"input key with NUL", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", Input: map[string]any{"a\x00": 1.0}})
			return err
		}, "input_data"},
		{"input not JSON", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", Input: map[string]any{"f": func() {}}})
			return err
		}, "input_data"},
		{"metadata too large", func() error {
			_, _, err := tr.Start(ctx, tracker.StartInput{OrganizationID: "org", Metadata: big(tracker.MaxMetadataBytes)})
			return err
		}, "metadata"},
		{"progress without activity id", func() error {
			_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", Message: "m"})
			return err
		}, "activity_id"},
		{"progress without message", func() error {
			_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: validID})
			return err
		}, "message"},
		{"progress message too long", func() error {
			_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: validID, Message: strings.Repeat("m", tracker.MaxProgressMessageBytes+1)})
			return err
		}, "message"},
		{"progress data too large", func() error {
			_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: validID, Message: "m", Data: big(tracker.MaxProgressDataBytes)})
			return err
		}, "data"},
		{"complete as running", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID, Status: store.StatusRunning})
			return err
		}, "status"},
		{"complete without status", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID})
			return err
		}, "status"},
		{"completed with error message", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID, Status: store.StatusCompleted, ErrorMessage: "oops"})
			return err
		}, "error_message"},
		{"error message with NUL", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID, Status: store.StatusFailed, ErrorMessage: "a\x00b"})
			return err
		}, "error_message"},
		{"error message too long", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID, Status: store.StatusFailed, ErrorMessage: strings.Repeat("e", tracker.MaxErrorMessageBytes+1)})
			return err
		}, "error_message"},
		{"output too large", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID, Status: store.StatusCompleted, Output: big(tracker.MaxObjectBytes)})
			return err
		}, "output_data"},
		{"complete metadata too large", func() error {
			_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: validID, Status: store.StatusCompleted, Metadata: big(tracker.MaxMetadataBytes)})
			return err
		}, "metadata"},
		{"get with bad id", func() error {
			_, _, err := tr.Get(ctx, "org", "not-a-uuid")
			return err
		}, "activity_id"},
		{"get without organization", func() error {
			_, _, err := tr.Get(ctx, "", validID)
			return err
		}, "organization_id"},
		{"list without organization", func() error {
			_, err := tr.List(ctx, tracker.ListInput{})
			return err
		}, "organization_id"},
		{"list with unknown status", func() error {
			_, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", Status: "paused"})
			return err
		}, "status"},
		{"page size negative", func() error {
			_, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageSize: -1})
			return err
		}, "page_size"},
		{"page size too large", func() error {
			_, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageSize: tracker.MaxPageSize + 1})
			return err
		}, "page_size"},
		{"empty time window", func() error {
			_, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", StartFrom: t0, StartTo: t0})
			return err
		}, "start_time_to"},
		{"garbage page token", func() error {
			_, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageToken: "not a token"})
			return err
		}, "page_token"},
		{"huge page token", func() error {
			_, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageToken: strings.Repeat("A", 10000)})
			return err
		}, "page_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireInvalid(t, tc.call(), tc.field)
		})
	}

	// Nothing invalid was written.
	a, evs, err := tr.Get(ctx, "org", validID)
	require.NoError(t, err)
	require.Equal(t, store.StatusRunning, a.Status)
	require.Empty(t, evs)
	res, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org"})
	require.NoError(t, err)
	require.Len(t, res.Activities, 1)
}

func TestLimitsAreInclusive(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	// {"s":"xxx..."} is 8 bytes of JSON around the string.
	exactly := func(n int) map[string]any { return map[string]any{"s": strings.Repeat("x", n-8)} }
	a := start(t, tr, tracker.StartInput{
		OrganizationID: "org",
		Category:       strings.Repeat("c", tracker.MaxIdentifierBytes),
		Input:          exactly(tracker.MaxObjectBytes),
		Metadata:       exactly(tracker.MaxMetadataBytes),
	})
	_, err := tr.Progress(ctx, tracker.ProgressInput{
		OrganizationID: "org", ActivityID: a.ID,
		Message: strings.Repeat("m", tracker.MaxProgressMessageBytes), Data: exactly(tracker.MaxProgressDataBytes),
	})
	require.NoError(t, err)
	_, err = tr.Complete(ctx, tracker.CompleteInput{
		OrganizationID: "org", ActivityID: a.ID, Status: store.StatusFailed,
		ErrorMessage: strings.Repeat("e", tracker.MaxErrorMessageBytes), Output: exactly(tracker.MaxObjectBytes),
	})
	require.NoError(t, err)
}

func TestProgressRules(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"})

	clock.Advance(time.Second)
	ev, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: a.ID, Message: "attempt 2 of 3", Data: map[string]any{"attempt": 2.0}})
	require.NoError(t, err)
	require.Equal(t, int64(1), ev.Sequence)
	require.True(t, t0.Add(time.Second).Equal(ev.CreateTime))

	_, err = tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: uuid.NewString(), Message: "m"})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "other-org", ActivityID: a.ID, Message: "m"})
	require.ErrorIs(t, err, store.ErrNotFound)

	_, err = tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: a.ID, Status: store.StatusCompleted})
	require.NoError(t, err)
	_, err = tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: a.ID, Message: "too late"})
	require.ErrorIs(t, err, store.ErrAlreadyEnded)

	_, evs, err := tr.Get(ctx, "org", a.ID)
	require.NoError(t, err)
	require.Len(t, evs, 1)
}

func TestProgressLimit(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	for i := range store.MaxProgressEvents {
		_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: a.ID, Message: fmt.Sprint(i)})
		require.NoError(t, err)
	}
	_, err := tr.Progress(ctx, tracker.ProgressInput{OrganizationID: "org", ActivityID: a.ID, Message: "one more"})
	require.ErrorIs(t, err, store.ErrProgressLimit)
}

func TestCompleteComputesTimesAndMergesMetadata(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Metadata: map[string]any{"account_id": "acc-1", "tier": "build"}})
	clock.Advance(1500 * time.Millisecond)
	done, err := tr.Complete(ctx, tracker.CompleteInput{
		OrganizationID: "org", ActivityID: a.ID, Status: store.StatusCompleted,
		Output:   map[string]any{"text": "hello"},
		Metadata: map[string]any{"account_id": "acc-2", "cost_usd": 0.01},
	})
	require.NoError(t, err)
	require.Equal(t, store.StatusCompleted, done.Status)
	require.True(t, t0.Add(1500*time.Millisecond).Equal(done.CompleteTime))
	require.Equal(t, 1500*time.Millisecond, done.Duration())
	require.Equal(t, map[string]any{"account_id": "acc-2", "tier": "build", "cost_usd": 0.01}, done.Metadata)

	_, err = tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: uuid.NewString(), Status: store.StatusCompleted})
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestCompleteRepeats(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Metadata: map[string]any{"account_id": "acc-1"}})
	first := tracker.CompleteInput{
		OrganizationID: "org", ActivityID: a.ID, Status: store.StatusFailed,
		Output:       map[string]any{"partial": "text", "tokens": 12.0},
		ErrorMessage: "upstream 529",
		Metadata:     map[string]any{"attempts": 3.0},
	}
	ended, err := tr.Complete(ctx, first)
	require.NoError(t, err)
	clock.Advance(time.Minute)

	repeats := map[string]tracker.CompleteInput{
		"identical":                     first,
		"ints equal to stored floats":   withOutput(withMetadata(first, map[string]any{"attempts": 3}), map[string]any{"partial": "text", "tokens": 12}),
		"subset of the stored metadata": withMetadata(first, map[string]any{"account_id": "acc-1"}),
		"no metadata":                   withMetadata(first, nil),
	}
	for name, in := range repeats {
		t.Run("repeat/"+name, func(t *testing.T) {
			got, err := tr.Complete(ctx, in)
			require.NoError(t, err)
			require.Equal(t, ended, got, "the stored activity is returned, times included")
		})
	}

	conflicts := map[string]tracker.CompleteInput{
		"other status":         {OrganizationID: "org", ActivityID: a.ID, Status: store.StatusCompleted, Output: first.Output, Metadata: first.Metadata},
		"other error message":  withError(first, "upstream 500"),
		"other output":         withOutput(first, map[string]any{"partial": "other"}),
		"no output":            withOutput(first, nil),
		"other metadata value": withMetadata(first, map[string]any{"attempts": 2.0}),
		"additional metadata":  withMetadata(first, map[string]any{"attempts": 3.0, "new": true}),
	}
	for name, in := range conflicts {
		t.Run("conflict/"+name, func(t *testing.T) {
			_, err := tr.Complete(ctx, in)
			require.ErrorIs(t, err, tracker.ErrCompletionConflict)
		})
	}

	got, _, err := tr.Get(ctx, "org", a.ID)
	require.NoError(t, err)
	require.Equal(t, ended, got, "no repeat or conflict changed the ended activity")
}

func withMetadata(in tracker.CompleteInput, m map[string]any) tracker.CompleteInput {
	in.Metadata = m
	return in
}

func withOutput(in tracker.CompleteInput, m map[string]any) tracker.CompleteInput {
	in.Output = m
	return in
}

func withError(in tracker.CompleteInput, msg string) tracker.CompleteInput {
	in.ErrorMessage = msg
	return in
}

func listAll(t *testing.T, tr *tracker.Tracker, in tracker.ListInput) (ids []string, pages int) {
	t.Helper()
	seen := map[string]bool{}
	for range 1000 {
		res, err := tr.List(context.Background(), in)
		require.NoError(t, err)
		pages++
		for _, a := range res.Activities {
			require.False(t, seen[a.ID], "activity %s listed twice", a.ID)
			seen[a.ID] = true
			ids = append(ids, a.ID)
		}
		if res.NextPageToken == "" {
			return ids, pages
		}
		in.PageToken = res.NextPageToken
	}
	t.Fatal("pagination did not end")
	return nil, 0
}

func TestListPaginates(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	var want []string
	for i := range 9 {
		if i%3 == 0 {
			clock.Advance(time.Second) // three activities share each start time
		}
		a := start(t, tr, tracker.StartInput{OrganizationID: "org", SessionID: "s"})
		want = append(want, a.ID)
	}
	start(t, tr, tracker.StartInput{OrganizationID: "other-org", SessionID: "s"})

	all, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org"})
	require.NoError(t, err)
	require.Empty(t, all.NextPageToken)
	require.Len(t, all.Activities, 9)
	require.ElementsMatch(t, want, ids(all.Activities))
	require.True(t, all.Activities[0].StartTime.After(all.Activities[8].StartTime), "newest first")

	for _, size := range []int{1, 2, 4, 9} {
		got, pages := listAll(t, tr, tracker.ListInput{OrganizationID: "org", SessionID: "s", PageSize: size})
		require.Equal(t, ids(all.Activities), got, "page size %d", size)
		require.Equal(t, (9+size-1)/size, pages, "a full last page is not followed by an empty one")
	}
}

func TestListPagesAreStableWhileActivitiesAreAdded(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	for range 4 {
		clock.Advance(time.Second)
		start(t, tr, tracker.StartInput{OrganizationID: "org"})
	}
	before, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org"})
	require.NoError(t, err)

	p1, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageSize: 2})
	require.NoError(t, err)
	clock.Advance(time.Second)
	start(t, tr, tracker.StartInput{OrganizationID: "org"}) // newer than every listed one
	p2, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageSize: 2, PageToken: p1.NextPageToken})
	require.NoError(t, err)
	require.Equal(t, ids(before.Activities), append(ids(p1.Activities), ids(p2.Activities)...))
}

func TestListDefaultAndMaximumPageSize(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	for range tracker.DefaultPageSize + 1 {
		start(t, tr, tracker.StartInput{OrganizationID: "org"})
	}
	res, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org"})
	require.NoError(t, err)
	require.Len(t, res.Activities, tracker.DefaultPageSize)
	require.NotEmpty(t, res.NextPageToken)

	res, err = tr.List(ctx, tracker.ListInput{OrganizationID: "org", PageSize: tracker.MaxPageSize})
	require.NoError(t, err)
	require.Len(t, res.Activities, tracker.DefaultPageSize+1)
	require.Empty(t, res.NextPageToken)
}

func TestListPageTokenIsBoundToItsQuery(t *testing.T) {
	ctx := context.Background()
	tr, clock := newTracker()
	for range 3 {
		clock.Advance(time.Second)
		start(t, tr, tracker.StartInput{OrganizationID: "org-a", SessionID: "s"})
		start(t, tr, tracker.StartInput{OrganizationID: "org-b", SessionID: "s"})
	}
	first := tracker.ListInput{OrganizationID: "org-a", SessionID: "s", PageSize: 1}
	res, err := tr.List(ctx, first)
	require.NoError(t, err)
	require.NotEmpty(t, res.NextPageToken)

	for name, in := range map[string]tracker.ListInput{
		"other organization": {OrganizationID: "org-b", SessionID: "s"},
		"other session":      {OrganizationID: "org-a", SessionID: "t"},
		"other status":       {OrganizationID: "org-a", SessionID: "s", Status: store.StatusRunning},
		"other window":       {OrganizationID: "org-a", SessionID: "s", StartFrom: t0},
		"tampered":           {OrganizationID: "org-a", SessionID: "s", PageToken: res.NextPageToken[:len(res.NextPageToken)-2]},
	} {
		t.Run(name, func(t *testing.T) {
			if in.PageToken == "" {
				in.PageToken = res.NextPageToken
			}
			_, err := tr.List(ctx, in)
			requireInvalid(t, err, "page_token")
		})
	}

	// The page size may change between pages.
	next := first
	next.PageSize = 10
	next.PageToken = res.NextPageToken
	rest, err := tr.List(ctx, next)
	require.NoError(t, err)
	require.Len(t, rest.Activities, 2)
}

func TestListStopsEarlyForLargeActivities(t *testing.T) {
	tr, clock := newTracker()
	const n = 5
	for range n {
		clock.Advance(time.Second)
		start(t, tr, tracker.StartInput{OrganizationID: "org", Input: map[string]any{"blob": strings.Repeat("x", 900<<10)}})
	}
	got, pages := listAll(t, tr, tracker.ListInput{OrganizationID: "org"})
	require.Len(t, got, n, "no activity is skipped")
	require.Greater(t, pages, 1, "about 4.5 MiB of activities do not fit in one page")
}

func TestListFiltersByTimeWindowToTheMicrosecond(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"}) // starts at t0
	count := func(from, to time.Time) int {
		res, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", StartFrom: from, StartTo: to})
		require.NoError(t, err)
		return len(res.Activities)
	}
	require.Equal(t, 1, count(a.StartTime, time.Time{}), "from is inclusive")
	require.Equal(t, 1, count(a.StartTime.Add(-time.Nanosecond), time.Time{}))
	require.Equal(t, 0, count(a.StartTime.Add(time.Nanosecond), time.Time{}))
	require.Equal(t, 0, count(time.Time{}, a.StartTime), "to is exclusive")
	require.Equal(t, 1, count(time.Time{}, a.StartTime.Add(time.Nanosecond)))
	require.Equal(t, 1, count(a.StartTime, a.StartTime.Add(time.Nanosecond)))
}

func TestListFiltersByStatusAndSession(t *testing.T) {
	ctx := context.Background()
	tr, _ := newTracker()
	run := start(t, tr, tracker.StartInput{OrganizationID: "org", SessionID: "s1"})
	done := start(t, tr, tracker.StartInput{OrganizationID: "org", SessionID: "s2"})
	_, err := tr.Complete(ctx, tracker.CompleteInput{OrganizationID: "org", ActivityID: done.ID, Status: store.StatusCompleted})
	require.NoError(t, err)

	res, err := tr.List(ctx, tracker.ListInput{OrganizationID: "org", Status: store.StatusRunning})
	require.NoError(t, err)
	require.Equal(t, []string{run.ID}, ids(res.Activities))
	res, err = tr.List(ctx, tracker.ListInput{OrganizationID: "org", SessionID: "s2"})
	require.NoError(t, err)
	require.Equal(t, []string{done.ID}, ids(res.Activities))
}

func ids(as []store.Activity) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.ID
	}
	return out
}
