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

// changeTests cover the change feed: ChangesSince and RecentChangesStart.
// They run in parallel with the other subtests.
var changeTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"EveryChangeTakesANewNumber", testEveryChangeTakesANewNumber},
	{"WritesThatChangeNothingTakeNoNumber", testWritesThatChangeNothingTakeNoNumber},
	{"ChangesAreCoalescedInOrderOfTheLatest", testChangesAreCoalesced},
	{"ChangesPageWithoutGapsOrDuplicates", testChangesPage},
	{"ChangesStopAtMaxBytes", testChangesStopAtMaxBytes},
	{"RecentChangesStart", testRecentChangesStart},
	{"ChangeFeedsAreIsolated", testChangeFeedsAreIsolated},
	{"ConcurrentWritersMissNoChange", testConcurrentWritersMissNoChange},
	{"ChangeReadsWithCancelledContextFail", testChangeReadsCancelled},
}

// changesSince reads every change after after, in pages of limit.
func changesSince(t *testing.T, s store.Store, org string, after int64, limit int) []store.Change {
	t.Helper()
	var all []store.Change
	for {
		page, more, err := s.ChangesSince(context.Background(), org, store.ChangeQuery{After: after, Limit: limit})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), limit)
		require.False(t, more && len(page) == 0, "more is reported only after a non-empty page")
		for _, c := range page {
			require.Greater(t, c.Seq, after, "ascending, after the cursor")
			after = c.Seq
		}
		all = append(all, page...)
		if !more {
			return all
		}
	}
}

func highWater(t *testing.T, s store.Store, org string) int64 {
	t.Helper()
	hw, err := s.RecentChangesStart(context.Background(), org, 0)
	require.NoError(t, err)
	return hw
}

func changeIDs(cs []store.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Activity.ID
	}
	return out
}

// onlyChange reads the changes after after and requires exactly one: of
// the activity want, in want's state, with latest as its latest event.
func onlyChange(t *testing.T, s store.Store, org string, after int64, want store.Activity, latest *store.ProgressEvent) store.Change {
	t.Helper()
	cs := changesSince(t, s, org, after, 10)
	require.Len(t, cs, 1)
	requireActivity(t, want, cs[0].Activity)
	if latest == nil {
		require.Nil(t, cs[0].LatestProgress)
	} else {
		require.NotNil(t, cs[0].LatestProgress)
		requireEvent(t, *latest, *cs[0].LatestProgress)
	}
	require.Equal(t, cs[0].Seq, highWater(t, s, org), "the latest change is the high-water mark")
	return cs[0]
}

func testEveryChangeTakesANewNumber(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	require.Zero(t, highWater(t, s, org), "no activities, no changes")
	require.Empty(t, changesSince(t, s, org, 0, 10))

	na := newActivity(base)
	a := create(t, s, org, na)
	started := onlyChange(t, s, org, 0, a, nil)
	require.Positive(t, started.Seq)

	ev, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "step 1", Data: map[string]any{"n": float64(1)}, CreateTime: base.Add(time.Second)})
	require.NoError(t, err)
	first := onlyChange(t, s, org, started.Seq, a, &ev)
	require.Greater(t, first.Seq, started.Seq)
	require.Empty(t, changesSince(t, s, org, first.Seq, 10))

	ev2, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "step 2", CreateTime: base.Add(2 * time.Second)})
	require.NoError(t, err)
	second := onlyChange(t, s, org, first.Seq, a, &ev2)
	require.Greater(t, second.Seq, first.Seq)

	done, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{
		Status: store.StatusCompleted, Output: map[string]any{"text": "hi"}, Metadata: map[string]any{"cost": 0.5}, CompleteTime: base.Add(3 * time.Second),
	})
	require.NoError(t, err)
	ended := onlyChange(t, s, org, second.Seq, done, &ev2)
	require.Greater(t, ended.Seq, second.Seq)

	// From the start, the activity appears once, as it is now.
	all := changesSince(t, s, org, 0, 10)
	require.Len(t, all, 1)
	require.Equal(t, ended.Seq, all[0].Seq)
	requireActivity(t, done, all[0].Activity)
}

