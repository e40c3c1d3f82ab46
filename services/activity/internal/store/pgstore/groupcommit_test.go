package pgstore

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// fixture is a store on a fresh schema plus an owner pool that sees every
// organization's rows (the tests' owner is a superuser, which row-level
// security does not bind): the observer that checks what was committed.
type fixture struct {
	t     testing.TB
	store *Store
	pool  *pgxpool.Pool
	owner *pgxpool.Pool
}

func newFixture(t testing.TB, maxConns int, opts ...Option) *fixture {
	t.Helper()
	schema := pgtest.NewSchema(t, migrations.Activity)
	pool := dial(t, withConns(t, schema.AppURL, maxConns))
	// One writer, so that holdWriter parks every write.
	s := New(pool, append([]Option{WithWriters(1)}, opts...)...)
	t.Cleanup(s.Close) // before the pool closes: cleanups run last first
	return &fixture{t: t, store: s, pool: pool, owner: dial(t, schema.OwnerURL)}
}

// appName names the fixtures' connections in pg_stat_activity.
const appName = "activity-pgstore-groupcommit-test"

func dial(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxutil.Connect(context.Background(), url, appName)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

func withConns(t testing.TB, rawURL string, n int) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("pool_max_conns", fmt.Sprint(n))
	u.RawQuery = q.Encode()
	return u.String()
}

var at = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

func newActivity() store.NewActivity {
	return store.NewActivity{ID: uuid.NewString(), SessionID: "s", UserID: "u", AgentType: "ai_executor",
		Input: map[string]any{"prompt": "hi"}, StartTime: at}
}

func completion(text string) store.Completion {
	return store.Completion{Status: store.StatusCompleted, Output: map[string]any{"text": text}, CompleteTime: at.Add(time.Second)}
}

func (f *fixture) create(org string, na store.NewActivity) store.Activity {
	f.t.Helper()
	a, created, err := f.store.CreateActivity(context.Background(), org, na)
	require.NoError(f.t, err)
	require.True(f.t, created)
	return a
}

// committed reads an activity as another session sees it: its status and
// user, or ok false when there is none.
func (f *fixture) committed(org, id string) (status store.Status, user string, events int, ok bool) {
	f.t.Helper()
	err := f.owner.QueryRow(context.Background(),
		`SELECT status, user_id, (SELECT count(*) FROM progress_events WHERE organization_id = $1 AND activity_id = $2)
		FROM activities WHERE organization_id = $1 AND id = $2`, org, id).Scan(&status, &user, &events)
	if err == pgx.ErrNoRows {
		return "", "", 0, false
	}
	require.NoError(f.t, err)
	return status, user, events, true
}

// queued is how many writes wait for the (single) writer.
func (f *fixture) queued() int { return len(f.store.writes.queues[0]) }

// holdWriter parks the writer: an owner transaction left open locks a
// fresh activity of org, and a completion of it, handed to the store,
// waits for that lock. It returns once the writer's statement waits.
// release ends the owner transaction and returns the held completion's
// error.
func (f *fixture) holdWriter(org string) (release func() error) {
	f.t.Helper()
	ctx := context.Background()
	held := newActivity()
	f.create(org, held)
	tx, err := f.owner.Begin(ctx)
	require.NoError(f.t, err)
	var pid int
	require.NoError(f.t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = tx.Exec(ctx, `SELECT 1 FROM activities WHERE organization_id = $1 AND id = $2 FOR UPDATE`, org, held.ID)
	require.NoError(f.t, err)

	done := make(chan error, 1)
	go func() {
		_, err := f.store.CompleteActivity(ctx, org, held.ID, completion("held"))
		done <- err
	}()
	f.waitBlockedBy(pid)
	return func() error {
		select {
		case err := <-done:
			f.t.Fatalf("the held write was answered before its transaction could commit: %v", err)
		default:
		}
		require.NoError(f.t, tx.Rollback(ctx))
		return <-done
	}
}

// waitBlockedBy waits until a session waits for a lock the backend pid
// holds.
func (f *fixture) waitBlockedBy(pid int) {
	f.t.Helper()
	require.Eventually(f.t, func() bool {
		var waiting int
		err := f.owner.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting)
		return err == nil && waiting == 1
	}, 10*time.Second, 5*time.Millisecond, "a write waits for the owner's lock")
}

