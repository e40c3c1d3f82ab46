// Package accountpool is the AccountPool service's public face: its
// configuration, its construction and its lifecycle. Everything else lives
// in internal/: api (gRPC handlers), pool (selection, capacity, breakers),
// store (persistence) and crypto (API keys at rest).
package accountpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/api"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// DefaultAddr is where the service listens unless told otherwise.
const DefaultAddr = "127.0.0.1:50052"

// Config configures the service. Keyring is required; every other zero
// field takes the default its comment names.
type Config struct {
	// Addr is the TCP address to listen on; default DefaultAddr. Port 0
	// picks a free port (see Service.Addr).
	Addr string
	// Logger; default slog.Default().
	Logger    *slog.Logger
	Telemetry telemetry.Providers
	// Keyring holds the key-encryption keys, "1:<base64 32 bytes>[,2:<base64>...]":
	// the highest version encrypts, every version decrypts, so a new key is
	// rolled out by adding it and old ones retire once nothing uses them.
	// Required; GenerateKeyring makes one for development.
	Keyring string
	// TiersFile is an optional JSON overlay on the built-in tier limits
	// table (format: pool.ParseTiers).
	TiersFile string
	// PricingFile is an optional JSON overlay on the built-in pricing table
	// (format: pool.ParsePricing).
	PricingFile string
	// LeaseTimeout is how long a lease never settled by RecordRequest holds
	// its reservation; default 2m.
	LeaseTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// GenerateKeyring returns a fresh random one-version keyring, for
// `switchyard dev`, whose embedded store forgets every key at exit anyway.
// Never use it where keys persist: they would be unreadable after a restart.
func GenerateKeyring() (string, error) { return crypto.GenerateKeyring() }

// Service is a constructed AccountPool: listening, not yet serving.
type Service struct {
	server *grpcserver.Server
	logger *slog.Logger
}

// New builds the service and opens its listener. Health reports
// NOT_SERVING until Serve runs.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Keyring == "" {
		return nil, errors.New("accountpool: Keyring is required (\"1:<base64 of 32 random bytes>\"); it encrypts API keys at rest")
	}
	keys, err := crypto.ParseKeyring(cfg.Keyring)
	if err != nil {
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	tiers, err := loadTable(cfg.TiersFile, pool.DefaultTiers(), pool.ParseTiers)
	if err != nil {
		return nil, fmt.Errorf("accountpool: tiers file: %w", err)
	}
	pricing, err := loadTable(cfg.PricingFile, pool.DefaultPricing(), pool.ParsePricing)
	if err != nil {
		return nil, fmt.Errorf("accountpool: pricing file: %w", err)
	}
	st, err := openStore(ctx, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	p, err := pool.New(pool.Config{
		Store:        st,
		Keys:         keys,
		Tiers:        tiers,
		Pricing:      pricing,
		LeaseTimeout: cfg.LeaseTimeout,
		Now:          cfg.Now,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	handlers := api.New(p, cfg.Logger)
	srv, err := grpcserver.New(grpcserver.Config{
		Addr:      cfg.Addr,
		Name:      "accountpool",
		Logger:    cfg.Logger,
		Telemetry: cfg.Telemetry,
	}, func(r grpc.ServiceRegistrar) { accountpoolv1.RegisterAccountPoolServiceServer(r, handlers) })
	if err != nil {
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	return &Service{server: srv, logger: cfg.Logger}, nil
}

// openStore is the one place the backend is chosen. Only the embedded
// store exists so far; PostgreSQL (pgstore) will be picked here from a
// database URL.
func openStore(ctx context.Context, logger *slog.Logger) (store.Store, error) {
	logger.WarnContext(ctx, "accountpool uses the embedded in-memory store: accounts, keys, settings and usage are lost when the process exits; configure PostgreSQL for anything but development")
	return memstore.New(), nil
}

func loadTable[T any](path string, base T, parse func([]byte, T) (T, error)) (T, error) {
	if path == "" {
		return base, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(data, base)
}

// Addr is the address the service listens on.
func (s *Service) Addr() net.Addr { return s.server.Addr() }

// Serve marks the service SERVING and serves until ctx is cancelled, then
// shuts down gracefully. It returns nil after a shutdown caused by ctx.
func (s *Service) Serve(ctx context.Context) error {
	// The embedded store is ready as soon as it exists; pgstore will gate
	// this on its schema being at head.
	s.server.SetServing(true)
	return s.server.Serve(ctx)
}

// Run builds the service and serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
