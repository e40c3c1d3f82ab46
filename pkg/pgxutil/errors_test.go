package pgxutil_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
)

func pgError(code string) *pgconn.PgError {
	return &pgconn.PgError{Severity: "ERROR", Code: code, Message: "test error " + code}
}

// retryClaim stands for a pgconn error that says whether it failed before
// sending anything, as pgconn's own write and lock errors do.
type retryClaim struct {
	safe  bool
	cause error
}

func (e retryClaim) Error() string {
	return fmt.Sprintf("failed (safe to retry: %t): %v", e.safe, e.cause)
}
func (e retryClaim) SafeToRetry() bool { return e.safe }
func (e retryClaim) Unwrap() error     { return e.cause }

func TestClassifyServerErrors(t *testing.T) {
	tests := []struct {
		code string
		want pgxutil.ErrorClass
	}{
		{pgerrcode.TransactionResolutionUnknown, pgxutil.ClassUnknownOutcome},
		{pgerrcode.StatementCompletionUnknown, pgxutil.ClassUnknownOutcome},

		{pgerrcode.ReadOnlySQLTransaction, pgxutil.ClassRetryable},
		{pgerrcode.SerializationFailure, pgxutil.ClassRetryable},
		{pgerrcode.DeadlockDetected, pgxutil.ClassRetryable},
		{pgerrcode.LockNotAvailable, pgxutil.ClassRetryable},
		{pgerrcode.QueryCanceled, pgxutil.ClassRetryable},
		{pgerrcode.AdminShutdown, pgxutil.ClassRetryable},
		{pgerrcode.CrashShutdown, pgxutil.ClassRetryable},
		{pgerrcode.CannotConnectNow, pgxutil.ClassRetryable},
		{pgerrcode.IdleSessionTimeout, pgxutil.ClassRetryable},
		{pgerrcode.TooManyConnections, pgxutil.ClassRetryable},
		{pgerrcode.InsufficientResources, pgxutil.ClassRetryable},
		{pgerrcode.DiskFull, pgxutil.ClassRetryable},
		{pgerrcode.OutOfMemory, pgxutil.ClassRetryable},
		{pgerrcode.ConfigurationLimitExceeded, pgxutil.ClassRetryable},
		{pgerrcode.ConnectionException, pgxutil.ClassRetryable},
		{pgerrcode.ConnectionDoesNotExist, pgxutil.ClassRetryable},
		{pgerrcode.ConnectionFailure, pgxutil.ClassRetryable},
		{pgerrcode.SQLClientUnableToEstablishSQLConnection, pgxutil.ClassRetryable},
		{pgerrcode.SQLServerRejectedEstablishmentOfSQLConnection, pgxutil.ClassRetryable},
		{pgerrcode.ProtocolViolation, pgxutil.ClassRetryable},
		{"08ZZZ", pgxutil.ClassRetryable}, // a code pgerrcode does not know goes by its class
		{"53ZZZ", pgxutil.ClassRetryable},

		{pgerrcode.UniqueViolation, pgxutil.ClassPermanent},
		{pgerrcode.ForeignKeyViolation, pgxutil.ClassPermanent},
		{pgerrcode.NotNullViolation, pgxutil.ClassPermanent},
		{pgerrcode.CheckViolation, pgxutil.ClassPermanent},
		{pgerrcode.ExclusionViolation, pgxutil.ClassPermanent},
		{pgerrcode.StringDataRightTruncationDataException, pgxutil.ClassPermanent},
		{pgerrcode.InvalidTextRepresentation, pgxutil.ClassPermanent},
		{pgerrcode.UndefinedTable, pgxutil.ClassPermanent},
		{pgerrcode.UndefinedColumn, pgxutil.ClassPermanent},
		{pgerrcode.InsufficientPrivilege, pgxutil.ClassPermanent},
		{pgerrcode.InvalidPassword, pgxutil.ClassPermanent},
		{pgerrcode.InvalidCatalogName, pgxutil.ClassPermanent},
		{pgerrcode.IdleInTransactionSessionTimeout, pgxutil.ClassPermanent},
		{pgerrcode.TransactionIntegrityConstraintViolation, pgxutil.ClassPermanent},
		{pgerrcode.DatabaseDropped, pgxutil.ClassPermanent},
		{pgerrcode.InternalError, pgxutil.ClassPermanent},
		{"", pgxutil.ClassPermanent},
		{"08", pgxutil.ClassPermanent}, // not a SQLSTATE
	}
	for _, tc := range tests {
		t.Run(tc.code, func(t *testing.T) {
			err := pgError(tc.code)
			require.Equal(t, tc.want, pgxutil.Classify(err), "bare")
			require.Equal(t, tc.want, pgxutil.Classify(fmt.Errorf("writing: %w", err)), "wrapped")
			require.Equal(t, tc.want, pgxutil.Classify(fmt.Errorf("a: %w", fmt.Errorf("b: %w", err))), "wrapped twice")
		})
	}
}

func TestClassifyOtherErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want pgxutil.ErrorClass
	}{
		{"nil", nil, pgxutil.ClassNone},

		{"canceled", context.Canceled, pgxutil.ClassContextDone},
		{"deadline", context.DeadlineExceeded, pgxutil.ClassContextDone},
		{"wrapped canceled", fmt.Errorf("listing: %w", context.Canceled), pgxutil.ClassContextDone},
		{"wrapped deadline", fmt.Errorf("listing: %w", context.DeadlineExceeded), pgxutil.ClassContextDone},
		{"canceled before anything was sent", retryClaim{safe: true, cause: context.Canceled}, pgxutil.ClassContextDone},
		{"the server's answer wins over a context error", errors.Join(context.Canceled, pgError(pgerrcode.UniqueViolation)), pgxutil.ClassPermanent},

		{"safe to retry", retryClaim{safe: true, cause: net.ErrClosed}, pgxutil.ClassRetryable},
		{"wrapped safe to retry", fmt.Errorf("x: %w", retryClaim{safe: true, cause: net.ErrClosed}), pgxutil.ClassRetryable},

		{"conn closed", pgconn.ErrConnClosed, pgxutil.ClassUnknownOutcome},
		{"conn closed, claiming safe to retry", fmt.Errorf("x: %w", retryClaim{safe: true, cause: pgconn.ErrConnClosed}), pgxutil.ClassUnknownOutcome},
		{"not safe to retry", retryClaim{safe: false, cause: &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}}, pgxutil.ClassUnknownOutcome},
		{"EOF", io.EOF, pgxutil.ClassUnknownOutcome},
		{"unexpected EOF", fmt.Errorf("receiving: %w", io.ErrUnexpectedEOF), pgxutil.ClassUnknownOutcome},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, pgxutil.ClassUnknownOutcome},
		{"network timeout", fmt.Errorf("x: %w", os.ErrDeadlineExceeded), pgxutil.ClassUnknownOutcome},

		{"no rows", pgx.ErrNoRows, pgxutil.ClassPermanent},
		{"tx closed", pgx.ErrTxClosed, pgxutil.ClassPermanent},
		{"unknown", errors.New("cannot scan"), pgxutil.ClassPermanent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, pgxutil.Classify(tc.err))
		})
	}
}

func TestClassifyConnectErrors(t *testing.T) {
	// silent accepts connections and never answers the startup message.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })
	go func() {
		var accepted []net.Conn
		defer func() {
			for _, c := range accepted {
				_ = c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			accepted = append(accepted, c)
		}
	}()
	silentURL := "postgres://nobody@" + silent.Addr().String() + "/none?sslmode=disable"

	t.Run("refused", func(t *testing.T) {
		_, err := pgconn.Connect(t.Context(), "postgres://nobody@127.0.0.1:1/none?sslmode=disable")
		requireConnectError(t, err)
		require.Equal(t, pgxutil.ClassRetryable, pgxutil.Classify(err), "%v", err)
		require.Equal(t, pgxutil.ClassRetryable, pgxutil.Classify(fmt.Errorf("pinging: %w", err)))
	})
	t.Run("connect_timeout", func(t *testing.T) {
		cfg, err := pgconn.ParseConfig(silentURL)
		require.NoError(t, err)
		cfg.ConnectTimeout = 50 * time.Millisecond
		_, err = pgconn.ConnectConfig(t.Context(), cfg)
		requireConnectError(t, err)
		require.ErrorIs(t, err, context.DeadlineExceeded, "connect_timeout is a context deadline, but not the caller's")
		require.Equal(t, pgxutil.ClassRetryable, pgxutil.Classify(err), "%v", err)
	})
	t.Run("the caller gave up", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := pgconn.Connect(ctx, silentURL)
		requireConnectError(t, err)
		require.Equal(t, pgxutil.ClassContextDone, pgxutil.Classify(err), "%v", err)
	})
}

func requireConnectError(t *testing.T, err error) {
	t.Helper()
	var connectErr *pgconn.ConnectError
	require.ErrorAs(t, err, &connectErr)
}

