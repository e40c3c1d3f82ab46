package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

func TestLatestVersions(t *testing.T) {
	for _, set := range migrations.All() {
		v, err := set.Latest()
		require.NoError(t, err)
		require.Positive(t, v, set.Name)
	}
	_, err := migrations.ByName("nope")
	require.Error(t, err)
}

// Every table in a migrated schema that has an organization_id column has
// row-level security enabled and forced, with a policy; and the service
// role owns nothing and cannot bypass it.
func TestEveryTenantTableHasForcedRowLevelSecurity(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.All()...)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, schema.OwnerURL)
	require.NoError(t, err)
	defer conn.Close(ctx)

	rows, err := conn.Query(ctx, `
		SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
		       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind = 'r'
		  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped)`,
		schema.Name)
	require.NoError(t, err)
	type table struct {
		name            string
		enabled, forced bool
		policies        int64
	}
	var tables []table
	for rows.Next() {
		var tb table
		require.NoError(t, rows.Scan(&tb.name, &tb.enabled, &tb.forced, &tb.policies))
		tables = append(tables, tb)
	}
	require.NoError(t, rows.Err())
	require.Len(t, tables, 7, "settings, accounts, usage_records, usage_rollups, default_keys, activities, progress_events")
	for _, tb := range tables {
		require.True(t, tb.enabled, "%s: row-level security enabled", tb.name)
		require.True(t, tb.forced, "%s: row-level security forced", tb.name)
		require.Positive(t, tb.policies, "%s: has a policy", tb.name)
	}

	var owns int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1`, migrations.AppRole).Scan(&owns))
	require.Zero(t, owns, "the service role owns nothing")
	var super, bypass bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, migrations.AppRole).Scan(&super, &bypass))
	require.False(t, super)
	require.False(t, bypass)
}

func TestCheckVersionAsTheServiceRole(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	ctx := context.Background()
	pool, err := pgxutil.Connect(ctx, schema.AppURL, "test")
	require.NoError(t, err)
	defer pool.Close()
	require.NoError(t, migrations.AccountPool.CheckVersion(ctx, pgxutil.SchemaVersionQuery(pool)))
	err = migrations.Activity.CheckVersion(ctx, pgxutil.SchemaVersionQuery(pool))
	require.ErrorIs(t, err, migrations.ErrNotMigrated, "activity was not migrated in this schema")
	require.ErrorContains(t, err, "switchyard migrate up")
}

func TestDownThenUpAgain(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.All()...)
	pgtest.Down(t, schema.OwnerURL, migrations.All()...)
	pgtest.Migrate(t, schema.OwnerURL, migrations.All()...)
}

func TestCheckVersionTellsADownDatabaseFromAMissingSchema(t *testing.T) {
	ctx := context.Background()
	err := migrations.Activity.CheckVersion(ctx, func(context.Context, string) (int64, error) {
		return 0, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
	})
	require.Error(t, err)
	require.NotErrorIs(t, err, migrations.ErrNotMigrated)
	require.NotContains(t, err.Error(), "migrate up")

	err = migrations.Activity.CheckVersion(ctx, func(context.Context, string) (int64, error) { return 0, nil })
	require.ErrorIs(t, err, migrations.ErrNotMigrated)
	err = migrations.Activity.CheckVersion(ctx, func(context.Context, string) (int64, error) { return 99, nil })
	require.ErrorContains(t, err, "newer than this binary")
}

// Version 2 registers the organizations of accounts created before it, and
// of every account created after it.
func TestOrganizationsRegistryBackfillsAndFollows(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewEmptySchema(t)
	db, err := sql.Open("pgx", schema.OwnerURL)
	require.NoError(t, err)
	defer db.Close()
	p, err := migrations.AccountPool.Provider(db, nil)
	require.NoError(t, err)
	_, err = p.UpTo(ctx, 1)
	require.NoError(t, err)

	pool, err := pgxutil.Connect(ctx, schema.AppURL, "test")
	require.NoError(t, err)
	defer pool.Close()
	insert := func(org string) {
		require.NoError(t, pgxutil.InTenantTx(ctx, pool, org, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO accounts (id, organization_id, name, tier, status, weight, priority, key_ciphertext, key_version, create_time, update_time)
				VALUES (gen_random_uuid(), $1, 'a', 'tier1', 'active', 1, 0, '\x00', 1, now(), now())`, org)
			return err
		}))
	}
	insert("before")
	_, err = p.Up(ctx)
	require.NoError(t, err)
	insert("after")

	rows, err := pool.Query(ctx, `SELECT id FROM organizations ORDER BY id`)
	require.NoError(t, err)
	orgs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"after", "before"}, orgs)
}