// inOrder starts each call in its own goroutine once the previous one is
// queued, so that they queue in the order given, and returns a function
// that waits for all of them.
func (f *fixture) inOrder(calls ...func()) (wait func()) {
	f.t.Helper()
	var wg sync.WaitGroup
	base := f.queued()
	for i, call := range calls {
		wg.Go(call)
		require.Eventually(f.t, func() bool { return f.queued() == base+i+1 }, 10*time.Second, time.Millisecond)
	}
	return wg.Wait
}

// TestGroupCommitIsolatesAFailingWrite: a write the database refuses fails
// alone, with its own error; the writes that happened to share its batch,
// of several organizations and all three kinds, get their results.
func TestGroupCommitIsolatesAFailingWrite(t *testing.T) {
	f := newFixture(t, 4)
	ctx := context.Background()
	orgA, orgB := "org-a-"+uuid.NewString(), "org-b-"+uuid.NewString()
	toEnd, toAppend := newActivity(), newActivity()
	f.create(orgA, toEnd)
	f.create(orgB, toAppend)
	release := f.holdWriter(orgA)
	fallbacksBefore := f.store.writes.fallbacks.Load()

	bad := newActivity()
	bad.SessionID = "nul\x00byte" // PostgreSQL text cannot hold NUL
	goods := []store.NewActivity{newActivity(), newActivity(), newActivity(), newActivity()}
	// Not a UUID: the store trusts its caller to send one, and the server
	// refuses it.
	badID := newActivity()
	badID.ID = "not-a-uuid"
	var (
		badErr, badIDErr, endErr, appendErr error
		goodErrs                            = make([]error, len(goods))
		ended                               store.Activity
		event                               store.ProgressEvent
	)
	calls := []func(){
		func() { _, _, badErr = f.store.CreateActivity(ctx, orgA, bad) },
		func() { _, _, badIDErr = f.store.CreateActivity(ctx, orgB, badID) },
		func() { ended, endErr = f.store.CompleteActivity(ctx, orgA, toEnd.ID, completion("done")) },
		func() {
			event, appendErr = f.store.AppendProgress(ctx, orgB, toAppend.ID, store.NewProgressEvent{Message: "m", CreateTime: at})
		},
	}
	for i, na := range goods {
		org := []string{orgA, orgB}[i%2]
		calls = append(calls, func() {
			var created bool
			_, created, goodErrs[i] = f.store.CreateActivity(ctx, org, na)
			if goodErrs[i] == nil && !created {
				goodErrs[i] = fmt.Errorf("not created")
			}
		})
	}
	wait := f.inOrder(calls...)
	require.NoError(t, release())
	wait()

	require.Error(t, badErr)
	require.NotErrorIs(t, badErr, store.ErrUnavailable, "a rejected write is not an outage")
	require.Contains(t, badErr.Error(), "creating activity")
	_, _, _, ok := f.committed(orgA, bad.ID)
	require.False(t, ok)
	require.Error(t, badIDErr)
	require.NotErrorIs(t, badIDErr, store.ErrUnavailable)

	require.NoError(t, endErr)
	require.Equal(t, store.StatusCompleted, ended.Status)
	require.Equal(t, map[string]any{"text": "done"}, ended.Output)
	status, _, _, _ := f.committed(orgA, toEnd.ID)
	require.Equal(t, store.StatusCompleted, status)

	require.NoError(t, appendErr)
	require.Equal(t, int64(1), event.Sequence)
	_, _, events, _ := f.committed(orgB, toAppend.ID)
	require.Equal(t, 1, events)

	for i, na := range goods {
		require.NoError(t, goodErrs[i])
		_, _, _, ok := f.committed([]string{orgA, orgB}[i%2], na.ID)
		require.True(t, ok)
	}
	require.Equal(t, fallbacksBefore+1, f.store.writes.fallbacks.Load(), "the batch was retried one write at a time, once")
}

