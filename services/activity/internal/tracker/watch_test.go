package tracker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// noPoll is a poll interval no test outlives: a watch then hears only of
// its own tracker's writes, through the hub.
const noPoll = time.Hour

// watching is a Watch running in the background.
type watching struct {
	events  chan tracker.WatchEvent
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
	err     error
}

// startWatch runs tr.Watch(in) until the test ends or stop is called;
// its events arrive on w.events, one at a time, as a client takes them.
func startWatch(t *testing.T, tr *tracker.Tracker, in tracker.WatchInput) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{events: make(chan tracker.WatchEvent), cancel: cancel, done: make(chan error, 1)}
	go func() {
		w.done <- tr.Watch(ctx, in, func(ev tracker.WatchEvent) error {
			select {
			case w.events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { _ = w.stop() })
	return w
}

// stop cancels the watch and returns what Watch returned.
func (w *watching) stop() error {
	w.stopped.Do(func() {
		w.cancel()
		w.err = <-w.done
	})
	return w.err
}

// next is the watch's next event. The timeout only keeps a broken watch
// from hanging the test; nothing depends on how fast events come.
func (w *watching) next(t *testing.T) tracker.WatchEvent {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.done:
		w.done <- err // for stop
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return tracker.WatchEvent{}
}

// nextChange is the next event, which must be a change of activity id in
// status st.
func (w *watching) nextChange(t *testing.T, id string, st store.Status) tracker.WatchEvent {
	t.Helper()
	ev := w.next(t)
	require.False(t, ev.CaughtUp)
	require.NotNil(t, ev.Change)
	require.NotEmpty(t, ev.Cursor)
	require.Equal(t, id, ev.Change.Activity.ID)
	require.Equal(t, st, ev.Change.Activity.Status)
	return ev
}

// caughtUp is the next event, which must be the caught-up one; it returns
// its cursor.
func (w *watching) caughtUp(t *testing.T) string {
	t.Helper()
	ev := w.next(t)
	require.True(t, ev.CaughtUp, "want the caught-up event, got a change of %v", ev.Change)
	require.Nil(t, ev.Change)
	require.NotEmpty(t, ev.Cursor)
	return ev.Cursor
}

func newWatchTracker(s store.Store, poll time.Duration) (*tracker.Tracker, *fakeclock.Clock) {
	clock := fakeclock.New(t0)
	return tracker.New(s, tracker.Config{Now: clock.Now, WatchPoll: poll}), clock
}

func progress(t *testing.T, tr *tracker.Tracker, org, id, msg string) store.ProgressEvent {
	t.Helper()
	ev, err := tr.Progress(context.Background(), tracker.ProgressInput{OrganizationID: org, ActivityID: id, Message: msg})
	require.NoError(t, err)
	return ev
}

func complete(t *testing.T, tr *tracker.Tracker, org, id string) store.Activity {
	t.Helper()
	a, err := tr.Complete(context.Background(), tracker.CompleteInput{OrganizationID: org, ActivityID: id, Status: store.StatusCompleted})
	require.NoError(t, err)
	return a
}

func TestWatchSendsTheBacklogThenCatchesUpThenGoesLive(t *testing.T) {
	tr, clock := newWatchTracker(memstore.New(), noPoll)
	var ids []string
	for i := range 3 {
		ids = append(ids, start(t, tr, tracker.StartInput{OrganizationID: "org", SessionID: fmt.Sprint(i)}).ID)
		clock.Advance(time.Second)
	}
	start(t, tr, tracker.StartInput{OrganizationID: "other"})

	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org", Backlog: 2})
	w.nextChange(t, ids[1], store.StatusRunning)
	w.nextChange(t, ids[2], store.StatusRunning)
	w.caughtUp(t)

	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Input: map[string]any{"prompt": "hi"}})
	c := w.nextChange(t, a.ID, store.StatusRunning).Change
	require.Equal(t, a.Input, c.Activity.Input)
	require.Nil(t, c.LatestProgress)
	ev := progress(t, tr, "org", a.ID, "step 1")
	c = w.nextChange(t, a.ID, store.StatusRunning).Change
	require.Equal(t, &ev, c.LatestProgress)
	done := complete(t, tr, "org", a.ID)
	c = w.nextChange(t, a.ID, store.StatusCompleted).Change
	require.Equal(t, done.CompleteTime, c.Activity.CompleteTime)
	require.Equal(t, &ev, c.LatestProgress, "the latest event stays with the activity")

	start(t, tr, tracker.StartInput{OrganizationID: "other"})
	require.ErrorIs(t, w.stop(), context.Canceled)
	select {
	case ev := <-w.events:
		t.Fatalf("another organization's change reached the watch: %+v", ev)
	default:
	}
}

