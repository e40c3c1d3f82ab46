package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/pgstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/storetest"
)

// appPool connects to a fresh migrated schema as the service role, as the
// service does. The pool is small: the suite runs its subtests in
// parallel, each with its own schema and pool, beside other packages'
// tests on the same server.
func appPool(t testing.TB) (*pgxpool.Pool, pgtest.Schema) {
	t.Helper()
	schema := pgtest.NewSchema(t, migrations.Activity)
	pool, err := pgxutil.Connect(context.Background(), withParam(t, schema.AppURL, "pool_max_conns", "4"), "activity-pgstore-test")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, schema
}

func withParam(t testing.TB, rawURL, key, value string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// newStore is a store on pool, closed when the test ends (before the pool,
// whose cleanup was registered first).
func newStore(t testing.TB, pool *pgxpool.Pool, opts ...pgstore.Option) *pgstore.Store {
	s := pgstore.New(pool, opts...)
	t.Cleanup(s.Close)
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		pool, _ := appPool(t)
		return newStore(t, pool)
	})
}

// TestConformanceSharedSchema runs the suite with every subtest on one
// schema, as a production database holds many organizations: the subtests
// must not see each other's rows. They share one store too, so their
// writes share group commits.
func TestConformanceSharedSchema(t *testing.T) {
	pool, _ := appPool(t)
	shared := newStore(t, pool)
	storetest.Run(t, func(*testing.T) store.Store { return shared })
}

// TestConformanceWithoutGroupCommit runs the suite on a store that writes
// each call in its own transaction, from its caller's goroutine.
func TestConformanceWithoutGroupCommit(t *testing.T) {
	pool, _ := appPool(t)
	s := newStore(t, pool, pgstore.WithMaxBatch(1))
	storetest.Run(t, func(*testing.T) store.Store { return s })
}

// TestConformanceWithWriters runs the suite on a shared store with several
// group-commit writers.
func TestConformanceWithWriters(t *testing.T) {
	pool, _ := appPool(t)
	s := newStore(t, pool, pgstore.WithWriters(3))
	storetest.Run(t, func(*testing.T) store.Store { return s })
}

// countingConn counts round trips: a write that follows a read starts a
// new one.
type countingConn struct {
	net.Conn
	trips    *atomic.Int64
	mu       sync.Mutex
	lastRead bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.lastRead {
		c.trips.Add(1)
		c.lastRead = false
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.lastRead = true
	c.mu.Unlock()
	return n, err
}

// singleConnPool is a pool of one connection to rawURL that counts its
// round trips and never pings before use, so that every round trip counted
// is one a store call made, and a broken connection is used as it is.
func singleConnPool(t *testing.T, rawURL string) (*pgxpool.Pool, *atomic.Int64) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(rawURL)
	require.NoError(t, err)
	cfg.MaxConns = 1
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	trips := &atomic.Int64{}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// The handshake is the first write: count from there.
		return &countingConn{Conn: c, trips: trips, lastRead: true}, nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, trips
}

