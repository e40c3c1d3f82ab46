// Package activity is the Activity service: it records the lifecycle of
// agent activities (RUNNING, then COMPLETED or FAILED) and their progress
// events, for the Orchestrator to write and for operators to read, over
// the ActivityService gRPC contract. The rules are documented in
// internal/tracker; storage in internal/store.
//
// While it serves, a reaper (internal/reaper) marks activities still
// RUNNING after their deadline plus Config.AbandonGrace as ABANDONED,
// sweeping every Config.ReaperInterval.
//
// WatchActivities streams an organization's changes until the client
// leaves; at shutdown such streams end at once with Unavailable (see
// grpcserver.Config.Watches), for the client to resume elsewhere with its
// last cursor. A watch hears of this replica's writes at once and of other
// replicas' every Config.WatchPollInterval.
//
// A program runs it with Run, or with New and Serve when it needs the
// listening address first (port 0, tests, switchyard dev).
//
// It keeps activities in memory (development) or in PostgreSQL
// (production). On PostgreSQL it never migrates the schema itself: until
// the schema is at the version this binary needs (`switchyard migrate up`),
// health reports NOT_SERVING and every call is answered Unavailable with
// what to run.
package activity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/servicekit"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/services/activity/internal/api"
	"github.com/switchyard-dev/switchyard/services/activity/internal/reaper"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/pgstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// DefaultAddr is where the service listens unless Config.Addr says
// otherwise; AccountPool and the Orchestrator use the neighbouring ports.
const DefaultAddr = "127.0.0.1:50053"

// The stores Config.Store can name (chosen by servicekit.ChooseStore).
const (
	StoreMemory   = servicekit.StoreMemory
	StorePostgres = servicekit.StorePostgres
)

// Reaper defaults: an activity is abandoned within about 40 seconds of its
// deadline. The grace covers clock skew between the Orchestrator and this
// service and a TrackComplete still in flight at the deadline.
const (
	DefaultAbandonGrace   = 30 * time.Second
	DefaultReaperInterval = 10 * time.Second
)

// DefaultWatchPollInterval is Config.WatchPollInterval's default.
const DefaultWatchPollInterval = tracker.DefaultWatchPoll

// readinessInterval is how often a service on PostgreSQL re-checks the
// schema version while it is not serving.
const readinessInterval = 5 * time.Second

// Config configures the service. Every field but Logger has a usable zero
// value.
type Config struct {
	// Addr is the TCP address to listen on; default DefaultAddr. Port 0
	// picks a free port, which Service.Addr reports.
	Addr string
	// Logger receives start-up notices, one line per call, and the causes
	// of internal errors and of an unavailable store, which callers never
	// see. Required: a service that cannot say why it failed is not run.
	Logger *slog.Logger
	// Telemetry carries the trace and metric providers and the propagator
	// for the gRPC server. The zero value falls back to the OpenTelemetry
	// globals, which are no-ops unless the process installs providers.
	Telemetry telemetry.Providers
	// Now is the clock for start, progress and completion times, and so
	// for durations; default time.Now. Tests set it to pin them.
	Now func() time.Time
	// Store selects the storage backend: StoreMemory or StorePostgres.
	// Empty means StorePostgres when DatabaseURL is set, else
	// StoreMemory; a Store that is set wins over DatabaseURL. The choice
	// is made in one place, openStore.
	Store string
	// DatabaseURL is the PostgreSQL connection string (URL or key=value
	// form) for StorePostgres. It must connect as the switchyard_app role
	// (migrations.AppRole), which owns nothing and cannot bypass
	// row-level security, never as the schema owner, with the schema
	// that `switchyard migrate up` migrated on its search path. The
	// commands read it from SWITCHYARD_DATABASE_URL, else DATABASE_URL.
	// It is never logged: it may hold a password.
	DatabaseURL string
	// Tokens authenticates callers (see pkg/auth). Required unless
	// InsecureNoAuth is set.
	Tokens *auth.Tokens
	// InsecureNoAuth serves without authentication or authorization: any
	// caller may act for any organization. Tests and local experiments only.
	InsecureNoAuth bool
	// TLS, when set, serves TLS only (pkg/tlsconfig builds mutual TLS).
	TLS *tls.Config
	// GRPCLimits bounds what any caller can make the server hold
	// (connections, streams, headers, message sizes, idle and read time);
	// zero fields take grpcserver's defaults.
	GRPCLimits grpcserver.Limits
	// InsecurePlaintext allows serving without TLS on an address other
	// machines reach (see grpcserver.Config.InsecurePlaintext); without
	// it such an Addr is refused unless TLS is set.
	InsecurePlaintext bool
	// AbandonGrace is how long after its deadline a RUNNING activity is
	// marked ABANDONED; default DefaultAbandonGrace. Negative is an error.
	AbandonGrace time.Duration
	// ReaperInterval is how often the reaper sweeps for such activities;
	// default DefaultReaperInterval. Negative is an error.
	ReaperInterval time.Duration
	// WatchPollInterval is how often each WatchActivities stream reads
	// the store without being woken by a write of this replica: how late
	// at worst it sends a change another replica made on the same
	// database. Each poll is one indexed query per open stream. Default
	// DefaultWatchPollInterval; negative is an error.
	WatchPollInterval time.Duration
}