func TestWatchWithoutBacklogStartsAtTheLatestChange(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	start(t, tr, tracker.StartInput{OrganizationID: "org"})
	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org"})
	w.caughtUp(t)
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	w.nextChange(t, a.ID, store.StatusRunning)
}

func TestWatchOfAnEmptyOrganization(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org", Backlog: tracker.MaxWatchBacklog})
	w.caughtUp(t)
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	w.nextChange(t, a.ID, store.StatusRunning)
}

// A client that resumes with the last cursor it processed gets every
// activity changed while it was away, once, in its latest state, in the
// order of the activities' latest changes, and nothing else.
func TestWatchResumesFromACursorMissingNothing(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	b := start(t, tr, tracker.StartInput{OrganizationID: "org"})
	start(t, tr, tracker.StartInput{OrganizationID: "org"}) // never changes again

	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org"})
	w.caughtUp(t)
	progress(t, tr, "org", a.ID, "seen live")
	cursor := w.nextChange(t, a.ID, store.StatusRunning).Cursor
	require.ErrorIs(t, w.stop(), context.Canceled)

	progress(t, tr, "org", a.ID, "while away 1")
	away := progress(t, tr, "org", a.ID, "while away 2")
	complete(t, tr, "org", b.ID)
	c := start(t, tr, tracker.StartInput{OrganizationID: "org"})

	r := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org", Cursor: cursor, Backlog: 7})
	got := r.nextChange(t, a.ID, store.StatusRunning)
	require.Equal(t, &away, got.Change.LatestProgress, "coalesced into the latest state")
	r.nextChange(t, b.ID, store.StatusCompleted)
	r.nextChange(t, c.ID, store.StatusRunning)
	upTo := r.caughtUp(t)
	require.ErrorIs(t, r.stop(), context.Canceled)

	// From the caught-up cursor there is nothing new.
	again := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org", Cursor: upTo})
	require.Equal(t, upTo, again.caughtUp(t))
}

func TestWatchRejectsWhatItCannotResumeFrom(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org-a"})
	cursorA := w.caughtUp(t)
	require.ErrorIs(t, w.stop(), context.Canceled)

	send := func(tracker.WatchEvent) error { return errors.New("nothing is sent") }
	for _, tc := range []struct {
		name  string
		in    tracker.WatchInput
		field string
	}{
		{"no organization", tracker.WatchInput{}, "organization_id"},
		{"garbage cursor", tracker.WatchInput{OrganizationID: "org-a", Cursor: "not-a-cursor!"}, "cursor"},
		{"page token for a cursor", tracker.WatchInput{OrganizationID: "org-a", Cursor: "eyJ2IjoxLCJ0IjoxLCJpZCI6IngiLCJmIjoieSJ9"}, "cursor"},
		{"oversized cursor", tracker.WatchInput{OrganizationID: "org-a", Cursor: cursorA + string(make([]byte, 300))}, "cursor"},
		{"another organization's cursor", tracker.WatchInput{OrganizationID: "org-b", Cursor: cursorA}, "cursor"},
		{"negative backlog", tracker.WatchInput{OrganizationID: "org-a", Backlog: -1}, "backlog"},
		{"backlog too large", tracker.WatchInput{OrganizationID: "org-a", Backlog: tracker.MaxWatchBacklog + 1}, "backlog"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireInvalid(t, tr.Watch(context.Background(), tc.in, send), tc.field)
		})
	}
}

// A watch far behind reads the feed in pages and sends everything in
// order.
func TestWatchPagesThroughALongCatchUp(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org"})
	cursor := w.caughtUp(t)
	require.ErrorIs(t, w.stop(), context.Canceled)
	var ids []string
	for range 250 {
		ids = append(ids, start(t, tr, tracker.StartInput{OrganizationID: "org"}).ID)
	}
	r := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org", Cursor: cursor})
	for _, id := range ids {
		r.nextChange(t, id, store.StatusRunning)
	}
	r.caughtUp(t)
}

