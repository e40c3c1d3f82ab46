// Package accountpool is the AccountPool service's public face: its
// configuration, its construction and its lifecycle. Everything else lives
// in internal/: api (gRPC handlers), pool (selection, capacity, breakers),
// store (persistence) and crypto (API keys at rest).
package accountpool

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/servicekit"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/api"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/redisstate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/pgstore"
)

// DefaultAddr is where the service listens unless told otherwise.
const DefaultAddr = "127.0.0.1:50052"

// The stores Config.Store can name (chosen by servicekit.ChooseStore).
const (
	StoreMemory   = servicekit.StoreMemory
	StorePostgres = servicekit.StorePostgres
)

// readinessInterval is how often a service on PostgreSQL rechecks the
// schema version while it is not serving.
const readinessInterval = 5 * time.Second

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
	// MaxAccountsPerOrganization caps each organization's accounts, on
	// every replica together (the store counts atomically with the
	// insert); default DefaultMaxAccountsPerOrganization. RegisterAccount
	// past it answers FailedPrecondition.
	MaxAccountsPerOrganization int
	// MaxLabelsPerAccount caps one account's labels, at most 64; default
	// DefaultMaxLabelsPerAccount. More is InvalidArgument.
	MaxLabelsPerAccount int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Store selects the storage backend: StoreMemory or StorePostgres.
	// Empty means StorePostgres when DatabaseURL is set, else StoreMemory;
	// a Store that is set wins over DatabaseURL. The choice is made in one
	// place, openStore.
	Store string
	// DatabaseURL is the PostgreSQL connection string (URL or key=value
	// form) for StorePostgres (cmd reads it from SWITCHYARD_DATABASE_URL or
	// DATABASE_URL). It must connect as the switchyard_app role
	// (migrations.AppRole), which owns nothing and cannot bypass row-level
	// security, to a schema migrated with `switchyard migrate up`: the
	// service never migrates, and stays NOT_SERVING while the schema is
	// not at the version this binary needs. Keep Keyring with it: keys
	// stored under one keyring decrypt only with that keyring.
	DatabaseURL string
	// DBMaxConns sizes the PostgreSQL pool of the hot path (selection,
	// settings, the usage ledger's group commit, the change feed's
	// connection), overriding pool_max_conns in DatabaseURL; default
	// DefaultDBMaxConns.
	DBMaxConns int
	// UsageQueryConns sizes a second, separate PostgreSQL pool that only
	// GetUsage's reads use, so however many of them run they cannot take
	// the hot path's connections: a read beyond it waits for a connection
	// within its caller's deadline. Default DefaultUsageQueryConns.
	UsageQueryConns int
	// UsageQueryTimeout is the statement timeout of one usage read on
	// PostgreSQL; a read stopped by it answers ResourceExhausted. Default
	// 5s.
	UsageQueryTimeout time.Duration
	// UsageMaxRange is the longest range GetUsage sums at once; default
	// 400 days. UsageMaxRecordsRange is the longest range it lists rows
	// of (include_records); default 31 days. A longer range answers
	// InvalidArgument naming the limit.
	UsageMaxRange        time.Duration
	UsageMaxRecordsRange time.Duration
	// Tokens authenticates callers (see pkg/auth). Required unless
	// InsecureNoAuth is set.
	Tokens *auth.Tokens
	// InsecureNoAuth serves without authentication or authorization: any
	// caller may act for any organization and receive decrypted keys.
	// Tests and local experiments only.
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
	// State selects where the pool's live state (capacity, cool-downs,
	// breakers, leases, session pins) lives: StateMemory, in this process,
	// or StateRedis, at RedisURL, shared by every replica. Empty means
	// StateRedis when RedisURL is set, else StateMemory.
	State string
	// RedisURL is the Redis for StateRedis ("redis://host:6379/0"; rediss://
	// for TLS).
	RedisURL string
	// RedisNamespace starts every key, so deployments can share a Redis;
	// default "switchyard".
	RedisNamespace string
	// RedisFailure is what the pool does while Redis cannot be reached:
	// FailClosed (default: SelectAccount answers Unavailable) or
	// FailDegrade (each replica runs on state of its own with its share of
	// every limit; see pool.DegradingState).
	RedisFailure string
}

