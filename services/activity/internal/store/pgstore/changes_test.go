package pgstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/pgstore"
)

// writerTx is an open transaction of the service role that has written
// one activity of org and stamped it, as a group commit does before it
// commits.
type writerTx struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
	pid  uint32
	id   string
}

// beginWrite opens the transaction and writes the activity; stamp then
// stamps it, which takes the organization's change lock.
func beginWrite(t *testing.T, pool *pgxpool.Pool, org string) *writerTx {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	t.Cleanup(conn.Release)
	w := &writerTx{conn: conn, pid: conn.Conn().PgConn().PID(), id: uuid.NewString()}
	w.tx, err = conn.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.tx.Rollback(ctx) })
	_, err = w.tx.Exec(ctx, "SELECT set_config('"+migrations.TenantSetting+"', $1, true)", org)
	require.NoError(t, err)
	_, err = w.tx.Exec(ctx, `INSERT INTO activities (organization_id, id, session_id, user_id, agent_type, agent_name, category, status, start_time)
		VALUES ($1, $2, '', '', '', '', '', 'running', now())`, org, w.id)
	require.NoError(t, err)
	return w
}

func (w *writerTx) stamp(org string) error {
	_, err := w.tx.Exec(context.Background(), `SELECT stamp_activity_changes($1::text[], $2::uuid[])`, []string{org}, []string{w.id})
	return err
}

// waitsForAdvisoryLock reports whether the backend pid is waiting for an
// advisory lock.
func waitsForAdvisoryLock(t *testing.T, pool *pgxpool.Pool, pid uint32) bool {
	var waiting bool
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted)`, int64(pid)).Scan(&waiting))
	return waiting
}

// TestChangeStampsOfAnOrganizationWaitForItsEarlierWriter pins the
// discipline that makes a cursor exact, step by step: a transaction that
// has stamped its changes holds its organization's change lock until it
// commits, so a later writer of the organization (another group commit,
// or the reaper) stamps only after that and draws a larger number. Without
// the lock, the later writer would draw its number first and could commit
// first, and a reader that saw it would skip the earlier one for good.
func TestChangeStampsOfAnOrganizationWaitForItsEarlierWriter(t *testing.T) {
	pool, _ := appPool(t)
	testStampsWaitForEarlierWriter(t, pool)
}

func testStampsWaitForEarlierWriter(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	s := newStore(t, pool)
	org := "org-" + uuid.NewString()
	deadline := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	expired, _, err := s.CreateActivity(ctx, org, store.NewActivity{ID: uuid.NewString(), StartTime: deadline, Deadline: deadline})
	require.NoError(t, err)
	hw, err := s.RecentChangesStart(ctx, org, 0)
	require.NoError(t, err)

	first := beginWrite(t, pool, org)
	require.NoError(t, first.stamp(org))

	second := beginWrite(t, pool, org)
	secondStamped := make(chan error, 1)
	go func() { secondStamped <- second.stamp(org) }()

	reaper, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer reaper.Release()
	reaperPID := reaper.Conn().PgConn().PID()
	abandoned := make(chan error, 1)
	go func() {
		var n int
		err := reaper.QueryRow(ctx, `SELECT abandon_expired($1, $2, $3)`, time.Now(), time.Second, 10).Scan(&n)
		if err == nil && n != 1 {
			err = fmt.Errorf("abandoned %d activities, want 1", n)
		}
		abandoned <- err
	}()

	require.Eventually(t, func() bool {
		return waitsForAdvisoryLock(t, pool, second.pid) && waitsForAdvisoryLock(t, pool, reaperPID)
	}, 10*time.Second, 5*time.Millisecond, "the later writers wait for the organization's change lock")
	changes, _, err := s.ChangesSince(ctx, org, store.ChangeQuery{After: hw, Limit: 10})
	require.NoError(t, err)
	require.Empty(t, changes, "nothing is committed yet")

	require.NoError(t, first.tx.Commit(ctx))
	require.NoError(t, <-secondStamped)
	require.NoError(t, second.tx.Commit(ctx))
	require.NoError(t, <-abandoned)

	changes, more, err := s.ChangesSince(ctx, org, store.ChangeQuery{After: hw, Limit: 10})
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, changes, 3)
	require.Equal(t, first.id, changes[0].Activity.ID, "the first writer's change is numbered first")
	got := map[string]bool{changes[1].Activity.ID: true, changes[2].Activity.ID: true}
	require.Equal(t, map[string]bool{second.id: true, expired.ID: true}, got, "then the two that waited for it, in the order they got the lock")
}

// TestConcurrentReplicasMissNoChange is the conformance suite's
// concurrent-writers check across two stores on one database, as two
// replicas of the service run, each with its two group-commit writers,
// and with batches that hold several organizations: one reader that
// follows an organization's feed with its cursor while they write must
// end up with every activity's final state.
func TestConcurrentReplicasMissNoChange(t *testing.T) {
	pool, _ := appPool(t)
	testReplicasMissNoChange(t, pool)
}

func testReplicasMissNoChange(t *testing.T, pool *pgxpool.Pool) {
	ctx := context.Background()
	replicas := []*pgstore.Store{newStore(t, pool), newStore(t, pool)}
	// The watched organization sorts before the others, so that in a
	// batch with several organizations its writes are stamped first,
	// and the batch still has work to do before it commits.
	org := "a-" + uuid.NewString()
	others := []string{"b-" + uuid.NewString(), "c-" + uuid.NewString(), "d-" + uuid.NewString()}
	const writers, perWriter = 16, 10

	var wg sync.WaitGroup
	for w := range writers {
		s := replicas[w%len(replicas)]
		wg.Go(func() {
			for i := range perWriter {
				for _, o := range []string{org, others[(w+i)%len(others)]} {
					id := uuid.NewString()
					if _, _, err := s.CreateActivity(ctx, o, store.NewActivity{ID: id, StartTime: time.Now().UTC().Truncate(time.Microsecond)}); err != nil {
						t.Error(err)
						return
					}
					if i%2 == 0 {
						if _, err := s.CompleteActivity(ctx, o, id, store.Completion{Status: store.StatusCompleted, CompleteTime: time.Now()}); err != nil {
							t.Error(err)
							return
						}
					}
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	seen := map[string]int64{}
	var after int64
	follow := func() {
		for {
			page, more, err := replicas[0].ChangesSince(ctx, org, store.ChangeQuery{After: after, Limit: 5})
			require.NoError(t, err)
			for _, c := range page {
				after = c.Seq
				seen[c.Activity.ID] = c.Seq
			}
			if !more {
				return
			}
		}
	}
	for following := true; following; {
		select {
		case <-done:
			following = false
		default:
		}
		follow()
	}
	follow()

	final, more, err := replicas[1].ChangesSince(ctx, org, store.ChangeQuery{Limit: writers*perWriter + 1})
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, final, writers*perWriter)
	for _, c := range final {
		require.Equal(t, c.Seq, seen[c.Activity.ID], "the reader missed the latest change of activity %s", c.Activity.ID)
	}
}
