package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

func TestMigrateUpStatusDown(t *testing.T) {
	schema := pgtest.NewEmptySchema(t)
	ctx := context.Background()
	migrate := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append([]string{"migrate", "-database-url", schema.OwnerURL}, args...), &out, &errOut)
		return out.String(), err
	}

	out, err := migrate("status")
	require.NoError(t, err)
	require.Contains(t, out, "pending")

	out, err = migrate("up")
	require.NoError(t, err)
	require.Contains(t, out, "accountpool: applied 00001_init.sql")
	require.Contains(t, out, "activity: at version 3")

	out, err = migrate("up")
	require.NoError(t, err, "up is idempotent")
	require.NotContains(t, out, "applied")

	out, err = migrate("status")
	require.NoError(t, err)
	require.NotContains(t, out, "pending")

	_, err = migrate("down")
	require.ErrorContains(t, err, "-service", "down refuses to guess which data to drop")

	out, err = migrate("-service", "activity", "down")
	require.NoError(t, err)
	require.Contains(t, out, "activity: rolled back 00003_change_feed.sql")
	out, err = migrate("status")
	require.NoError(t, err)
	require.Contains(t, out, "pending")

	_, err = migrate("sideways")
	require.ErrorContains(t, err, "unknown migrate subcommand")
	_, err = migrate("-service", "billing", "up")
	require.ErrorContains(t, err, "billing")
}

func TestMigrateNeedsADatabaseURL(t *testing.T) {
	t.Setenv(envMigrateDatabaseURL, "")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"migrate", "up"}, &out, &errOut)
	require.ErrorContains(t, err, envMigrateDatabaseURL)
}