// TestGroupCommitKeepsQueueOrder: writes of one activity in one batch
// behave as if they ran one after another in queue order, whatever other
// activities' writes sort between them.
func TestGroupCommitKeepsQueueOrder(t *testing.T) {
	f := newFixture(t, 4)
	ctx := context.Background()
	org := "org-" + uuid.NewString()
	release := f.holdWriter(org)
	flushesBefore := f.store.writes.flushes.Load()

	x, other := newActivity(), newActivity()
	x.UserID = "first"
	again := x
	again.UserID = "second"
	var (
		created, createdAgain  bool
		stored, storedAgain    store.Activity
		createErr, againErr    error
		ev1, ev2               store.ProgressEvent
		ev1Err, ev2Err, ev3Err error
		win, lose              store.Activity
		winErr, loseErr        error
		otherErr               error
	)
	wait := f.inOrder(
		func() { _, _, otherErr = f.store.CreateActivity(ctx, org, other) },
		func() {
			ev1, ev1Err = f.store.AppendProgress(ctx, org, x.ID, store.NewProgressEvent{Message: "before", CreateTime: at})
		},
		func() { stored, created, createErr = f.store.CreateActivity(ctx, org, x) },
		func() { storedAgain, createdAgain, againErr = f.store.CreateActivity(ctx, org, again) },
		func() {
			ev2, ev2Err = f.store.AppendProgress(ctx, org, x.ID, store.NewProgressEvent{Message: "during", CreateTime: at})
		},
		func() { win, winErr = f.store.CompleteActivity(ctx, org, x.ID, completion("winner")) },
		func() { lose, loseErr = f.store.CompleteActivity(ctx, org, x.ID, completion("loser")) },
		func() {
			_, ev3Err = f.store.AppendProgress(ctx, org, x.ID, store.NewProgressEvent{Message: "after", CreateTime: at})
		},
	)
	require.NoError(t, release())
	wait()
	require.Equal(t, flushesBefore+2, f.store.writes.flushes.Load(), "the held write's batch, then one batch for all the rest")
	require.Zero(t, f.store.writes.fallbacks.Load())

	require.NoError(t, otherErr)
	require.ErrorIs(t, ev1Err, store.ErrNotFound, "an append queued before the create finds nothing")
	require.NoError(t, createErr)
	require.True(t, created)
	require.Equal(t, "first", stored.UserID)
	require.NoError(t, againErr)
	require.False(t, createdAgain, "the second create of the id follows the first")
	require.Equal(t, "first", storedAgain.UserID)
	require.NoError(t, ev2Err)
	require.Equal(t, int64(1), ev2.Sequence)
	require.Zero(t, ev1.Sequence)
	require.NoError(t, winErr)
	require.Equal(t, map[string]any{"text": "winner"}, win.Output)
	require.ErrorIs(t, loseErr, store.ErrAlreadyEnded)
	require.Equal(t, win, lose, "the losing completion gets the winner's row")
	require.ErrorIs(t, ev3Err, store.ErrAlreadyEnded)

	a, evs, err := f.store.GetActivity(ctx, org, x.ID)
	require.NoError(t, err)
	require.Equal(t, win, a)
	require.Len(t, evs, 1)
	require.Equal(t, "during", evs[0].Message)
}

