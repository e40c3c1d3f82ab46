package pgstore_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/pgstore"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/storetest"
)

// connect opens a pool on url as the service would, closed when the test
// ends.
func connect(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxutil.Connect(context.Background(), url, "pgstore-test")
	require.NoError(t, err)
	t.Cleanup(db.Close)
	return db
}

// newStore returns a store on a fresh migrated schema, connected as the
// application role, and the schema.
func newStore(t testing.TB, cfg pgstore.Config) (*pgstore.Store, pgtest.Schema) {
	t.Helper()
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := pgstore.New(connect(t, schema.AppURL), cfg)
	t.Cleanup(s.Close) // runs before the pool's Close: cleanups are LIFO
	return s, schema
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := newStore(t, pgstore.Config{})
		return s
	})
}
