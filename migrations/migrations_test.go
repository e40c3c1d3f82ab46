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
	require.Len(t, tables, 5, "settings, accounts, usage_records, activities, progress_events")
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