// Organization limits' defaults (see Config).
const (
	DefaultMaxAccountsPerOrganization = pool.DefaultMaxAccountsPerOrganization
	DefaultMaxLabelsPerAccount        = pool.DefaultMaxLabelsPerAccount
	// MaxLabelsPerAccountCeiling is the most MaxLabelsPerAccount may be.
	MaxLabelsPerAccountCeiling = pool.MaxLabelsPerAccountCeiling
)

// Defaults of the PostgreSQL pools and the usage reads (see Config).
const (
	DefaultDBMaxConns           = 10
	DefaultUsageQueryConns      = 2
	DefaultUsageQueryTimeout    = pgstore.DefaultUsageTimeout
	DefaultUsageMaxRange        = pool.DefaultUsageMaxRange
	DefaultUsageMaxRecordsRange = pool.DefaultUsageMaxRecordsRange
)

// The live states Config.State can name.
const (
	StateMemory = "memory"
	StateRedis  = "redis"
)

// The Redis failure policies Config.RedisFailure can name.
const (
	FailClosed  = "closed"
	FailDegrade = "degrade"
)

// GenerateKeyring returns a fresh random one-version keyring, for
// `switchyard dev`, whose embedded store forgets every key at exit anyway.
// Never use it where keys persist: they would be unreadable after a restart.
func GenerateKeyring() (string, error) { return crypto.GenerateKeyring() }

// Service is a constructed AccountPool: listening, not yet serving.
type Service struct {
	server  *grpcserver.Server
	logger  *slog.Logger
	pool    *pool.Pool
	backend backend
	state   liveState
}

// liveState is the pool's State and what running it takes.
type liveState struct {
	state pool.State
	// run, when set, runs while the service serves (the degrade policy's
	// reconnection).
	run func(ctx context.Context)
	// close releases the state after the last call.
	close func()
}

// backend is an open store and what serving it takes.
type backend struct {
	store store.Store
	// gate, when set, holds calls back until the store is ready; without
	// one the service serves at once.
	gate *grpcserver.Gate
	// close releases the store after the last call: on PostgreSQL it
	// writes the usage rows still queued for group commit, then closes the
	// connections.
	close func()
}