// TestGroupCommitConcurrentWrites: many concurrent creates and completions,
// of distinct ids and of shared ones, over several organizations, through
// the group commit: of the callers of one id exactly one creates and
// exactly one completes, every other caller gets the winner's row, and
// every answer comes after its write is visible to another session.
func TestGroupCommitConcurrentWrites(t *testing.T) {
	const (
		shared   = 12 // ids written by several callers at once
		copies   = 8
		distinct = 64
		maxBatch = 32
	)
	f := newFixture(t, 4, WithMaxBatch(maxBatch))
	ctx := context.Background()
	orgs := []string{"org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString()}
	type key struct{ org, id string }
	var keys []key
	for i := range shared + distinct {
		keys = append(keys, key{orgs[i%len(orgs)], uuid.NewString()})
	}
	callersOf := func(i int) int {
		if i < shared {
			return copies
		}
		return 1
	}
	flushesBefore, writesBefore := f.store.writes.flushes.Load(), f.store.writes.writes.Load()

	type answer struct {
		a       store.Activity
		created bool
		err     error
		// seen is the user (create) or status (complete) another session
		// read right after the answer.
		seen string
	}
	run := func(call func(k key, caller int) answer) map[key][]answer {
		release := f.holdWriter(orgs[0])
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			answers = map[key][]answer{}
		)
		n := 0
		for i, k := range keys {
			for c := range callersOf(i) {
				n++
				wg.Go(func() {
					a := call(k, c)
					mu.Lock()
					defer mu.Unlock()
					answers[k] = append(answers[k], a)
				})
			}
		}
		require.Eventually(t, func() bool { return f.queued() == maxBatch }, 10*time.Second, time.Millisecond, "callers queue behind the held writer")
		require.NoError(t, release())
		wg.Wait()
		return answers
	}

	created := run(func(k key, caller int) answer {
		na := newActivity()
		na.ID = k.id
		na.UserID = fmt.Sprintf("user-%d", caller)
		a, c, err := f.store.CreateActivity(ctx, k.org, na)
		_, user, _, _ := f.committed(k.org, k.id)
		return answer{a: a, created: c, err: err, seen: user}
	})
	for _, k := range keys {
		as := created[k]
		winners := 0
		for _, a := range as {
			require.NoError(t, a.err)
			if a.created {
				winners++
			}
			require.Equal(t, as[0].a, a.a, "every creator of %v sees the same row", k)
			require.Equal(t, a.a.UserID, a.seen, "a creator of %v was answered before its row was visible", k)
		}
		require.Equal(t, 1, winners, "exactly one create of %v wins", k)
	}

	completed := run(func(k key, caller int) answer {
		a, err := f.store.CompleteActivity(ctx, k.org, k.id, completion(fmt.Sprintf("caller-%d", caller)))
		status, _, _, _ := f.committed(k.org, k.id)
		return answer{a: a, err: err, seen: string(status)}
	})
	for _, k := range keys {
		as := completed[k]
		var winner *store.Activity
		for _, a := range as {
			if a.err == nil {
				require.Nil(t, winner, "two completions of %v won", k)
				winner = &a.a
			} else {
				require.ErrorIs(t, a.err, store.ErrAlreadyEnded)
			}
			require.Equal(t, string(store.StatusCompleted), a.seen, "a completion of %v was answered before it was visible", k)
		}
		require.NotNil(t, winner, "a completion of %v won", k)
		for _, a := range as {
			require.Equal(t, *winner, a.a, "every completer of %v gets the winner's row", k)
		}
	}

	writes := f.store.writes.writes.Load() - writesBefore
	flushes := f.store.writes.flushes.Load() - flushesBefore
	require.Equal(t, int64(2*(shared*copies+distinct+2)), writes, "every write committed once (the two held ones included)")
	require.Less(t, flushes, writes/4, "the callers shared transactions")
	require.Zero(t, f.store.writes.fallbacks.Load())
}

