package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func TestHourSpan(t *testing.T) {
	h := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name           string
		start, end     time.Time
		wantLo, wantHi time.Time
		whole          bool
	}{
		{"aligned", h, h.Add(3 * time.Hour), h, h.Add(3 * time.Hour), true},
		{"partial edges", h.Add(time.Microsecond), h.Add(3*time.Hour - time.Microsecond), h.Add(time.Hour), h.Add(2 * time.Hour), true},
		{"inside one hour", h.Add(time.Minute), h.Add(59 * time.Minute), h.Add(time.Hour), h, false},
		{"across one boundary, no whole hour", h.Add(30 * time.Minute), h.Add(90 * time.Minute), h.Add(time.Hour), h.Add(time.Hour), false},
		{"unbounded start", time.Time{}, h.Add(30 * time.Minute), time.Time{}, h, true},
		{"unbounded end", h.Add(30 * time.Minute), time.Time{}, h.Add(time.Hour), time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, whole := hourSpan(tc.start, tc.end)
			require.Equal(t, tc.whole, whole)
			require.True(t, tc.wantLo.Equal(lo), "lo %s", lo)
			require.True(t, tc.wantHi.Equal(hi), "hi %s", hi)
		})
	}
}

// A usage read that runs longer than UsageTimeout is stopped by the
// database and reported as store.ErrQueryTimeout, not as the caller's
// deadline nor as an outage. A lock held on the table stands in for a
// slow read: statement_timeout counts the wait for it.
func TestUsageReadsHaveAStatementTimeout(t *testing.T) {
	f := newFixture(t, Config{UsageTimeout: 200 * time.Millisecond})
	ctx := t.Context()
	org := "org-timeout"
	_, err := f.store.InsertUsage(ctx, usageRow(org, "r1", 1))
	require.NoError(t, err)

	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	filter := store.UsageFilter{Start: start, End: start.Add(24 * time.Hour)}
	// Prepared once: the timeout is set by the read's first statement, so
	// it covers the execution of the next, not the parsing that preceded
	// both (pgx prepares a batch's new statements first).
	_, err = f.store.SumUsage(ctx, org, filter)
	require.NoError(t, err)
	_, _, err = f.store.ListUsage(ctx, org, filter, 10, nil)
	require.NoError(t, err)

	for _, table := range []string{"usage_rollups", "usage_records"} {
		t.Run(table, func(t *testing.T) {
			tx, err := f.owner.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(context.Background()) }()
			_, err = tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE")
			require.NoError(t, err)

			if table == "usage_records" {
				_, _, err = f.store.ListUsage(ctx, org, filter, 10, nil)
			} else {
				_, err = f.store.SumUsage(ctx, org, filter)
			}
			require.ErrorIs(t, err, store.ErrQueryTimeout)
			require.NotErrorIs(t, err, store.ErrUnavailable)
			require.ErrorContains(t, err, "longer than the 200ms a usage query may take")
		})
	}

	// The timeout is the read's own: the next statement on the same
	// connection runs without it.
	totals, err := f.store.SumUsage(ctx, org, store.UsageFilter{})
	require.NoError(t, err)
	require.Len(t, totals, 1)
}

// Usage reads run on UsageDB only: with its one connection taken, a read
// waits (and gives up at its caller's deadline) while the ledger, on the
// store's own pool, still writes.
func TestUsageReadsUseTheirOwnPool(t *testing.T) {
	f := newFixture(t, Config{})
	cfg, err := pgxpool.ParseConfig(f.schema.AppURL)
	require.NoError(t, err)
	cfg.MaxConns = 1
	usageDB, err := pgxpool.NewWithConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(usageDB.Close)
	s := New(f.store.db, Config{UsageDB: usageDB, Logger: discard()})
	t.Cleanup(s.Close)
	ctx := t.Context()

	held, err := usageDB.Acquire(ctx)
	require.NoError(t, err)
	_, err = s.InsertUsage(ctx, usageRow("org-pools", "r1", 1))
	require.NoError(t, err, "the ledger does not need the usage pool")
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = s.SumUsage(short, "org-pools", store.UsageFilter{})
	require.ErrorIs(t, err, context.DeadlineExceeded, "the read waits for the usage pool, within its deadline")
	held.Release()

	totals, err := s.SumUsage(ctx, "org-pools", store.UsageFilter{})
	require.NoError(t, err)
	require.Len(t, totals, 1)
}

