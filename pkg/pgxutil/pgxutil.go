// Package pgxutil holds the PostgreSQL plumbing the services share:
// connecting (traced and measured with WithTelemetry), and running
// statements for one tenant under row-level security.
//
// Every table that holds an organization's rows has row-level security
// enabled and forced, with policies comparing organization_id to the
// transaction-local setting migrations.TenantSetting. InTenantTx and
// QueueTenant are the only places that set it, so a statement run any other
// way sees no tenant rows at all.
package pgxutil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// Option adjusts a pool Open or Connect makes.
type Option func(*options)

type options struct {
	tel              telemetry.Providers
	maxConns         int32
	statementTimeout time.Duration
}

// WithTelemetry instruments the pool with a service's providers: a span per
// query, batch, prepare, COPY and connect (child spans of the caller's
// span only: a statement outside a traced call makes none), named by the
// SQL operation, with the statement text but never its parameters; the
// db.client.operation.duration histogram through tel.Meter; and the pool's
// statistics as observable pgxpool.* instruments (see ObservePool).
func WithTelemetry(tel telemetry.Providers) Option {
	return func(o *options) { o.tel = tel }
}

// WithMaxConns caps the pool at n connections (n > 0), overriding the
// URL's pool_max_conns; without it the pool takes the URL's value, else
// pgxpool's default (the larger of 4 and the number of CPUs).
func WithMaxConns(n int32) Option {
	return func(o *options) { o.maxConns = n }
}

// WithStatementTimeout sets statement_timeout on every connection of the
// pool (d > 0), for a pool that serves only statements that must never run
// longer: it also bounds what a per-transaction setting cannot, such as
// the parsing of a statement waiting for a lock.
func WithStatementTimeout(d time.Duration) Option {
	return func(o *options) { o.statementTimeout = d }
}

// Open returns a connection pool that connects lazily: nothing is dialled
// until the first query, so a service whose database is down at start
// still starts, stays NOT_SERVING and gets ready once the database answers
// (see Ready). Only a malformed url is an error. applicationName shows in
// pg_stat_activity and names the pool in its metrics.
func Open(url, applicationName string, opts ...Option) (*pgxpool.Pool, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parse error can quote the URL, password included.
		return nil, errors.New("parsing the database URL: it is not a valid PostgreSQL connection string")
	}
	if o.maxConns > 0 {
		cfg.MaxConns = o.maxConns
		cfg.MinConns = min(cfg.MinConns, o.maxConns)
	}
	if o.statementTimeout > 0 {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(max(o.statementTimeout.Milliseconds(), 1), 10)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = applicationName
	}
	if o.tel.Tracer != nil || o.tel.Meter != nil {
		cfg.ConnConfig.Tracer = Tracer(o.tel, semconv.DBClientConnectionPoolName(cfg.ConnConfig.RuntimeParams["application_name"]))
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("opening a pool for PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	if o.tel.Meter != nil {
		if err := ObservePool(pool, o.tel.Meter); err != nil {
			pool.Close()
			return nil, fmt.Errorf("observing the PostgreSQL pool: %w", err)
		}
	}
	return pool, nil
}

// Tracer is the pgx tracer WithTelemetry sets (for a pgx.ConnConfig built
// elsewhere): otelpgx with tel's providers (a nil one is a no-op), query
// parameters never recorded, no span per pool acquire (the pool metrics
// say how long acquiring takes), and attrs on its metrics.
func Tracer(tel telemetry.Providers, attrs ...attribute.KeyValue) *otelpgx.Tracer {
	var tp trace.TracerProvider = tracenoop.NewTracerProvider()
	if tel.Tracer != nil {
		tp = tel.Tracer
	}
	var mp metric.MeterProvider = metricnoop.NewMeterProvider()
	if tel.Meter != nil {
		mp = tel.Meter
	}
	return otelpgx.NewTracer(
		otelpgx.WithTracerProvider(tp),
		otelpgx.WithMeterProvider(mp),
		otelpgx.WithMeterAttributes(attrs...),
		otelpgx.WithDisableAcquireTracer(),
	)
}