// TestGroupCommitRowLevelSecurity: one batch holds writes of three
// organizations, all naming the same activity id, which only B holds. Each
// write runs under its own organization's tenant setting: A's and C's find
// nothing of B's and change nothing of it, A's create makes A's own
// activity, and no setting outlives the batch on its connection.
func TestGroupCommitRowLevelSecurity(t *testing.T) {
	f := newFixture(t, 1) // one connection: the batch's is the one checked below
	ctx := context.Background()
	orgA, orgB, orgC := "org-a-"+uuid.NewString(), "org-b-"+uuid.NewString(), "org-c-"+uuid.NewString()
	ofB := newActivity()
	ofB.UserID = "bob"
	f.create(orgB, ofB)
	id := ofB.ID
	rowOfB := func() string {
		var row string
		require.NoError(t, f.owner.QueryRow(ctx, `SELECT (SELECT row_to_json(a)::text FROM activities a WHERE organization_id = $1 AND id = $2)
			|| COALESCE((SELECT json_agg(e ORDER BY sequence)::text FROM progress_events e WHERE organization_id = $1 AND activity_id = $2), '')`, orgB, id).Scan(&row))
		return row
	}
	before := rowOfB()
	release := f.holdWriter(orgC)

	var (
		aComplete, aAppend, cComplete, cAppend error
		aCreated                               bool
		aCreate                                store.Activity
		aCreateErr, bAppendErr                 error
		bEvent                                 store.ProgressEvent
	)
	ofA := ofB
	ofA.UserID = "alice"
	wait := f.inOrder(
		func() { _, cComplete = f.store.CompleteActivity(ctx, orgC, id, completion("hijack")) },
		func() { _, aComplete = f.store.CompleteActivity(ctx, orgA, id, completion("hijack")) },
		func() {
			bEvent, bAppendErr = f.store.AppendProgress(ctx, orgB, id, store.NewProgressEvent{Message: "b's", CreateTime: at})
		},
		func() {
			_, aAppend = f.store.AppendProgress(ctx, orgA, id, store.NewProgressEvent{Message: "intrusion", CreateTime: at})
		},
		func() {
			_, cAppend = f.store.AppendProgress(ctx, orgC, id, store.NewProgressEvent{Message: "intrusion", CreateTime: at})
		},
		func() { aCreate, aCreated, aCreateErr = f.store.CreateActivity(ctx, orgA, ofA) },
	)
	flushesBefore := f.store.writes.flushes.Load()
	require.NoError(t, release())
	wait()
	require.Equal(t, flushesBefore+2, f.store.writes.flushes.Load(), "one batch after the held one")

	require.ErrorIs(t, aComplete, store.ErrNotFound)
	require.ErrorIs(t, aAppend, store.ErrNotFound)
	require.ErrorIs(t, cComplete, store.ErrNotFound)
	require.ErrorIs(t, cAppend, store.ErrNotFound)
	require.NoError(t, aCreateErr)
	require.True(t, aCreated, "A's activity with B's id is A's own")
	require.Equal(t, orgA, aCreate.OrganizationID)
	require.Equal(t, "alice", aCreate.UserID)
	require.NoError(t, bAppendErr)
	require.Equal(t, int64(1), bEvent.Sequence)

	after := rowOfB()
	require.NotEqual(t, before, after, "B's own append landed")
	status, user, events, _ := f.committed(orgB, id)
	require.Equal(t, store.StatusRunning, status)
	require.Equal(t, "bob", user)
	require.Equal(t, 1, events, "only B's append counts against B's activity")
	status, user, events, _ = f.committed(orgA, id)
	require.Equal(t, store.StatusRunning, status, "A's completion ran before A's create")
	require.Equal(t, "alice", user)
	require.Zero(t, events)
	_, _, _, ok := f.committed(orgC, id)
	require.False(t, ok)

	var setting string
	var visible int
	require.NoError(t, f.pool.QueryRow(ctx, "SELECT COALESCE(current_setting('switchyard.organization_id', true), ''), (SELECT count(*) FROM activities)").Scan(&setting, &visible))
	require.Empty(t, setting)
	require.Zero(t, visible)
}