func testWritesThatChangeNothingTakeNoNumber(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	na := newActivity(base)
	create(t, s, org, na)
	done, err := s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusFailed, ErrorMessage: "boom", CompleteTime: base})
	require.NoError(t, err)
	hw := highWater(t, s, org)

	_, created, err := s.CreateActivity(ctx, org, na)
	require.NoError(t, err)
	require.False(t, created)
	_, err = s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "late", CreateTime: base})
	require.ErrorIs(t, err, store.ErrAlreadyEnded)
	_, err = s.CompleteActivity(ctx, org, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base})
	require.ErrorIs(t, err, store.ErrAlreadyEnded)
	_, err = s.AppendProgress(ctx, org, uuid.NewString(), store.NewProgressEvent{Message: "nobody", CreateTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)

	require.Equal(t, hw, highWater(t, s, org))
	require.Empty(t, changesSince(t, s, org, hw, 10))
	all := changesSince(t, s, org, 0, 10)
	require.Len(t, all, 1)
	requireActivity(t, done, all[0].Activity)
}

func testChangesAreCoalesced(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	var as []store.NewActivity
	for i := range 3 {
		na := newActivity(base.Add(time.Duration(i) * time.Second))
		create(t, s, org, na)
		as = append(as, na)
	}
	require.Equal(t, []string{as[0].ID, as[1].ID, as[2].ID}, changeIDs(changesSince(t, s, org, 0, 10)))

	for i := 1; i <= 3; i++ {
		_, err := s.AppendProgress(ctx, org, as[0].ID, store.NewProgressEvent{Message: fmt.Sprintf("step %d", i), CreateTime: base})
		require.NoError(t, err)
	}
	all := changesSince(t, s, org, 0, 10)
	require.Equal(t, []string{as[1].ID, as[2].ID, as[0].ID}, changeIDs(all), "in the order of each one's latest change")
	require.NotNil(t, all[2].LatestProgress)
	require.Equal(t, int64(3), all[2].LatestProgress.Sequence)
	require.Equal(t, "step 3", all[2].LatestProgress.Message)
	require.Nil(t, all[0].LatestProgress)
}

func testChangesPage(t *testing.T, s store.Store) {
	org := newOrg()
	var want []string
	for i := range 7 {
		na := newActivity(base.Add(time.Duration(i) * time.Second))
		create(t, s, org, na)
		want = append(want, na.ID)
	}
	for _, limit := range []int{1, 2, 3, 7, 8} {
		require.Equal(t, want, changeIDs(changesSince(t, s, org, 0, limit)), "limit %d", limit)
	}
	page, more, err := s.ChangesSince(context.Background(), org, store.ChangeQuery{Limit: 7})
	require.NoError(t, err)
	require.Len(t, page, 7)
	require.False(t, more, "nothing follows the last change")
}

func testChangesStopAtMaxBytes(t *testing.T, s store.Store) {
	org := newOrg()
	// Each activity weighs a little over 10,000 bytes; the budgets leave
	// wide margins around multiples of it (see testListStopsAtMaxBytes).
	const blob = 10_000
	var want []string
	for i := range 5 {
		na := newActivity(base.Add(time.Duration(i) * time.Second))
		na.Input = map[string]any{"blob": strings.Repeat("x", blob)}
		na.Metadata = nil
		create(t, s, org, na)
		want = append(want, na.ID)
	}
	for _, tc := range []struct {
		maxBytes, want int
		more           bool
	}{
		{0, 5, false},
		{1, 1, true},
		{blob + blob/2, 1, true},
		{2*blob + blob/2, 2, true},
		{10 * blob, 5, false},
	} {
		page, more, err := s.ChangesSince(context.Background(), org, store.ChangeQuery{Limit: 10, MaxBytes: tc.maxBytes})
		require.NoError(t, err)
		require.Equal(t, want[:tc.want], changeIDs(page), "max bytes %d", tc.maxBytes)
		require.Equal(t, tc.more, more, "max bytes %d", tc.maxBytes)
	}
}