// The rollups hold what the ledger holds, row for row: a duplicate the
// ledger refused adds nothing, and each (account, model, hour) has one
// rollup row.
func TestRollupsFollowTheLedger(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := t.Context()
	org := "org-rollup"
	r := usageRow(org, "r1", 1)
	_, err := f.store.InsertUsage(ctx, r)
	require.NoError(t, err)
	dup := r
	dup.ID, dup.InputTokens = "00000000-0000-4000-8000-000000000001", 999
	_, err = f.store.InsertUsage(ctx, dup)
	require.ErrorIs(t, err, store.ErrDuplicate)
	later := usageRow(org, "r2", 1)
	later.AccountID, later.CreateTime = r.AccountID, r.CreateTime.Add(10*time.Minute)
	_, err = f.store.InsertUsage(ctx, later)
	require.NoError(t, err)

	var rows, requests, input int64
	require.NoError(t, f.owner.QueryRow(ctx, `SELECT count(*), sum(requests), sum(input_tokens) FROM usage_rollups WHERE organization_id = $1`, org).
		Scan(&rows, &requests, &input))
	require.Equal(t, int64(1), rows, "one account, model and hour")
	require.Equal(t, int64(2), requests)
	require.Equal(t, int64(20), input, "the refused duplicate's tokens are not counted")
}

// A page of ListUsage is an index range scan in the listing's order, with
// or without an account filter: no sort of the organization's rows. (The
// planner is kept off sequential scans, which on a tiny table it would
// rightly prefer.)
func TestListUsageReadsAnIndexInOrder(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := t.Context()
	conn, err := f.owner.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, "SET enable_seqscan = off")
	require.NoError(t, err)
	start := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	after := &store.UsageCursor{CreateTime: start.Add(time.Hour), ID: "00000000-0000-4000-8000-000000000001"}
	for _, tc := range []struct {
		name, account, index string
	}{
		{"organization", "", "usage_records_org_time"},
		{"account", "00000000-0000-4000-8000-0000000000a1", "usage_records_org_account_time_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			query, args := listUsageQuery("org", store.UsageFilter{Start: start, End: start.Add(24 * time.Hour)}, tc.account, 100, after)
			rows, err := conn.Query(ctx, "EXPLAIN (COSTS OFF) "+query, args...)
			require.NoError(t, err)
			plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			text := strings.Join(plan, "\n")
			require.Contains(t, text, tc.index, text)
			require.NotContains(t, text, "Sort", text)
		})
	}
}

// SumUsage reads the rollups' primary key for the whole hours and the
// ledger's time index for the edges: no sequential scan of either.
func TestSumUsageReadsIndexes(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := t.Context()
	conn, err := f.owner.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, "SET enable_seqscan = off")
	require.NoError(t, err)
	start := time.Date(2026, 5, 1, 0, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, account string
		indexes       []string
	}{
		// Which of the ledger's two indexes serves the edges without an
		// account depends on the statistics (an empty table here).
		{"organization", "", []string{"usage_rollups_pkey", "Index Scan using usage_records_org_"}},
		{"account", "00000000-0000-4000-8000-0000000000a1", []string{"usage_rollups_pkey", "usage_records_org_account_time_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			query, args := sumUsageQuery("org", start, start.Add(48*time.Hour+time.Minute), tc.account)
			rows, err := conn.Query(ctx, "EXPLAIN (COSTS OFF) "+query, args...)
			require.NoError(t, err)
			plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			text := strings.Join(plan, "\n")
			for _, index := range tc.indexes {
				require.Contains(t, text, index, text)
			}
			require.NotContains(t, text, "Seq Scan", text)
		})
	}
}
