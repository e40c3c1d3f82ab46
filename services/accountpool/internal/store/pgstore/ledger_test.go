package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func dial(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxutil.Connect(context.Background(), url, "pgstore-test")
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

// fixture is a store on a fresh schema plus an owner connection that sees
// every organization's rows (the owner is a superuser in tests, so
// row-level security does not apply to it): the observer that checks
// what was committed.
type fixture struct {
	t      testing.TB
	store  *Store
	owner  *pgxpool.Pool
	schema pgtest.Schema
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	cfg.Logger = discard()
	s := New(dial(t, schema.AppURL), cfg)
	t.Cleanup(s.Close)
	return &fixture{t: t, store: s, owner: dial(t, schema.OwnerURL), schema: schema}
}

func usageRow(org, requestID string, attempt int32) store.UsageRecord {
	return store.UsageRecord{
		ID: uuid.NewString(), OrganizationID: org, AccountID: uuid.NewString(), AccountName: "acct",
		RequestID: requestID, Attempt: attempt, Outcome: store.OutcomeSuccess, Model: "claude-sonnet-4-5",
		InputTokens: 10, OutputTokens: 2, CostUSD: 0.001, HTTPStatus: 200,
		CreateTime: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
	}
}

// committedID returns the id of the committed row holding the key, as
// another session sees it, or "" when there is none.
func (f *fixture) committedID(org, requestID string, attempt int32) string {
	f.t.Helper()
	var ids []string
	rows, err := f.owner.Query(context.Background(),
		`SELECT id::text FROM usage_records WHERE organization_id = $1 AND request_id = $2 AND attempt = $3`, org, requestID, attempt)
	require.NoError(f.t, err)
	for rows.Next() {
		var id string
		require.NoError(f.t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(f.t, rows.Err())
	require.LessOrEqual(f.t, len(ids), 1)
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

type answer struct {
	row store.UsageRecord
	err error
	// committed is the id another session saw right after the answer.
	committed string
}

// holdWriter parks the ledger's writer: it inserts org's key
// ("held", 1) in an owner transaction left open, then hands the same key
// to the store, whose INSERT must wait for that transaction. It returns
// once the writer's statement is waiting on the lock. release rolls the
// owner transaction back, so the held row is written after all, and
// returns the held caller's answer.
func (f *fixture) holdWriter(org string) (release func() answer) {
	f.t.Helper()
	ctx := context.Background()
	tx, err := f.owner.Begin(ctx)
	require.NoError(f.t, err)
	var pid int
	require.NoError(f.t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	held := usageRow(org, "held", 1)
	_, err = tx.Exec(ctx, `INSERT INTO usage_records (id, organization_id, account_name, request_id, attempt, outcome, model, category,
		session_id, user_id, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, http_status,
		error_type, upstream_request_id, duration_ms, create_time)
		VALUES ($1, $2, 'x', 'held', 1, 'success', '', '', '', '', 0, 0, 0, 0, 0, 200, '', '', 0, now())`, uuid.NewString(), org)
	require.NoError(f.t, err)

	done := make(chan answer, 1)
	go func() {
		r, err := f.store.InsertUsage(ctx, held)
		done <- answer{row: r, err: err}
	}()
	require.Eventually(f.t, func() bool {
		var waiting int
		err := f.owner.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid))`, pid).Scan(&waiting)
		return err == nil && waiting == 1
	}, 10*time.Second, 5*time.Millisecond, "the writer's INSERT waits for the open transaction")
	return func() answer {
		select {
		case a := <-done:
			f.t.Fatalf("the held row was acknowledged before its transaction could commit: %+v", a)
		default:
		}
		require.NoError(f.t, tx.Rollback(ctx))
		return <-done
	}
}

// TestGroupCommit: many concurrent inserts over several organizations,
// each key sent three times and some keys already stored, all land exactly
// once, every caller of a key sees the same row, every answer comes after
// the row is visible to another session (acknowledged means committed),
// and they share transactions.
func TestGroupCommit(t *testing.T) {
	const (
		maxBatch = 32
		callers  = 600
		copies   = 3
	)
	f := newFixture(t, Config{MaxBatch: maxBatch})
	ctx := t.Context()
	orgs := []string{"org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString()}

	type key struct {
		org, req string
	}
	keyOfCaller := func(i int) key {
		k := i / copies
		return key{orgs[k%len(orgs)], fmt.Sprintf("req-%d", k)}
	}
	// Some keys exist before the burst: every one of their callers gets
	// the stored row and ErrDuplicate.
	stored := map[key]string{}
	for i := 0; i < callers; i += copies * 10 {
		k := keyOfCaller(i)
		r, err := f.store.InsertUsage(ctx, usageRow(k.org, k.req, 1))
		require.NoError(t, err)
		stored[k] = r.ID
	}
	flushesBefore := f.store.ledger.flushes.Load()

	release := f.holdWriter(orgs[0])

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[key][]answer{}
	)
	for i := range callers {
		wg.Go(func() {
			k := keyOfCaller(i)
			r, err := f.store.InsertUsage(ctx, usageRow(k.org, k.req, 1))
			a := answer{row: r, err: err}
			if err == nil || errors.Is(err, store.ErrDuplicate) {
				a.committed = f.committedID(k.org, k.req, 1)
			}
			mu.Lock()
			defer mu.Unlock()
			answers[k] = append(answers[k], a)
		})
	}
	// While the writer is parked every caller queues up behind it.
	require.Eventually(t, func() bool { return len(f.store.ledger.queue) == maxBatch }, 10*time.Second, time.Millisecond)
	held := release()
	require.NoError(t, held.err)
	wg.Wait()

	require.Len(t, answers, callers/copies)
	for k, as := range answers {
		require.Len(t, as, copies)
		created := 0
		for _, a := range as {
			if a.err == nil {
				created++
			} else {
				require.ErrorIs(t, a.err, store.ErrDuplicate, "key %v", k)
			}
			require.Equal(t, a.row.ID, a.committed, "a caller of %v was answered before its row was visible to another session", k)
			require.Equal(t, as[0].row.ID, a.row.ID, "every caller of %v sees the same row", k)
			require.Equal(t, k.req, a.row.RequestID)
			require.Equal(t, k.org, a.row.OrganizationID)
		}
		if id, ok := stored[k]; ok {
			require.Zero(t, created, "key %v was stored before the burst", k)
			require.Equal(t, id, as[0].row.ID)
		} else {
			require.Equal(t, 1, created, "exactly one caller of %v created its row", k)
		}
	}
	for _, org := range orgs {
		var n int
		require.NoError(t, f.owner.QueryRow(ctx, `SELECT count(*) FROM usage_records WHERE organization_id = $1`, org).Scan(&n))
		want := callers / copies / len(orgs)
		if org == orgs[0] {
			want++ // the held row
		}
		require.Equal(t, want, n, "organization %s", org)
	}
	// The callers shared transactions: one per caller would be 600 flushes;
	// full batches are 20 (the held one, then 600/32). Callers scheduled
	// late can make a few batches smaller than full.
	flushes := f.store.ledger.flushes.Load() - flushesBefore
	require.Less(t, flushes, int64(callers/4), "group commit batched the waiting callers")
}

// TestGroupCommitIsolatesARejectedRow: a row the database refuses fails
// alone; the rows that happened to share its batch are written.
func TestGroupCommitIsolatesARejectedRow(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := t.Context()
	org := "org-" + uuid.NewString()
	release := f.holdWriter(org)

	bad := usageRow(org, "bad", 1)
	bad.SessionID = "nul\x00byte" // PostgreSQL text cannot hold NUL
	results := make(chan answer, 11)
	go func() {
		r, err := f.store.InsertUsage(ctx, bad)
		results <- answer{row: r, err: err}
	}()
	for i := range 10 {
		go func() {
			r, err := f.store.InsertUsage(ctx, usageRow(org, fmt.Sprintf("good-%d", i), 1))
			results <- answer{row: r, err: err}
		}()
	}
	require.Eventually(t, func() bool { return len(f.store.ledger.queue) == 11 }, 10*time.Second, time.Millisecond)
	require.NoError(t, release().err)

	var failed int
	for range 11 {
		a := <-results
		if a.err != nil {
			failed++
			require.NotErrorIs(t, a.err, store.ErrUnavailable, "a rejected row is not an outage")
			require.Contains(t, a.err.Error(), "writing 1 usage rows")
			continue
		}
		require.Equal(t, a.row.ID, f.committedID(org, a.row.RequestID, 1))
	}
	require.Equal(t, 1, failed)
	require.Empty(t, f.committedID(org, "bad", 1))
}

// TestInsertRespectsTheCallersContext: a caller whose context ends while
// its row waits is answered at once, and a row whose caller gave up
// before the writer reached it is not written.
func TestInsertRespectsTheCallersContext(t *testing.T) {
	f := newFixture(t, Config{})
	org := "org-" + uuid.NewString()
	release := f.holdWriter(org)

	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := f.store.InsertUsage(ctx, usageRow(org, "impatient", 1))
		gaveUp <- err
	}()
	require.Eventually(t, func() bool { return len(f.store.ledger.queue) == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled, "answered while the writer is still parked")

	require.NoError(t, release().err)
	// A later row flushes after the abandoned one was skipped.
	_, err := f.store.InsertUsage(t.Context(), usageRow(org, "later", 1))
	require.NoError(t, err)
	require.Empty(t, f.committedID(org, "impatient", 1))
}

// TestCloseDrains: Close writes and answers every row already handed to
// the ledger before it returns, and later inserts fail as unavailable.
func TestCloseDrains(t *testing.T) {
	f := newFixture(t, Config{MaxBatch: 8})
	ctx := t.Context()
	org := "org-" + uuid.NewString()
	release := f.holdWriter(org)

	const n = 20
	results := make(chan answer, n)
	for i := range n {
		go func() {
			r, err := f.store.InsertUsage(ctx, usageRow(org, fmt.Sprintf("r-%d", i), 1))
			results <- answer{row: r, err: err}
		}()
	}
	require.Eventually(t, func() bool { return len(f.store.ledger.queue) == 8 }, 10*time.Second, time.Millisecond)
	closed := make(chan struct{})
	go func() {
		f.store.Close()
		close(closed)
	}()
	require.NoError(t, release().err)
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
		require.Equal(t, a.row.ID, f.committedID(org, a.row.RequestID, 1))
	}
	require.GreaterOrEqual(t, written, 8, "every row queued before Close was written")
	_, err := f.store.InsertUsage(ctx, usageRow(org, "after-close", 1))
	require.ErrorIs(t, err, store.ErrUnavailable)
}

// TestUnreachableDatabaseIsUnavailable: connection failures surface as
// store.ErrUnavailable, which api answers with codes.Unavailable.
func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	pgtest.AdminURL(t) // a PostgreSQL test like the others: skipped or required together
	db, err := pgxpool.New(context.Background(), "postgres://switchyard_app@127.0.0.1:1/none?connect_timeout=1")
	require.NoError(t, err) // connects lazily
	t.Cleanup(db.Close)
	s := New(db, Config{Logger: discard()})
	t.Cleanup(s.Close)
	ctx := t.Context()
	org := "org-" + uuid.NewString()

	_, err = s.GetAccount(ctx, org, uuid.NewString())
	require.ErrorIs(t, err, store.ErrUnavailable)
	_, err = s.ListAccounts(ctx, org)
	require.ErrorIs(t, err, store.ErrUnavailable)
	require.ErrorIs(t, s.PutSettings(ctx, store.DefaultSettings(org)), store.ErrUnavailable)

	errs := make(chan error, 5)
	for i := range 5 {
		go func() {
			_, err := s.InsertUsage(ctx, usageRow(org, fmt.Sprintf("r-%d", i), 1))
			errs <- err
		}()
	}
	for range 5 {
		require.ErrorIs(t, <-errs, store.ErrUnavailable, "every caller of a failed flush gets its error")
	}
}

// BenchmarkInsertUsage measures RecordRequest's ledger write at
// parallelism: memstore, pgstore with group commit, and pgstore with
// group commit off (one transaction per row). rows/flush is the mean
// group-commit batch.
func BenchmarkInsertUsage(b *testing.B) {
	for _, bc := range []struct {
		name string
		open func(b *testing.B) (store.Store, *ledger)
	}{
		{"store=memory", func(*testing.B) (store.Store, *ledger) { return memstore.New(), nil }},
		{"store=postgres", func(b *testing.B) (store.Store, *ledger) {
			f := newFixture(b, Config{})
			return f.store, f.store.ledger
		}},
		{"store=postgres/batch=1", func(b *testing.B) (store.Store, *ledger) {
			f := newFixture(b, Config{MaxBatch: 1})
			return f.store, f.store.ledger
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, l := bc.open(b)
			orgs := []string{"org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString(), "org-" + uuid.NewString()}
			ctx := context.Background()
			b.SetParallelism(16) // many RPCs in flight per CPU, as under load
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				requestID := uuid.NewString()
				for i := 0; pb.Next(); i++ {
					r := usageRow(orgs[i%len(orgs)], requestID, int32(i+1))
					if _, err := s.InsertUsage(ctx, r); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if l != nil && l.flushes.Load() > 0 {
				b.ReportMetric(float64(l.rows.Load())/float64(l.flushes.Load()), "rows/flush")
			}
		})
	}
}