// ObservePool reports pool's statistics through mp, read at most once a
// second when a reader collects: pgxpool.acquired_connections,
// idle_connections, constructing_connections, total_connections and
// max_connections (gauges), and the cumulative pgxpool.acquires,
// acquire_duration (ns), empty_acquire (acquires that had to wait),
// empty_acquire_wait_time (ns), canceled_acquires, new_connections,
// max_idle_destroys and max_lifetime_destroys, each with db.system.name
// and db.client.connection.pool.name (the application name). The
// instruments live as long as mp: a closed pool reports its last state.
func ObservePool(pool *pgxpool.Pool, mp metric.MeterProvider) error {
	name := pool.Config().ConnConfig.RuntimeParams["application_name"]
	return otelpgx.RecordStats(pool,
		otelpgx.WithStatsMeterProvider(mp),
		otelpgx.WithStatsAttributes(semconv.DBClientConnectionPoolName(name)))
}

// Connect is Open followed by a check that the database answers, for
// commands that should fail at once when it does not.
func Connect(ctx context.Context, url, applicationName string, opts ...Option) (*pgxpool.Pool, error) {
	pool, err := Open(url, applicationName, opts...)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		cc := pool.Config().ConnConfig
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s:%d as %s: %w", cc.Host, cc.Port, cc.User, err)
	}
	return pool, nil
}

// Ready is a service's readiness check on PostgreSQL: the database answers
// and its schema passes checkSchema (the migration version this binary
// needs). The first time it passes it logs the connection (LogConnection),
// which needs the database too. It is meant for grpcserver.Gate, which
// retries it until it passes.
func Ready(db *pgxpool.Pool, logger *slog.Logger, service string, checkSchema func(context.Context) error) func(context.Context) error {
	var logged sync.Once
	return func(ctx context.Context) error {
		if err := db.Ping(ctx); err != nil {
			cc := db.Config().ConnConfig
			return fmt.Errorf("PostgreSQL at %s:%d does not answer (%w); retrying", cc.Host, cc.Port, err)
		}
		if err := checkSchema(ctx); err != nil {
			return err
		}
		logged.Do(func() { LogConnection(ctx, logger, db, service) })
		return nil
	}
}

// setTenantSQL scopes the current transaction to one organization.
const setTenantSQL = "SELECT set_config('" + migrations.TenantSetting + "', $1, true)"

// Beginner is a pool or a connection.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// InTenantTx runs fn in a transaction scoped to organization org: row-level
// security shows fn only that organization's rows and rejects writes of any
// other. The transaction commits when fn returns nil and rolls back
// otherwise.
func InTenantTx(ctx context.Context, db Beginner, org string, fn func(pgx.Tx) error) error {
	if org == "" {
		return errors.New("pgxutil: empty organization id")
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setTenantSQL, org); err != nil {
			return fmt.Errorf("setting the tenant: %w", err)
		}
		return fn(tx)
	})
}

// QueueTenant queues the tenant setting as the first statement of a batch.
// A batch sent outside a transaction runs as one implicit transaction, so
// the setting covers every statement queued after it, up to the next
// QueueTenant of the same batch, and nothing else: a tenant-scoped read or
// write in a single round trip, or several organizations' writes in one
// group commit, each under its own tenant.
func QueueTenant(b *pgx.Batch, org string) {
	b.Queue(setTenantSQL, org)
}

// SchemaVersionQuery returns a query function for migrations.Set.CheckVersion.
func SchemaVersionQuery(db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}) func(context.Context, string) (int64, error) {
	return func(ctx context.Context, sql string) (int64, error) {
		var v int64
		err := db.QueryRow(ctx, sql).Scan(&v)
		return v, err
	}
}

// LogConnection says where a service's store is — host, port, database and
// user, never the password — and warns when the role would defeat
// row-level security (a superuser or a role with BYPASSRLS), since then
// only the queries keep organizations apart.
func LogConnection(ctx context.Context, logger *slog.Logger, pool *pgxpool.Pool, service string) {
	cc := pool.Config().ConnConfig
	logger.InfoContext(ctx, service+" uses PostgreSQL", "host", cc.Host, "port", cc.Port, "database", cc.Database, "user", cc.User)
	var bypasses bool
	err := pool.QueryRow(ctx, "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user").Scan(&bypasses)
	switch {
	case err != nil:
		logger.WarnContext(ctx, service+" could not check its database role", "error", err)
	case bypasses:
		logger.WarnContext(ctx, service+"'s database role bypasses row-level security, so only the queries keep organizations apart; connect as "+migrations.AppRole, "user", cc.User)
	}
}
