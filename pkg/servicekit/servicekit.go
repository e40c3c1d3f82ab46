// Package servicekit is the start-up shell AccountPool and Activity share:
// which store to open, the readiness gate a PostgreSQL store serves
// behind, and the serve lifecycle (background work, shutdown in
// dependency order). The Orchestrator has no store and does not use it.
package servicekit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// The stores a service can run on.
const (
	// StoreMemory is the embedded in-memory store: nothing to install,
	// nothing kept across restarts. For development.
	StoreMemory = "memory"
	// StorePostgres is PostgreSQL, at a database URL. For production.
	StorePostgres = "postgres"
)

// ChooseStore is the one place the store is chosen: kind when it is set,
// else StorePostgres when a database URL is, else StoreMemory. A
// PostgreSQL store without a URL and an unknown kind are errors that say
// what to set.
func ChooseStore(kind, databaseURL string) (string, error) {
	switch kind {
	case "":
		if databaseURL != "" {
			return StorePostgres, nil
		}
		return StoreMemory, nil
	case StoreMemory:
		return StoreMemory, nil
	case StorePostgres:
		if databaseURL == "" {
			return "", errors.New("store \"postgres\" needs a database URL: set SWITCHYARD_DATABASE_URL (or DATABASE_URL) to a connection string for the switchyard_app role")
		}
		return StorePostgres, nil
	default:
		return "", fmt.Errorf("unknown store %q; known stores: %q, %q", kind, StoreMemory, StorePostgres)
	}
}

// Postgres is an open PostgreSQL pool and the gate that holds calls back
// until the database answers and its schema is at set's latest version.
type Postgres struct {
	Pool *pgxpool.Pool
	Gate *grpcserver.Gate
}

// OpenPostgres opens a lazily connecting pool for the service (name is
// its application_name), traced and measured through tel (query spans
// without parameters, pool gauges), and its readiness gate. Nothing is
// dialled yet: a database that is down at start is waited for by the gate,
// not fatal. opts add to the pool's options (WithMaxConns).
func OpenPostgres(databaseURL, name string, set migrations.Set, logger *slog.Logger, tel telemetry.Providers, opts ...pgxutil.Option) (Postgres, error) {
	db, err := pgxutil.Open(databaseURL, "switchyard-"+name, append([]pgxutil.Option{pgxutil.WithTelemetry(tel)}, opts...)...)
	if err != nil {
		return Postgres{}, err
	}
	gate := grpcserver.NewGate(pgxutil.Ready(db, logger, name, func(ctx context.Context) error {
		return set.CheckVersion(ctx, pgxutil.SchemaVersionQuery(db))
	}))
	return Postgres{Pool: db, Gate: gate}, nil
}

// Gated adds the gate's interceptors to a server's configuration; a nil
// gate adds nothing.
func Gated(cfg grpcserver.Config, gate *grpcserver.Gate) grpcserver.Config {
	if gate != nil {
		cfg.UnaryInterceptors = append(cfg.UnaryInterceptors, gate.UnaryInterceptor())
		cfg.StreamInterceptors = append(cfg.StreamInterceptors, gate.StreamInterceptor())
	}
	return cfg
}

// Lifecycle is what Serve runs around a server.
type Lifecycle struct {
	// Name is the service's, for log lines.
	Name string
	// Gate, when set, keeps the server NOT_SERVING until the store is
	// ready (checked every ReadinessInterval); without one it serves at
	// once.
	Gate              *grpcserver.Gate
	ReadinessInterval time.Duration
	// Background runs from the start; AfterReady once the gate has opened
	// (at once without a gate). Both end, and are waited for, when the
	// server has shut down and before Close.
	Background []func(ctx context.Context)
	AfterReady []func(ctx context.Context)
	// Close releases the store after the last call and the last
	// background function.
	Close func()
	// Logger; required.
	Logger *slog.Logger
}

// Serve serves srv until ctx ends, then shuts down in dependency order: the
// calls in flight finish (grpcserver.Server.Serve), the background work
// stops, and the store is released. It returns nil after a shutdown caused
// by ctx.
func Serve(ctx context.Context, srv *grpcserver.Server, lc Lifecycle) error {
	if lc.Close != nil {
		defer lc.Close()
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, fn := range lc.Background {
		wg.Go(func() { fn(runCtx) })
	}
	afterReady := func() {
		for _, fn := range lc.AfterReady {
			wg.Go(func() { fn(runCtx) })
		}
	}
	if gate := lc.Gate; gate != nil {
		wg.Go(func() {
			gate.Run(runCtx, srv, lc.Logger, lc.ReadinessInterval)
			if gate.Err() == nil {
				lc.Logger.InfoContext(runCtx, lc.Name+": the database schema is current; serving")
				afterReady()
			}
		})
	} else {
		srv.SetServing(true)
		afterReady()
	}
	err := srv.Serve(ctx)
	// The background work may use the store: let it end before it closes.
	stop()
	wg.Wait()
	return err
}