// Service is the Activity service, listening but not yet serving.
type Service struct {
	srv     *grpcserver.Server
	logger  *slog.Logger
	backend backend
	reaper  *reaper.Reaper
}

// backend is an open store and what serving it takes.
type backend struct {
	store store.Store
	// gate, when set, holds calls back until the store is ready; without
	// one the service serves at once.
	gate *grpcserver.Gate
	// close releases the store after the last call.
	close func()
}

// New opens the store, listens on cfg.Addr and registers the handlers.
// Health stays NOT_SERVING until Serve, and on PostgreSQL until the schema
// is at the version this binary needs.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		return nil, errors.New("activity: Config.Logger is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.AbandonGrace < 0 || cfg.ReaperInterval < 0 {
		return nil, fmt.Errorf("activity: the abandon grace (%s) and the reaper interval (%s) must not be negative", cfg.AbandonGrace, cfg.ReaperInterval)
	}
	if cfg.WatchPollInterval < 0 {
		return nil, fmt.Errorf("activity: the watch poll interval (%s) must not be negative", cfg.WatchPollInterval)
	}
	if cfg.AbandonGrace == 0 {
		cfg.AbandonGrace = DefaultAbandonGrace
	}
	if cfg.ReaperInterval == 0 {
		cfg.ReaperInterval = DefaultReaperInterval
	}
	unary, stream, err := auth.ServerInterceptors(cfg.Tokens, cfg.InsecureNoAuth, api.Policy(), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("activity: %w", err)
	}
	be, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	tr := tracker.New(be.store, tracker.Config{Now: cfg.Now, WatchPoll: cfg.WatchPollInterval})
	handlers := api.New(tr, cfg.Logger)
	scfg := grpcserver.Config{
		Addr:               cfg.Addr,
		Name:               "activity",
		Logger:             cfg.Logger,
		Telemetry:          cfg.Telemetry,
		TLS:                cfg.TLS,
		DefaultTimeout:     30 * time.Second,
		Limits:             cfg.GRPCLimits,
		Admit:              auth.Admission(cfg.Tokens),
		InsecurePlaintext:  cfg.InsecurePlaintext,
		UnaryInterceptors:  unary,
		StreamInterceptors: stream,
		Watches:            []string{activityv1.ActivityService_WatchActivities_FullMethodName},
	}
	srv, err := grpcserver.New(servicekit.Gated(scfg, be.gate), func(r grpc.ServiceRegistrar) {
		activityv1.RegisterActivityServiceServer(r, handlers)
	})
	if err != nil {
		be.close()
		return nil, fmt.Errorf("activity: %w", err)
	}
	return &Service{srv: srv, logger: cfg.Logger, backend: be, reaper: reaper.New(tr, cfg.AbandonGrace, cfg.ReaperInterval, cfg.Logger)}, nil
}

// openStore opens the store servicekit.ChooseStore names.
func openStore(ctx context.Context, cfg Config) (backend, error) {
	kind, err := servicekit.ChooseStore(cfg.Store, cfg.DatabaseURL)
	if err != nil {
		return backend{}, fmt.Errorf("activity: %w", err)
	}
	if kind == servicekit.StoreMemory {
		cfg.Logger.WarnContext(ctx, "activity: using the embedded in-memory store; it keeps nothing across restarts and is meant for development only")
		return backend{store: memstore.New(), close: func() {}}, nil
	}
	pg, err := servicekit.OpenPostgres(cfg.DatabaseURL, "activity", migrations.Activity, cfg.Logger, cfg.Telemetry)
	if err != nil {
		return backend{}, fmt.Errorf("activity: %w", err)
	}
	st := pgstore.New(pg.Pool, pgstore.WithMeter(cfg.Telemetry.Meter))
	// The group commit's writers answer what they hold before the pool
	// closes under them.
	return backend{store: st, gate: pg.Gate, close: func() {
		st.Close()
		pg.Pool.Close()
	}}, nil
}

// Addr is the address the service listens on.
func (s *Service) Addr() net.Addr { return s.srv.Addr() }

// Serve serves until ctx is done, then shuts down gracefully (see
// grpcserver.Server.Serve) and releases the store. It returns nil after a
// shutdown caused by ctx. A Service serves once.
//
// On the in-memory store it is SERVING at once. On PostgreSQL it checks
// the schema version every few seconds, logging what to do, and turns
// SERVING once the version matches; until then calls get Unavailable. The
// reaper starts once the service serves, and stops before the store is
// released.
func (s *Service) Serve(ctx context.Context) error {
	return servicekit.Serve(ctx, s.srv, servicekit.Lifecycle{
		Name: "activity", Gate: s.backend.gate, ReadinessInterval: readinessInterval,
		AfterReady: []func(context.Context){s.reaper.Run},
		Close:      s.backend.close, Logger: s.logger,
	})
}

// Run builds the service and serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