// New opens the store, builds the service and opens its listener. Health
// reports NOT_SERVING until Serve runs, and on PostgreSQL until the schema
// is at the version this binary needs. Serve releases what New opened.
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
	unary, stream, err := auth.ServerInterceptors(cfg.Tokens, cfg.InsecureNoAuth, api.Policy(), cfg.Logger)
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
	ls, err := openState(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	be, err := openStore(ctx, cfg)
	if err != nil {
		ls.close()
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	s, err := build(cfg, keys, tiers, pricing, be, ls, unary, stream)
	if err != nil {
		be.close()
		ls.close()
		return nil, fmt.Errorf("accountpool: %w", err)
	}
	return s, nil
}

func build(cfg Config, keys *crypto.Keyring, tiers pool.Tiers, pricing pool.Pricing, be backend, ls liveState,
	unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor) (*Service, error) {
	p, err := pool.New(pool.Config{
		Store:                      be.store,
		Keys:                       keys,
		State:                      ls.state,
		Tiers:                      tiers,
		Pricing:                    pricing,
		LeaseTimeout:               cfg.LeaseTimeout,
		Now:                        cfg.Now,
		MaxAccountsPerOrganization: cfg.MaxAccountsPerOrganization,
		MaxLabelsPerAccount:        cfg.MaxLabelsPerAccount,
		Logger:                     cfg.Logger,
		Meter:                      cfg.Telemetry.Meter,
		Usage:                      pool.UsageLimits{MaxRange: cfg.UsageMaxRange, MaxRecordsRange: cfg.UsageMaxRecordsRange},
	})
	if err != nil {
		return nil, err
	}
	handlers := api.New(p, cfg.Logger)
	scfg := grpcserver.Config{
		Addr:               cfg.Addr,
		Name:               "accountpool",
		Logger:             cfg.Logger,
		Telemetry:          cfg.Telemetry,
		TLS:                cfg.TLS,
		DefaultTimeout:     30 * time.Second,
		Limits:             poolLimits(cfg.GRPCLimits),
		Admit:              auth.Admission(cfg.Tokens),
		InsecurePlaintext:  cfg.InsecurePlaintext,
		UnaryInterceptors:  unary,
		StreamInterceptors: stream,
		// Ended at shutdown with Unavailable, for the client to reconnect
		// elsewhere, instead of holding the graceful stop.
		Watches: []string{accountpoolv1.AccountPoolService_WatchAccounts_FullMethodName},
	}
	srv, err := grpcserver.New(servicekit.Gated(scfg, be.gate), func(r grpc.ServiceRegistrar) { accountpoolv1.RegisterAccountPoolServiceServer(r, handlers) })
	if err != nil {
		return nil, err
	}
	return &Service{server: srv, logger: cfg.Logger, pool: p, backend: be, state: ls}, nil
}

// maxRequestBytes bounds every AccountPool request: none carries a prompt,
// and the largest, a registration with its labels at their caps, is a few
// kilobytes.
const maxRequestBytes = 256 << 10

// poolLimits are the server's limits with maxRequestBytes on every method.
func poolLimits(l grpcserver.Limits) grpcserver.Limits {
	l.MethodMaxRecvMsgSize = grpcserver.MethodLimits(accountpoolv1.AccountPoolService_ServiceDesc, maxRequestBytes)
	return l
}

// openState is the one place the live state is chosen.
func openState(ctx context.Context, cfg Config) (liveState, error) {
	kind := cfg.State
	if kind == "" {
		kind = StateMemory
		if cfg.RedisURL != "" {
			kind = StateRedis
		}
	}
	switch kind {
	case StateMemory:
		if cfg.Store == StorePostgres || (cfg.Store == "" && cfg.DatabaseURL != "") {
			cfg.Logger.WarnContext(ctx, "accountpool keeps its live state (capacity, cool-downs, breakers, leases) in this process: "+
				"it must be the only AccountPool replica, or the replicas will hand out the same capacity twice; "+
				"set SWITCHYARD_REDIS_URL to share the state between replicas")
		}
		return liveState{state: pool.NewMemState(), close: func() {}}, nil
	case StateRedis:
		if cfg.RedisURL == "" {
			return liveState{}, errors.New("state \"redis\" needs a Redis URL: set SWITCHYARD_REDIS_URL (redis://host:6379/0)")
		}
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			// The URL may hold a password: name the problem, not the URL.
			return liveState{}, errors.New("SWITCHYARD_REDIS_URL is not a valid redis:// or rediss:// URL")
		}
		// No retries inside the client: a transaction whose answer was lost
		// is settled by the pool's own compare-and-set, not by resending it
		// blind; an error reaches the failure policy at once.
		opts.MaxRetries = -1
		client := redis.NewClient(opts)
		rs, err := redisstate.New(redisstate.Config{Client: client, Namespace: cfg.RedisNamespace, Logger: cfg.Logger})
		if err != nil {
			_ = client.Close()
			return liveState{}, err
		}
		closeAll := func() {
			_ = rs.Close()
			_ = client.Close()
		}
		cfg.Logger.InfoContext(ctx, "accountpool keeps its live state in Redis, shared with every replica of the namespace",
			"redis_addr", opts.Addr, "redis_db", opts.DB, "namespace", rs.Namespace(), "redis_failure", cmp.Or(cfg.RedisFailure, FailClosed))
		switch cfg.RedisFailure {
		case "", FailClosed:
			return liveState{state: rs, close: closeAll}, nil
		case FailDegrade:
			ds := pool.NewDegradingState(rs, cfg.Logger)
			return liveState{state: ds, run: ds.Run, close: closeAll}, nil
		default:
			closeAll()
			return liveState{}, fmt.Errorf("unknown Redis failure policy %q; known policies: %q, %q", cfg.RedisFailure, FailClosed, FailDegrade)
		}
	default:
		return liveState{}, fmt.Errorf("unknown state %q; known states: %q, %q", cfg.State, StateMemory, StateRedis)
	}
}