// The sweep function of activity version 2 runs as its owner on a fixed
// search path, and only the service role may execute it.
func TestAbandonFunctionIsLockedDown(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.Activity)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, schema.OwnerURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var (
		definer  bool
		config   []string
		public   bool
		appMayDo bool
	)
	require.NoError(t, conn.QueryRow(ctx, `
		SELECT p.prosecdef, p.proconfig,
		       EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee = 0),
		       has_function_privilege($2, p.oid, 'EXECUTE')
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND p.proname = 'abandon_expired'`, schema.Name, migrations.AppRole).Scan(&definer, &config, &public, &appMayDo))
	require.True(t, definer)
	require.Contains(t, config, "search_path="+schema.Name+", pg_temp")
	require.False(t, public, "PUBLIC may not execute it")
	require.True(t, appMayDo)
	for _, args := range []string{"now(), interval '-1 second', 10", "now(), interval '1 second', 0"} {
		_, err := conn.Exec(ctx, "SELECT "+schema.Name+".abandon_expired("+args+")")
		require.ErrorContains(t, err, "grace must not be negative and max_rows must be positive", args)
	}
}

// Rolling activity back to version 1 keeps abandoned activities, as
// FAILED: version 1 knows no ABANDONED.
func TestActivityDownKeepsAbandonedAsFailed(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	pool, err := pgxutil.Connect(ctx, schema.AppURL, "test")
	require.NoError(t, err)
	defer pool.Close()
	require.NoError(t, pgxutil.InTenantTx(ctx, pool, "org", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO activities (organization_id, id, session_id, user_id, agent_type, agent_name, category, status, start_time, deadline)
			VALUES ('org', gen_random_uuid(), '', '', '', '', '', 'running', now() - interval '1 hour', now() - interval '1 hour')`)
		return err
	}))
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT abandon_expired(now(), interval '1 second', 10)`).Scan(&n))
	require.Equal(t, 1, n)

	db, err := sql.Open("pgx", schema.OwnerURL)
	require.NoError(t, err)
	defer db.Close()
	p, err := migrations.Activity.Provider(db, nil)
	require.NoError(t, err)
	_, err = p.DownTo(ctx, 1)
	require.NoError(t, err)
	var status, reason string
	require.NoError(t, pgxutil.InTenantTx(ctx, pool, "org", func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT status, error_message FROM activities`).Scan(&status, &reason)
	}))
	require.Equal(t, "failed", status)
	require.Contains(t, reason, "abandoned: no completion by the deadline")
	_, err = p.Up(ctx)
	require.NoError(t, err)
}

// Legacy rows written before default keys existed ran on the environment
// key under the name "default", which now names the organization's own
// key: accountpool version 4 renames them, and its down migration names
// them "default" again.
func TestDefaultKeysMigrationRenamesOldLegacyRows(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewEmptySchema(t)
	db, err := sql.Open("pgx", schema.OwnerURL)
	require.NoError(t, err)
	defer db.Close()
	p, err := migrations.AccountPool.Provider(db, nil)
	require.NoError(t, err)
	_, err = p.UpTo(ctx, 3)
	require.NoError(t, err)

	pool, err := pgxutil.Connect(ctx, schema.AppURL, "test")
	require.NoError(t, err)
	defer pool.Close()
	require.NoError(t, pgxutil.InTenantTx(ctx, pool, "org", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO usage_records (id, organization_id, account_id, account_name, request_id, attempt, outcome, model, category,
				session_id, user_id, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, http_status, error_type,
				upstream_request_id, duration_ms, create_time)
			VALUES (gen_random_uuid(), 'org', NULL, 'default', 'legacy', 1, 'success', 'm', 'quick', '', '', 1, 1, 0, 0, 0, 200, '', 'u1', 1, now()),
			       (gen_random_uuid(), 'org', gen_random_uuid(), 'default', 'pooled', 1, 'success', 'm', 'quick', '', '', 1, 1, 0, 0, 0, 200, '', 'u2', 1, now())`)
		return err
	}))
	names := func() map[string]string {
		out := map[string]string{}
		require.NoError(t, pgxutil.InTenantTx(ctx, pool, "org", func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT request_id, account_name FROM usage_records`)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id, name string
				if err := rows.Scan(&id, &name); err != nil {
					return err
				}
				out[id] = name
			}
			return rows.Err()
		}))
		return out
	}

	_, err = p.UpTo(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"legacy": "environment", "pooled": "default"}, names(), "only legacy rows are renamed; an account named default keeps its name")
	_, err = p.DownTo(ctx, 3)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"legacy": "default", "pooled": "default"}, names())
}