func TestIsUniqueViolation(t *testing.T) {
	require.False(t, pgxutil.IsUniqueViolation(nil))
	require.True(t, pgxutil.IsUniqueViolation(pgError(pgerrcode.UniqueViolation)))
	require.True(t, pgxutil.IsUniqueViolation(fmt.Errorf("creating: %w", pgError(pgerrcode.UniqueViolation))))
	require.False(t, pgxutil.IsUniqueViolation(pgError(pgerrcode.ExclusionViolation)))
	require.False(t, pgxutil.IsUniqueViolation(errors.New("23505")))
}

func TestErrorClassString(t *testing.T) {
	for c, want := range map[pgxutil.ErrorClass]string{
		pgxutil.ClassNone:           "None",
		pgxutil.ClassPermanent:      "Permanent",
		pgxutil.ClassRetryable:      "Retryable",
		pgxutil.ClassUnknownOutcome: "UnknownOutcome",
		pgxutil.ClassContextDone:    "ContextDone",
		pgxutil.ErrorClass(42):      "ErrorClass(42)",
	} {
		require.Equal(t, want, c.String())
	}
}

// TestClassifyRealServerErrors provokes each error on PostgreSQL itself,
// so the codes the table relies on are the ones the server sends.
func TestClassifyRealServerErrors(t *testing.T) {
	ctx := t.Context()
	schema := pgtest.NewEmptySchema(t)
	connect := func(t *testing.T) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, schema.OwnerURL)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	setup := connect(t)
	_, err := setup.Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)`)
	require.NoError(t, err)
	_, err = setup.Exec(ctx, `INSERT INTO items VALUES (1, 0), (2, 0)`)
	require.NoError(t, err)

	requireClass := func(t *testing.T, want pgxutil.ErrorClass, code string, err error) {
		t.Helper()
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, code, pgErr.Code, pgErr.Message)
		require.Equal(t, want, pgxutil.Classify(err))
	}

	t.Run("unique violation", func(t *testing.T) {
		_, err := connect(t).Exec(ctx, `INSERT INTO items VALUES (1, 0)`)
		requireClass(t, pgxutil.ClassPermanent, pgerrcode.UniqueViolation, err)
		require.True(t, pgxutil.IsUniqueViolation(err))
	})
	t.Run("statement timeout", func(t *testing.T) {
		c := connect(t)
		_, err := c.Exec(ctx, `SET statement_timeout = '1ms'`)
		require.NoError(t, err)
		_, err = c.Exec(ctx, `SELECT pg_sleep(1)`)
		requireClass(t, pgxutil.ClassRetryable, pgerrcode.QueryCanceled, err)
	})
	t.Run("read-only transaction", func(t *testing.T) {
		err := pgx.BeginTxFunc(ctx, connect(t), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `UPDATE items SET n = n + 1 WHERE id = 1`)
			return err
		})
		requireClass(t, pgxutil.ClassRetryable, pgerrcode.ReadOnlySQLTransaction, err)
	})
	t.Run("serialization failure", func(t *testing.T) {
		slow := connect(t)
		tx, err := slow.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		var n int
		require.NoError(t, tx.QueryRow(ctx, `SELECT n FROM items WHERE id = 1`).Scan(&n))
		_, err = connect(t).Exec(ctx, `UPDATE items SET n = n + 1 WHERE id = 1`)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `UPDATE items SET n = $1 WHERE id = 1`, n+1)
		requireClass(t, pgxutil.ClassRetryable, pgerrcode.SerializationFailure, err)
	})
	t.Run("lock timeout", func(t *testing.T) {
		holder, err := connect(t).Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = holder.Rollback(ctx) }()
		_, err = holder.Exec(ctx, `SELECT 1 FROM items WHERE id = 2 FOR UPDATE`)
		require.NoError(t, err)
		waiter := connect(t)
		_, err = waiter.Exec(ctx, `SET lock_timeout = '10ms'`)
		require.NoError(t, err)
		_, err = waiter.Exec(ctx, `UPDATE items SET n = n + 1 WHERE id = 2`)
		requireClass(t, pgxutil.ClassRetryable, pgerrcode.LockNotAvailable, err)
	})
	t.Run("deadlock", func(t *testing.T) {
		a, b := connect(t), connect(t)
		for _, c := range []*pgx.Conn{a, b} {
			// Detects the deadlock at once instead of after the default
			// second; only superusers may, so others just wait longer.
			_, _ = c.Exec(ctx, `SET deadlock_timeout = '10ms'`)
		}
		txA, err := a.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = txA.Rollback(ctx) }()
		txB, err := b.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = txB.Rollback(ctx) }()
		_, err = txA.Exec(ctx, `SELECT 1 FROM items WHERE id = 1 FOR UPDATE`)
		require.NoError(t, err)
		_, err = txB.Exec(ctx, `SELECT 1 FROM items WHERE id = 2 FOR UPDATE`)
		require.NoError(t, err)

		errA := make(chan error, 1)
		go func() {
			_, err := txA.Exec(ctx, `SELECT 1 FROM items WHERE id = 2 FOR UPDATE`)
			errA <- err
		}()
		_, errB := txB.Exec(ctx, `SELECT 1 FROM items WHERE id = 1 FOR UPDATE`)
		if errB == nil {
			// A was the victim; B got the lock once A's transaction aborted.
			errB = <-errA
		} else {
			_ = txB.Rollback(ctx) // lets A through
			require.NoError(t, <-errA)
		}
		requireClass(t, pgxutil.ClassRetryable, pgerrcode.DeadlockDetected, errB)
	})
}

// TestClassifyBrokenConnection breaks a real connection on the client side:
// before a statement is sent, and while it runs. Dials after the first one
// fail, as in a network partition, so pgconn's cancel request cannot stop
// the running statement either.
func TestClassifyBrokenConnection(t *testing.T) {
	ctx := t.Context()
	schema := pgtest.NewEmptySchema(t)
	observer, err := pgx.Connect(ctx, schema.OwnerURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = observer.Close(context.Background()) })
	_, err = observer.Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	// Row 4 takes half a second to commit: the trigger runs at COMMIT.
	_, err = observer.Exec(ctx, `CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN IF NEW.id = 4 THEN PERFORM pg_sleep(0.5); END IF; RETURN NULL; END $$`)
	require.NoError(t, err)
	_, err = observer.Exec(ctx, `CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON items
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`)
	require.NoError(t, err)

	partitioned := func(t *testing.T) (*pgx.Conn, net.Conn) {
		t.Helper()
		cfg, err := pgx.ParseConfig(schema.OwnerURL)
		require.NoError(t, err)
		var (
			dialled atomic.Int32
			raw     net.Conn
			dialer  net.Dialer
		)
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dialled.Add(1) > 1 {
				return nil, errors.New("network partitioned")
			}
			c, err := dialer.DialContext(ctx, network, addr)
			raw = c
			return c, err
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return conn, raw
	}
	countItems := func(t *testing.T, id int) int {
		t.Helper()
		var n int
		require.NoError(t, observer.QueryRow(ctx, `SELECT count(*) FROM items WHERE id = $1`, id).Scan(&n))
		return n
	}

	t.Run("before the statement is sent", func(t *testing.T) {
		conn, raw := partitioned(t)
		require.NoError(t, raw.Close())
		_, err := conn.Exec(ctx, `INSERT INTO items VALUES (1)`)
		require.Error(t, err)
		require.True(t, pgconn.SafeToRetry(err), "%v", err)
		require.Equal(t, pgxutil.ClassRetryable, pgxutil.Classify(err), "%v", err)
		require.Zero(t, countItems(t, 1))

		// Nothing was sent this time either, but the error is the one a
		// connection breaking mid-statement also gives (below).
		_, err = conn.Exec(ctx, `INSERT INTO items VALUES (1)`)
		require.ErrorIs(t, err, pgconn.ErrConnClosed)
		require.Equal(t, pgxutil.ClassUnknownOutcome, pgxutil.Classify(err), "%v", err)
	})
	for _, tc := range []struct {
		name string
		id   int
		exec func(*pgx.Conn) error
	}{
		{"while a statement runs, extended protocol", 2, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, `INSERT INTO items SELECT $1 FROM pg_sleep(0.5)`, 2)
			return err
		}},
		{"while a statement runs, simple protocol", 3, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, `INSERT INTO items SELECT 3 FROM pg_sleep(0.5)`)
			require.True(t, pgconn.SafeToRetry(err), "pgx claims a statement it sent was not: %v", err)
			return err
		}},
		{"while a transaction commits", 4, func(c *pgx.Conn) error {
			err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO items VALUES (4)`)
				return err
			})
			require.True(t, pgconn.SafeToRetry(err), "pgx claims a COMMIT it sent was not: %v", err)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, raw := partitioned(t)
			time.AfterFunc(100*time.Millisecond, func() { _ = raw.Close() })
			err := tc.exec(conn)
			require.Error(t, err)
			require.Equal(t, pgxutil.ClassUnknownOutcome, pgxutil.Classify(err), "%v", err)
			require.Eventually(t, func() bool { return countItems(t, tc.id) == 1 }, 10*time.Second, 20*time.Millisecond,
				"the write the client saw fail committed: that is why its outcome is unknown")
		})
	}
}
