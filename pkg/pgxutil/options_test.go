package pgxutil_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

// WithMaxConns overrides the URL's pool_max_conns; WithStatementTimeout
// reaches every connection of the pool.
func TestPoolOptions(t *testing.T) {
	pool, err := pgxutil.Open("postgres://u@127.0.0.1:1/db?pool_max_conns=9&pool_min_conns=5", "test", pgxutil.WithMaxConns(3))
	require.NoError(t, err)
	require.Equal(t, int32(3), pool.Config().MaxConns)
	require.Equal(t, int32(3), pool.Config().MinConns, "never more idle connections than the cap")
	pool.Close()

	pool, err = pgxutil.Open("postgres://u@127.0.0.1:1/db?pool_max_conns=9", "test")
	require.NoError(t, err)
	require.Equal(t, int32(9), pool.Config().MaxConns, "without the option the URL decides")
	pool.Close()

	pool, err = pgxutil.Open(pgtest.AdminURL(t), "test", pgxutil.WithStatementTimeout(1500*time.Millisecond))
	require.NoError(t, err)
	defer pool.Close()
	var timeout string
	require.NoError(t, pool.QueryRow(t.Context(), "SHOW statement_timeout").Scan(&timeout))
	require.Equal(t, "1500ms", timeout)
}