// Writes made through another tracker on the same store (another replica
// on the same database) reach the watch by its poll.
func TestWatchPollsForOtherReplicasWrites(t *testing.T) {
	s := memstore.New()
	watched, _ := newWatchTracker(s, 5*time.Millisecond)
	other, _ := newWatchTracker(s, noPoll)
	w := startWatch(t, watched, tracker.WatchInput{OrganizationID: "org"})
	w.caughtUp(t)
	a := start(t, other, tracker.StartInput{OrganizationID: "org"})
	w.nextChange(t, a.ID, store.StatusRunning)
	progress(t, other, "org", a.ID, "elsewhere")
	w.nextChange(t, a.ID, store.StatusRunning)
}

// The reaper's abandonments wake the watches of every organization.
func TestWatchSeesAbandonment(t *testing.T) {
	tr, clock := newWatchTracker(memstore.New(), noPoll)
	a := start(t, tr, tracker.StartInput{OrganizationID: "org", Deadline: t0.Add(time.Minute)})
	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org"})
	w.caughtUp(t)
	clock.Advance(time.Hour)
	n, err := tr.AbandonExpired(context.Background(), time.Second, 0)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	w.nextChange(t, a.ID, store.StatusAbandoned)
}

// A client that takes no events holds up nobody: every write returns
// while its watch is stuck in a send, and once the client reads again it
// gets the latest state.
func TestSlowWatchDoesNotBlockWriters(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	w := startWatch(t, tr, tracker.WatchInput{OrganizationID: "org"})
	w.caughtUp(t)
	a := start(t, tr, tracker.StartInput{OrganizationID: "org"}) // the watch is now stuck sending it
	for i := range 100 {
		progress(t, tr, "org", a.ID, fmt.Sprintf("step %d", i+1))
	}
	complete(t, tr, "org", a.ID)

	var last tracker.WatchEvent
	for last.Change == nil || last.Change.Activity.Status != store.StatusCompleted {
		last = w.next(t)
		require.Equal(t, a.ID, last.Change.Activity.ID)
	}
	require.Equal(t, int64(100), last.Change.LatestProgress.Sequence)
}

// Watch returns send's error as it is, so that the caller can tell its
// own failure from the store's.
func TestWatchReturnsTheSendError(t *testing.T) {
	tr, _ := newWatchTracker(memstore.New(), noPoll)
	gone := errors.New("client gone")
	err := tr.Watch(context.Background(), tracker.WatchInput{OrganizationID: "org"}, func(tracker.WatchEvent) error { return gone })
	require.ErrorIs(t, err, gone)
}

// A cursor from a store that was since reset (a restarted embedded
// store) is ahead of the feed: resuming from it would silently skip every
// change until the feed caught up, so it is refused and the client
// starts over.
func TestWatchRejectsACursorAheadOfTheFeed(t *testing.T) {
	old, _ := newWatchTracker(memstore.New(), noPoll)
	a := start(t, old, tracker.StartInput{OrganizationID: "org"})
	b := start(t, old, tracker.StartInput{OrganizationID: "org"})
	w := startWatch(t, old, tracker.WatchInput{OrganizationID: "org", Backlog: 2})
	w.nextChange(t, a.ID, store.StatusRunning)
	w.nextChange(t, b.ID, store.StatusRunning)
	cursor := w.caughtUp(t)
	require.ErrorIs(t, w.stop(), context.Canceled)

	reset, _ := newWatchTracker(memstore.New(), noPoll)
	start(t, reset, tracker.StartInput{OrganizationID: "org"})
	send := func(tracker.WatchEvent) error { return errors.New("nothing is sent") }
	requireInvalid(t, reset.Watch(context.Background(), tracker.WatchInput{OrganizationID: "org", Cursor: cursor}, send), "cursor")

	// On the store that issued it, the same cursor resumes.
	again := startWatch(t, old, tracker.WatchInput{OrganizationID: "org", Cursor: cursor})
	require.Equal(t, cursor, again.caughtUp(t))
}