// TestHotPathTakesOneRoundTrip pins the cost of the calls the Orchestrator
// makes on every task, and of the reads: one round trip each, whatever the
// outcome, once the connection has prepared the statements.
func TestHotPathTakesOneRoundTrip(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	pool, trips := singleConnPool(t, schema.AppURL)
	s := newStore(t, pool)
	org := "org-" + uuid.NewString()
	start := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	newActivity := func() store.NewActivity {
		return store.NewActivity{ID: uuid.NewString(), SessionID: "s", AgentType: "ai_executor", Input: map[string]any{"prompt": "hi"}, StartTime: start}
	}
	ev := store.NewProgressEvent{Message: "attempt 2 of 3", Data: map[string]any{"attempt": 2.0}, CreateTime: start}
	done := store.Completion{Status: store.StatusCompleted, Output: map[string]any{"text": "ok"}, Metadata: map[string]any{"cost": 0.1}, CompleteTime: start}
	list := store.ListQuery{Limit: 10, MaxBytes: 1 << 20}

	// Prepare every statement on the connection.
	warm := newActivity()
	_, _, err := s.CreateActivity(ctx, org, warm)
	require.NoError(t, err)
	_, err = s.AppendProgress(ctx, org, warm.ID, ev)
	require.NoError(t, err)
	_, err = s.CompleteActivity(ctx, org, warm.ID, done)
	require.NoError(t, err)
	_, _, err = s.GetActivity(ctx, org, warm.ID)
	require.NoError(t, err)
	_, _, err = s.ListActivities(ctx, org, list)
	require.NoError(t, err)
	_, err = s.AbandonExpired(ctx, start, time.Second, 10)
	require.NoError(t, err)

	na := newActivity()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"create", func() error { _, _, err := s.CreateActivity(ctx, org, na); return err }},
		{"create again", func() error { _, _, err := s.CreateActivity(ctx, org, na); return err }},
		{"append", func() error { _, err := s.AppendProgress(ctx, org, na.ID, ev); return err }},
		{"complete", func() error { _, err := s.CompleteActivity(ctx, org, na.ID, done); return err }},
		{"complete again", func() error {
			_, err := s.CompleteActivity(ctx, org, na.ID, done)
			if errors.Is(err, store.ErrAlreadyEnded) {
				return nil
			}
			return fmt.Errorf("want ErrAlreadyEnded, got %v", err)
		}},
		{"append after the end", func() error {
			_, err := s.AppendProgress(ctx, org, na.ID, ev)
			if errors.Is(err, store.ErrAlreadyEnded) {
				return nil
			}
			return fmt.Errorf("want ErrAlreadyEnded, got %v", err)
		}},
		{"get", func() error { _, _, err := s.GetActivity(ctx, org, na.ID); return err }},
		{"list", func() error { _, _, err := s.ListActivities(ctx, org, list); return err }},
		{"abandon", func() error { _, err := s.AbandonExpired(ctx, start, time.Second, 10); return err }},
	} {
		before := trips.Load()
		require.NoError(t, tc.call(), tc.name)
		require.Equal(t, int64(1), trips.Load()-before, "round trips of %s", tc.name)
	}
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	ctx := context.Background()
	// Nothing listens on port 1; the pool connects lazily.
	pool, err := pgxpool.New(ctx, "postgres://switchyard_app:secret@127.0.0.1:1/switchyard?connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := newStore(t, pool)
	org, id := "org-"+uuid.NewString(), uuid.NewString()

	calls := map[string]func(context.Context) error{
		"create": func(ctx context.Context) error {
			_, _, err := s.CreateActivity(ctx, org, store.NewActivity{ID: id, StartTime: time.Now()})
			return err
		},
		"append": func(ctx context.Context) error {
			_, err := s.AppendProgress(ctx, org, id, store.NewProgressEvent{Message: "m", CreateTime: time.Now()})
			return err
		},
		"complete": func(ctx context.Context) error {
			_, err := s.CompleteActivity(ctx, org, id, store.Completion{Status: store.StatusCompleted, CompleteTime: time.Now()})
			return err
		},
		"get": func(ctx context.Context) error {
			_, _, err := s.GetActivity(ctx, org, id)
			return err
		},
		"list": func(ctx context.Context) error {
			_, _, err := s.ListActivities(ctx, org, store.ListQuery{Limit: 1})
			return err
		},
		"abandon": func(ctx context.Context) error {
			_, err := s.AbandonExpired(ctx, time.Now(), time.Second, 1)
			return err
		},
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for name, call := range calls {
		err := call(ctx)
		require.ErrorIs(t, err, store.ErrUnavailable, "%s: %v", name, err)
		require.NotContains(t, err.Error(), "secret", name)

		err = call(cancelled)
		require.ErrorIs(t, err, context.Canceled, "%s: a caller that gave up is told so", name)
		require.NotErrorIs(t, err, store.ErrUnavailable, name)
	}
}

// TestLostConnectionIsUnavailableAndRecovers: a connection the server
// dropped fails the call that finds it with ErrUnavailable; the pool then
// replaces it, and the next call succeeds.
func TestLostConnectionIsUnavailableAndRecovers(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	pool, _ := singleConnPool(t, schema.AppURL)
	s := newStore(t, pool)
	org := "org-" + uuid.NewString()
	na := store.NewActivity{ID: uuid.NewString(), StartTime: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, _, err := s.CreateActivity(ctx, org, na)
	require.NoError(t, err)

	var pid int32
	require.NoError(t, pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	owner, err := pgx.Connect(ctx, schema.OwnerURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = owner.Close(ctx) })
	var terminated bool
	require.NoError(t, owner.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", pid).Scan(&terminated))
	require.True(t, terminated)

	_, err = s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", CreateTime: na.StartTime})
	require.ErrorIs(t, err, store.ErrUnavailable)

	pe, err := s.AppendProgress(ctx, org, na.ID, store.NewProgressEvent{Message: "m", CreateTime: na.StartTime})
	require.NoError(t, err, "the pool replaced the lost connection")
	require.Equal(t, int64(1), pe.Sequence, "the failed append left nothing behind")
}

// TestRowLevelSecurityAndTenantScope checks at the database level what the
// suite checks through the store: organization A, using B's activity id
// for everything, never changes a column of B's row, the event counter
// included; and no tenant setting outlives a call on a pooled connection.
func TestRowLevelSecurityAndTenantScope(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	pool, _ := singleConnPool(t, schema.AppURL)
	s := newStore(t, pool)
	orgA, orgB, id := "org-a-"+uuid.NewString(), "org-b-"+uuid.NewString(), uuid.NewString()
	at := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)

	_, _, err := s.CreateActivity(ctx, orgB, store.NewActivity{ID: id, UserID: "bob", Metadata: map[string]any{"k": "b"}, StartTime: at})
	require.NoError(t, err)
	_, err = s.AppendProgress(ctx, orgB, id, store.NewProgressEvent{Message: "b's", CreateTime: at})
	require.NoError(t, err)

	owner, err := pgx.Connect(ctx, schema.OwnerURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = owner.Close(ctx) })
	rowOfB := func() string {
		var row string
		require.NoError(t, owner.QueryRow(ctx, `SELECT (SELECT row_to_json(a)::text FROM activities a WHERE organization_id = $1 AND id = $2)
			|| (SELECT json_agg(e ORDER BY sequence)::text FROM progress_events e WHERE organization_id = $1 AND activity_id = $2)`, orgB, id).Scan(&row))
		return row
	}
	before := rowOfB()

	_, _, err = s.GetActivity(ctx, orgA, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.AppendProgress(ctx, orgA, id, store.NewProgressEvent{Message: "intrusion", CreateTime: at})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.CompleteActivity(ctx, orgA, id, store.Completion{Status: store.StatusFailed, ErrorMessage: "hijacked", Metadata: map[string]any{"k": "a"}, CompleteTime: at})
	require.ErrorIs(t, err, store.ErrNotFound)
	listed, more, err := s.ListActivities(ctx, orgA, store.ListQuery{Limit: 10})
	require.NoError(t, err)
	require.Empty(t, listed)
	require.False(t, more)
	// A's own activity with B's id, through its whole life.
	_, created, err := s.CreateActivity(ctx, orgA, store.NewActivity{ID: id, UserID: "alice", StartTime: at})
	require.NoError(t, err)
	require.True(t, created)
	for range 3 {
		_, err = s.AppendProgress(ctx, orgA, id, store.NewProgressEvent{Message: "a's", CreateTime: at})
		require.NoError(t, err)
	}
	_, err = s.CompleteActivity(ctx, orgA, id, store.Completion{Status: store.StatusFailed, ErrorMessage: "a's", Metadata: map[string]any{"k": "a"}, CompleteTime: at})
	require.NoError(t, err)

	require.Equal(t, before, rowOfB(), "B's row and events are byte for byte as they were")
	pe, err := s.AppendProgress(ctx, orgB, id, store.NewProgressEvent{Message: "b's second", CreateTime: at})
	require.NoError(t, err)
	require.Equal(t, int64(2), pe.Sequence, "A's appends did not count against B's activity")

	// The pool's one connection served every call above; outside a call it
	// acts for no organization and so sees no rows at all.
	var setting string
	var visible int
	require.NoError(t, pool.QueryRow(ctx, "SELECT COALESCE(current_setting('switchyard.organization_id', true), ''), (SELECT count(*) FROM activities)").Scan(&setting, &visible))
	require.Empty(t, setting)
	require.Zero(t, visible)
}

// TestAbandonWithAnOwnerThatIsNotSuperuser migrates as an ordinary schema
// owner, which forced row-level security binds as it binds the service
// role (the tests' owner is a superuser, which it does not bind). The sweep
// still reaches every organization; outside it neither the owner nor the
// service role sees a tenant row without the tenant setting.
func TestAbandonWithAnOwnerThatIsNotSuperuser(t *testing.T) {
	ctx := context.Background()
	admin := pgtest.AdminURL(t)
	pgtest.NewSchema(t, migrations.Activity) // so that the service role exists
	name := "t_owner_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	conn, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(ctx) })
	// CREATEROLE: the first migration creates the service role if missing.
	_, err = conn.Exec(ctx, "CREATE ROLE "+name+" LOGIN NOSUPERUSER NOBYPASSRLS CREATEROLE")
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, sql := range []string{"DROP SCHEMA IF EXISTS " + name + " CASCADE", "DROP OWNED BY " + name, "DROP ROLE " + name} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Errorf("%s: %v", sql, err)
			}
		}
	})
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+name+" AUTHORIZATION "+name)
	require.NoError(t, err)
	ownerURL := withUser(t, withParam(t, admin, "search_path", name), name)
	pgtest.Migrate(t, ownerURL, migrations.Activity)

	pool, err := pgxutil.Connect(ctx, withUser(t, withParam(t, admin, "search_path", name), migrations.AppRole), "activity-pgstore-test")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := newStore(t, pool)
	at := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	expiring := map[string]string{} // organization → activity
	for _, org := range []string{"org-a-" + uuid.NewString(), "org-b-" + uuid.NewString()} {
		na := store.NewActivity{ID: uuid.NewString(), StartTime: at, Deadline: at}
		_, _, err := s.CreateActivity(ctx, org, na)
		require.NoError(t, err)
		_, _, err = s.CreateActivity(ctx, org, store.NewActivity{ID: uuid.NewString(), StartTime: at})
		require.NoError(t, err)
		expiring[org] = na.ID
	}

	n, err := s.AbandonExpired(ctx, at.Add(time.Hour), time.Second, 1000)
	require.NoError(t, err)
	require.Equal(t, 2, n, "the sweep reaches both organizations")
	for org, id := range expiring {
		a, _, err := s.GetActivity(ctx, org, id)
		require.NoError(t, err)
		require.Equal(t, store.StatusAbandoned, a.Status)
	}
	n, err = s.AbandonExpired(ctx, at.Add(time.Hour), time.Second, 1000)
	require.NoError(t, err)
	require.Zero(t, n)

	owner, err := pgx.Connect(ctx, ownerURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = owner.Close(ctx) })
	var forced bool
	require.NoError(t, owner.QueryRow(ctx, "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'activities'::regclass").Scan(&forced))
	require.True(t, forced)
	for who, q := range map[string]interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}{"the owner": owner, "the service role": pool} {
		var visible int
		require.NoError(t, q.QueryRow(ctx, "SELECT count(*) FROM activities").Scan(&visible))
		require.Zero(t, visible, "%s sees no rows without a tenant, after the sweep as before", who)
	}
	app, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer app.Release()
	_, err = app.Exec(ctx, "SET switchyard.abandon_sweep = 'on'")
	require.NoError(t, err)
	var visible int
	require.NoError(t, app.QueryRow(ctx, "SELECT count(*) FROM activities").Scan(&visible))
	_, err = app.Exec(ctx, "RESET switchyard.abandon_sweep")
	require.NoError(t, err)
	require.Zero(t, visible, "the sweep's setting opens nothing to the service role")
}

func withUser(t *testing.T, rawURL, user string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	u.User = url.User(user)
	return u.String()
}
