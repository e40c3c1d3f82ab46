// Package activity is the Activity service: it records the lifecycle of
// agent activities (RUNNING, then COMPLETED or FAILED) and their progress
// events, for the Orchestrator to write and for operators to read, over
// the ActivityService gRPC contract. The rules are documented in
// internal/tracker; storage in internal/store.
//
// A program runs it with Run, or with New and Serve when it needs the
// listening address first (port 0, tests, switchyard dev).
package activity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/services/activity/internal/api"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// DefaultAddr is where the service listens unless Config.Addr says
// otherwise; AccountPool and the Orchestrator use the neighbouring ports.
const DefaultAddr = "127.0.0.1:50053"

// StoreMemory selects the embedded in-memory store: nothing to install,
// nothing kept across restarts. It is the default and, until pgstore
// lands, the only backend.
const StoreMemory = "memory"

// Config configures the service. Every field but Logger has a usable zero
// value.
type Config struct {
	// Addr is the TCP address to listen on; default DefaultAddr. Port 0
	// picks a free port, which Service.Addr reports.
	Addr string
	// Logger receives start-up notices, one line per call, and the causes
	// of internal errors, which callers never see. Required: a service
	// that cannot say why it failed is not run.
	Logger *slog.Logger
	// Telemetry carries the trace and metric providers and the propagator
	// for the gRPC server. The zero value falls back to the OpenTelemetry
	// globals, which are no-ops unless the process installs providers.
	Telemetry telemetry.Providers
	// Now is the clock for start, progress and completion times, and so
	// for durations; default time.Now. Tests set it to pin them.
	Now func() time.Time
	// Store selects the storage backend; default StoreMemory. The choice
	// is made in one place, openStore.
	Store string
}

// Service is the Activity service, listening but not yet serving.
type Service struct {
	srv *grpcserver.Server
}

// New opens the store, listens on cfg.Addr and registers the handlers.
// Health stays NOT_SERVING until Serve.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		return nil, errors.New("activity: Config.Logger is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	handlers := api.New(tracker.New(st, cfg.Now), cfg.Logger)
	srv, err := grpcserver.New(grpcserver.Config{
		Addr:      cfg.Addr,
		Name:      "activity",
		Logger:    cfg.Logger,
		Telemetry: cfg.Telemetry,
	}, func(r grpc.ServiceRegistrar) {
		activityv1.RegisterActivityServiceServer(r, handlers)
	})
	if err != nil {
		return nil, fmt.Errorf("activity: %w", err)
	}
	return &Service{srv: srv}, nil
}

// openStore is the one place a backend is chosen.
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	switch cfg.Store {
	case "", StoreMemory:
		cfg.Logger.WarnContext(ctx, "activity: using the embedded in-memory store; it keeps nothing across restarts and is meant for development only")
		return memstore.New(), nil
	default:
		return nil, fmt.Errorf("activity: unknown store %q; known stores: %q", cfg.Store, StoreMemory)
	}
}

// Addr is the address the service listens on.
func (s *Service) Addr() net.Addr { return s.srv.Addr() }

// Serve marks the service SERVING and serves until ctx is done, then
// shuts down gracefully (see grpcserver.Server.Serve). It returns nil
// after a shutdown caused by ctx. A Service serves once.
func (s *Service) Serve(ctx context.Context) error {
	s.srv.SetServing(true)
	return s.srv.Serve(ctx)
}

// Run builds the service and serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
