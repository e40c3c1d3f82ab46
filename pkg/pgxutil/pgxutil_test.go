package pgxutil_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

func appPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	schema := pgtest.NewSchema(t, migrations.All()...)
	pool, err := pgxutil.Connect(context.Background(), schema.AppURL, "pgxutil-test")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func insertActivity(ctx context.Context, tx pgx.Tx, org string) error {
	_, err := tx.Exec(ctx, `INSERT INTO activities (organization_id, id, session_id, user_id, agent_type, agent_name, category, status, start_time)
		VALUES ($1, $2, 's', 'u', 'ai_executor', 'built-in', 'quick', 'running', $3)`, org, uuid.New(), time.Now())
	return err
}

func countActivities(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM activities`).Scan(&n)
	return n, err
}

// The row-level security guarantees, as the service role: no tenant
// setting sees nothing, organization A never sees B's rows, and A cannot
// write a row of B.
func TestRowLevelSecurityAsTheServiceRole(t *testing.T) {
	ctx := context.Background()
	pool := appPool(t)
	for _, org := range []string{"org-a", "org-a", "org-b"} {
		require.NoError(t, pgxutil.InTenantTx(ctx, pool, org, func(tx pgx.Tx) error { return insertActivity(ctx, tx, org) }))
	}

	n, err := countActivities(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, n, "without the tenant setting the service role sees no rows")

	require.NoError(t, pgxutil.InTenantTx(ctx, pool, "org-a", func(tx pgx.Tx) error {
		var orgs []string
		rows, err := tx.Query(ctx, `SELECT organization_id FROM activities`)
		if err != nil {
			return err
		}
		orgs, err = pgx.CollectRows(rows, pgx.RowTo[string])
		require.Equal(t, []string{"org-a", "org-a"}, orgs)
		return err
	}))

	err = pgxutil.InTenantTx(ctx, pool, "org-a", func(tx pgx.Tx) error { return insertActivity(ctx, tx, "org-b") })
	require.ErrorContains(t, err, "row-level security", "writing B's row while acting as A fails")

	err = pgxutil.InTenantTx(ctx, pool, "org-a", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE activities SET category = 'hijacked' WHERE organization_id = 'org-b'`)
		require.Zero(t, tag.RowsAffected(), "A cannot touch B's rows")
		return err
	})
	require.NoError(t, err)

	// The setting is transaction-local: it does not leak to the next user
	// of the pooled connection.
	n, err = countActivities(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestQueueTenantScopesOneBatch(t *testing.T) {
	ctx := context.Background()
	pool := appPool(t)
	require.NoError(t, pgxutil.InTenantTx(ctx, pool, "org-a", func(tx pgx.Tx) error { return insertActivity(ctx, tx, "org-a") }))

	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, "org-a")
	var inBatch int
	b.Queue(`SELECT count(*) FROM activities`).QueryRow(func(r pgx.Row) error { return r.Scan(&inBatch) })
	require.NoError(t, conn.SendBatch(ctx, b).Close())
	require.Equal(t, 1, inBatch, "statements queued after the setting see the tenant's rows")

	after, err := countActivities(ctx, conn)
	require.NoError(t, err)
	require.Zero(t, after, "the setting ends with the batch's implicit transaction")
}

func TestConnectErrorsDoNotLeakThePassword(t *testing.T) {
	_, err := pgxutil.Connect(context.Background(), "postgres://u:hunter2-secret@127.0.0.1:1/db?connect_timeout=1", "x")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2-secret")
	_, err = pgxutil.Connect(context.Background(), "postgres://u:hunter2-secret@[bad", "x")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "hunter2-secret")
}
