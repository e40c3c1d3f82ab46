package migrations_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

// Accountpool version 5 backfills the hourly usage rollups from the rows
// already in the ledger, and its trigger then adds every row inserted
// after it, once; down drops the rollups and up rebuilds them.
func TestUsageRollupsBackfillAndFollow(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewEmptySchema(t)
	db, err := sql.Open("pgx", schema.OwnerURL)
	require.NoError(t, err)
	defer db.Close()
	p, err := migrations.AccountPool.Provider(db, nil)
	require.NoError(t, err)
	_, err = p.UpTo(ctx, 4)
	require.NoError(t, err)

	pool, err := pgxutil.Connect(ctx, schema.AppURL, "test")
	require.NoError(t, err)
	defer pool.Close()
	insert := func(org, requestID, account string, at string, tokens int) {
		t.Helper()
		require.NoError(t, pgxutil.InTenantTx(ctx, pool, org, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO usage_records (id, organization_id, account_id, account_name, request_id, attempt, outcome, model, category,
					session_id, user_id, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, http_status, error_type,
					upstream_request_id, duration_ms, create_time)
				VALUES (gen_random_uuid(), $1, NULLIF($2, '')::uuid, 'acct', $3, 1, 'success', 'm', 'quick', '', '', $4, 1, 0, 0, 0.5, 200, '', 'u', 1, $5::timestamptz)
				ON CONFLICT DO NOTHING`, org, account, requestID, tokens, at)
			return err
		}))
	}
	const acct = "7d4a3c1e-0000-4000-8000-000000000001"
	insert("org", "before-1", acct, "2026-05-01T12:10:00Z", 1)
	insert("org", "before-2", acct, "2026-05-01T12:50:00Z", 2)
	insert("org", "before-3", "", "2026-05-01T13:00:00Z", 4)
	insert("other", "before-1", acct, "2026-05-01T12:10:00Z", 8)

	type bucket struct {
		org, account, hour string
		requests, input    int64
	}
	rollups := func() []bucket {
		t.Helper()
		rows, err := db.QueryContext(ctx, `SELECT organization_id, account_id, to_char(bucket AT TIME ZONE 'UTC', 'HH24'), requests, input_tokens
			FROM usage_rollups ORDER BY 1, 3, 2`)
		require.NoError(t, err)
		defer rows.Close()
		var out []bucket
		for rows.Next() {
			var b bucket
			require.NoError(t, rows.Scan(&b.org, &b.account, &b.hour, &b.requests, &b.input))
			out = append(out, b)
		}
		require.NoError(t, rows.Err())
		return out
	}

	_, err = p.UpTo(ctx, 5)
	require.NoError(t, err)
	backfilled := []bucket{{"org", acct, "12", 2, 3}, {"org", "", "13", 1, 4}, {"other", acct, "12", 1, 8}}
	require.Equal(t, backfilled, rollups())

	insert("org", "after-1", acct, "2026-05-01T12:30:00Z", 16)
	insert("org", "after-1", acct, "2026-05-01T12:30:00Z", 32) // a duplicate: refused, not counted
	after := []bucket{{"org", acct, "12", 3, 19}, {"org", "", "13", 1, 4}, {"other", acct, "12", 1, 8}}
	require.Equal(t, after, rollups())

	_, err = p.DownTo(ctx, 4)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `SELECT 1 FROM usage_rollups`)
	require.Error(t, err, "down drops the rollups")
	_, err = p.UpTo(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, after, rollups(), "up again rebuilds them from the ledger")
}