// openStore opens the store servicekit.ChooseStore names.
func openStore(ctx context.Context, cfg Config) (backend, error) {
	kind, err := servicekit.ChooseStore(cfg.Store, cfg.DatabaseURL)
	if err != nil {
		return backend{}, err
	}
	if kind == StoreMemory {
		cfg.Logger.WarnContext(ctx, "accountpool uses the embedded in-memory store: accounts, keys, settings and usage are lost when the process exits; configure PostgreSQL for anything but development")
		return backend{store: memstore.New(), close: func() {}}, nil
	}
	pg, err := servicekit.OpenPostgres(cfg.DatabaseURL, "accountpool", migrations.AccountPool, cfg.Logger, cfg.Telemetry,
		pgxutil.WithMaxConns(int32(min(cmp.Or(cfg.DBMaxConns, DefaultDBMaxConns), math.MaxInt32))))
	if err != nil {
		return backend{}, err
	}
	// The usage reads' own pool: as lazy as the other, and as small as
	// their concurrency.
	usageDB, err := pgxutil.Open(cfg.DatabaseURL, "switchyard-accountpool-usage", pgxutil.WithTelemetry(cfg.Telemetry),
		pgxutil.WithMaxConns(int32(min(cmp.Or(cfg.UsageQueryConns, DefaultUsageQueryConns), math.MaxInt32))),
		pgxutil.WithStatementTimeout(cmp.Or(cfg.UsageQueryTimeout, DefaultUsageQueryTimeout)))
	if err != nil {
		pg.Pool.Close()
		return backend{}, err
	}
	st := pgstore.New(pg.Pool, pgstore.Config{Logger: cfg.Logger, Meter: cfg.Telemetry.Meter,
		UsageDB: usageDB, UsageTimeout: cfg.UsageQueryTimeout})
	return backend{store: st, gate: pg.Gate, close: func() {
		st.Close()
		usageDB.Close()
		pg.Pool.Close()
	}}, nil
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

// Serve serves until ctx is cancelled, then shuts down gracefully and
// releases the store. It returns nil after a shutdown caused by ctx. A
// Service serves once.
//
// On the in-memory store it is SERVING at once. On PostgreSQL it checks
// that the database answers and the schema version matches, retrying with
// backoff up to every few seconds and logging what to do, and turns SERVING
// once both hold; until then calls get Unavailable. A database that is
// down at start is waited for, not fatal. It
// also follows the store's change feed, so accounts and settings changed
// by another process show up here without a restart.
//
// Shutdown runs in dependency order: in-flight calls finish (they may
// still queue usage rows), then the feed and the readiness check stop,
// then the store writes what is queued and closes its connections.
func (s *Service) Serve(ctx context.Context) error {
	background := []func(context.Context){
		func(ctx context.Context) {
			if err := s.pool.Watch(ctx); err != nil {
				s.logger.ErrorContext(ctx, "accountpool stopped following store changes; views refresh only on this process's own writes", "error", err)
			}
		},
		func(ctx context.Context) { s.pool.RunExpiry(ctx, time.Second) },
	}
	if run := s.state.run; run != nil {
		background = append(background, run)
	}
	return servicekit.Serve(ctx, s.server, servicekit.Lifecycle{
		Name: "accountpool", Gate: s.backend.gate, ReadinessInterval: readinessInterval,
		Background: background,
		// The live state outlives the store: both close after the last call.
		Close:  func() { s.backend.close(); s.state.close() },
		Logger: s.logger,
	})
}

// Run builds the service and serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