func testRecentChangesStart(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	var as []store.NewActivity
	for i := range 4 {
		na := newActivity(base.Add(time.Duration(i) * time.Second))
		create(t, s, org, na)
		as = append(as, na)
	}
	_, err := s.AppendProgress(ctx, org, as[0].ID, store.NewProgressEvent{Message: "m", CreateTime: base})
	require.NoError(t, err)
	order := []string{as[1].ID, as[2].ID, as[3].ID, as[0].ID} // by latest change
	all := changesSince(t, s, org, 0, 10)
	require.Equal(t, order, changeIDs(all))

	for n := range 6 {
		after, err := s.RecentChangesStart(ctx, org, n)
		require.NoError(t, err)
		if n >= len(order) {
			require.Zero(t, after, "n = %d covers every activity", n)
		}
		require.Equal(t, order[len(order)-min(n, len(order)):], changeIDs(changesSince(t, s, org, after, 10)), "n = %d", n)
	}
	require.Equal(t, all[len(all)-1].Seq, highWater(t, s, org))

	after, err := s.RecentChangesStart(ctx, newOrg(), 3)
	require.NoError(t, err)
	require.Zero(t, after)
}

func testChangeFeedsAreIsolated(t *testing.T, s store.Store) {
	ctx := context.Background()
	orgA, orgB := newOrg(), newOrg()
	na := newActivity(base)
	a := create(t, s, orgA, na)
	hwA := highWater(t, s, orgA)
	b := create(t, s, orgB, na) // the same id, another organization's activity
	_, err := s.AppendProgress(ctx, orgB, na.ID, store.NewProgressEvent{Message: "b's", CreateTime: base})
	require.NoError(t, err)

	require.Equal(t, hwA, highWater(t, s, orgA), "B's changes are not A's")
	onlyChange(t, s, orgA, 0, a, nil)
	cs := changesSince(t, s, orgB, 0, 10)
	require.Len(t, cs, 1)
	requireActivity(t, b, cs[0].Activity)
	require.Equal(t, "b's", cs[0].LatestProgress.Message)
	require.Empty(t, changesSince(t, s, newOrg(), 0, 10))
}

// testConcurrentWritersMissNoChange: writers change one organization's
// activities concurrently while a reader follows the feed with its
// cursor, as a watch does. Once the writers are done and the reader has
// caught up, it must have seen every activity in its final state: a
// change that became visible after a later-numbered one (a cursor that
// skipped a row committing late with a smaller number) would leave it
// with an older state or none. The writers use several activities each
// and other organizations too, so that on a group-committing backend
// batches span several organizations and writers.
func testConcurrentWritersMissNoChange(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := newOrg()
	others := []string{newOrg(), newOrg(), newOrg()}
	const writers, perWriter = 8, 12

	seen := map[string]store.Change{}
	var after int64
	follow := func() {
		for {
			page, more, err := s.ChangesSince(ctx, org, store.ChangeQuery{After: after, Limit: 7})
			require.NoError(t, err)
			for _, c := range page {
				require.Greater(t, c.Seq, after)
				after = c.Seq
				seen[c.Activity.ID] = c
			}
			if !more {
				return
			}
		}
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				for _, o := range append([]string{org}, others[(w+i)%len(others)]) {
					na := newActivity(base.Add(time.Duration(i) * time.Millisecond))
					na.Metadata = nil
					if _, _, err := s.CreateActivity(ctx, o, na); err != nil {
						t.Error(err)
						return
					}
					if _, err := s.AppendProgress(ctx, o, na.ID, store.NewProgressEvent{Message: "working", CreateTime: base}); err != nil {
						t.Error(err)
						return
					}
					if i%2 == 0 {
						if _, err := s.CompleteActivity(ctx, o, na.ID, store.Completion{Status: store.StatusCompleted, CompleteTime: base}); err != nil {
							t.Error(err)
							return
						}
					}
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	for following := true; following; {
		select {
		case <-done:
			following = false
		default:
		}
		follow()
	}
	follow()

	final := changesSince(t, s, org, 0, 50)
	require.Len(t, final, writers*perWriter)
	for _, c := range final {
		got, ok := seen[c.Activity.ID]
		require.True(t, ok, "the reader never saw activity %s (seq %d)", c.Activity.ID, c.Seq)
		require.Equal(t, c.Seq, got.Seq, "the reader missed the latest change of activity %s", c.Activity.ID)
		require.Equal(t, c.Activity.Status, got.Activity.Status)
	}
	require.Len(t, seen, writers*perWriter, "nothing of other organizations")
}

func testChangeReadsCancelled(t *testing.T, s store.Store) {
	org := newOrg()
	create(t, s, org, newActivity(base))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.ChangesSince(ctx, org, store.ChangeQuery{Limit: 10})
	require.Error(t, err)
	_, err = s.RecentChangesStart(ctx, org, 0)
	require.Error(t, err)
}