// TestGroupCommitAndTheCallersContext: a caller whose context ends while
// its write waits in the queue is answered at once and its write is never
// made; a caller whose write was already sent is answered at once too,
// told the outcome is unknown, and the write commits.
func TestGroupCommitAndTheCallersContext(t *testing.T) {
	f := newFixture(t, 4)
	org := "org-" + uuid.NewString()

	// The held write is in flight: its caller gives up.
	inFlight := newActivity()
	f.create(org, inFlight)
	tx, err := f.owner.Begin(context.Background())
	require.NoError(t, err)
	var pid int
	require.NoError(t, tx.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = tx.Exec(context.Background(), `SELECT 1 FROM activities WHERE organization_id = $1 AND id = $2 FOR UPDATE`, org, inFlight.ID)
	require.NoError(t, err)
	sentCtx, cancelSent := context.WithCancel(context.Background())
	sent := make(chan error, 1)
	go func() {
		_, err := f.store.CompleteActivity(sentCtx, org, inFlight.ID, completion("sent"))
		sent <- err
	}()
	f.waitBlockedBy(pid)

	// Another write waits in the queue behind it: its caller gives up too.
	notSent := newActivity()
	queuedCtx, cancelQueued := context.WithCancel(context.Background())
	queuedErr := make(chan error, 1)
	go func() {
		_, _, err := f.store.CreateActivity(queuedCtx, org, notSent)
		queuedErr <- err
	}()
	require.Eventually(t, func() bool { return f.queued() == 1 }, 10*time.Second, time.Millisecond)

	cancelQueued()
	err = <-queuedErr
	require.ErrorIs(t, err, context.Canceled, "answered while the writer is still parked")
	require.NotErrorIs(t, err, store.ErrOutcomeUnknown, "a write never sent is known not to be written")
	cancelSent()
	err = <-sent
	require.ErrorIs(t, err, context.Canceled, "answered while its write still waits")
	require.ErrorIs(t, err, store.ErrOutcomeUnknown, "a write on its way may commit")

	require.NoError(t, tx.Rollback(context.Background()))
	// A later write is flushed after the abandoned one was skipped.
	later := newActivity()
	f.create(org, later)
	status, _, _, _ := f.committed(org, inFlight.ID)
	require.Equal(t, store.StatusCompleted, status, "the write whose caller left after it was sent committed")
	_, _, _, ok := f.committed(org, notSent.ID)
	require.False(t, ok, "the write whose caller left before it was sent was not written")
}

// TestGroupCommitRetriesADeadlockedBatch: a batch that deadlocks with
// another transaction (as the reaper's sweep, or another replica's
// writer, could make it) is rolled back by the server; each of its writes
// is then retried alone and succeeds.
func TestGroupCommitRetriesADeadlockedBatch(t *testing.T) {
	f := newFixture(t, 4)
	ctx := context.Background()
	org := "org-" + uuid.NewString()
	ids := []string{uuid.NewString(), uuid.NewString()}
	sort.Strings(ids) // the batch locks ids[0], then ids[1]
	for _, id := range ids {
		na := newActivity()
		na.ID = id
		f.create(org, na)
	}
	release := f.holdWriter(org)

	// The other transaction holds ids[1] and never looks for deadlocks
	// itself, so the batch's backend is the one to find it.
	tx, err := f.owner.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	var pid int
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = tx.Exec(ctx, `SET LOCAL deadlock_timeout = '1min'`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM activities WHERE organization_id = $1 AND id = $2 FOR UPDATE`, org, ids[1])
	require.NoError(t, err)

	results := make([]error, len(ids))
	wait := f.inOrder(
		func() { _, results[1] = f.store.CompleteActivity(ctx, org, ids[1], completion("second")) },
		func() { _, results[0] = f.store.CompleteActivity(ctx, org, ids[0], completion("first")) },
	)
	require.NoError(t, release())
	f.waitBlockedBy(pid) // the batch holds ids[0] and waits for ids[1]
	// Now wait for ids[0] in turn: a deadlock, which the batch's backend
	// detects after its deadlock_timeout and breaks by failing the batch.
	_, err = tx.Exec(ctx, `SELECT 1 FROM activities WHERE organization_id = $1 AND id = $2 FOR UPDATE`, org, ids[0])
	require.NoError(t, err, "the batch rolled back, releasing ids[0]")
	require.Eventually(t, func() bool { return f.store.writes.fallbacks.Load() == 1 }, 10*time.Second, time.Millisecond,
		"the batch's writes are retried one by one")
	require.NoError(t, tx.Commit(ctx))
	wait()
	for i, id := range ids {
		require.NoError(t, results[i])
		status, _, _, _ := f.committed(org, id)
		require.Equal(t, store.StatusCompleted, status)
	}
}

// TestCloseFlushes: Close writes and answers every write already queued
// before it returns; writes after it fail as unavailable, and reads go on.
func TestCloseFlushes(t *testing.T) {
	const maxBatch = 8
	f := newFixture(t, 4, WithMaxBatch(maxBatch))
	ctx := context.Background()
	org := "org-" + uuid.NewString()
	release := f.holdWriter(org)

	const n = 20
	type answer struct {
		id  string
		err error
	}
	results := make(chan answer, n)
	for range n {
		go func() {
			na := newActivity()
			_, _, err := f.store.CreateActivity(ctx, org, na)
			results <- answer{na.ID, err}
		}()
	}
	require.Eventually(t, func() bool { return f.queued() == maxBatch }, 10*time.Second, time.Millisecond)
	closed := make(chan struct{})
	go func() {
		f.store.Close()
		close(closed)
	}()
	require.NoError(t, release())
	<-closed

	var written int
	for range n {
		a := <-results
		if a.err != nil {
			// Callers that had not reached the queue when Close began find
			// the store closed; none is left waiting.
			require.ErrorIs(t, a.err, store.ErrUnavailable)
			continue
		}
		written++
		_, _, _, ok := f.committed(org, a.id)
		require.True(t, ok, "an acknowledged create is committed")
	}
	require.GreaterOrEqual(t, written, maxBatch, "every write queued before Close was written")

	na := newActivity()
	_, _, err := f.store.CreateActivity(ctx, org, na)
	require.ErrorIs(t, err, store.ErrUnavailable)
	_, err = f.store.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", CreateTime: at})
	require.ErrorIs(t, err, store.ErrUnavailable)
	_, err = f.store.CompleteActivity(ctx, org, na.ID, completion("late"))
	require.ErrorIs(t, err, store.ErrUnavailable)
	_, _, err = f.store.GetActivity(ctx, org, na.ID)
	require.ErrorIs(t, err, store.ErrNotFound, "reads still work until the pool closes")
	f.store.Close() // idempotent
}

// TestFlushTimeout: a group commit the database does not answer within
// the flush timeout fails its callers with an unknown outcome, not as if
// their own deadline had passed, and the writer goes on. The outcome is
// unknown indeed: the server had the whole batch, and pgx, closing the
// connection, sends a cancel request on another; whether it lands before
// the lock is released (the batch rolls back) or after (it commits) is a
// race.
func TestFlushTimeout(t *testing.T) {
	const timeout = time.Second
	f := newFixture(t, 4, WithFlushTimeout(timeout))
	ctx := context.Background()
	org := "org-" + uuid.NewString()
	stuck := newActivity()
	f.create(org, stuck)
	tx, err := f.owner.Begin(ctx)
	require.NoError(t, err)
	var pid int
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = tx.Exec(ctx, `SELECT 1 FROM activities WHERE organization_id = $1 AND id = $2 FOR UPDATE`, org, stuck.ID)
	require.NoError(t, err)

	answered := make(chan error, 1)
	go func() {
		_, err := f.store.CompleteActivity(ctx, org, stuck.ID, completion("late"))
		answered <- err
	}()
	f.waitBlockedBy(pid) // the batch reached the server whole, and waits
	err = <-answered
	require.ErrorIs(t, err, store.ErrOutcomeUnknown)
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's deadline did not pass")
	require.Contains(t, err.Error(), "did not answer within "+timeout.String())

	require.NoError(t, tx.Rollback(ctx))
	// The writer goes on, on another connection.
	f.create(org, newActivity())
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, f.owner.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND state = 'active' AND query LIKE 'UPDATE activities%'`, appName).Scan(&waiting))
		return waiting == 0
	}, 10*time.Second, 10*time.Millisecond, "the unanswered batch ended one way or the other")
	a, _, err := f.store.GetActivity(ctx, org, stuck.ID)
	require.NoError(t, err)
	if a.Status != store.StatusRunning {
		require.Equal(t, store.StatusCompleted, a.Status)
		require.Equal(t, map[string]any{"text": "late"}, a.Output, "all of the write or nothing")
	}
}

// TestFlushMetrics: WithMeter receives each group commit's duration and
// writes, by outcome.
func TestFlushMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	f := newFixture(t, 4, WithMeter(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	org := "org-" + uuid.NewString()
	na := newActivity()
	f.create(org, na)
	_, err := f.store.CompleteActivity(context.Background(), org, na.ID, completion("done"))
	require.NoError(t, err)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	found := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					outcome, _ := dp.Attributes.Value("switchyard.outcome")
					found[m.Name+"/"+outcome.AsString()] += dp.Count
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					outcome, _ := dp.Attributes.Value("switchyard.outcome")
					found[m.Name+"/"+outcome.AsString()] += dp.Count
					require.Equal(t, int64(2), dp.Sum, "two writes, one each")
				}
			}
		}
	}
	require.Equal(t, map[string]uint64{
		"switchyard.activity.flush.duration/committed": 2,
		"switchyard.activity.flush.writes/committed":   2,
	}, found)
}
