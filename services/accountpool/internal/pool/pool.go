// Package pool is AccountPool's domain core: accounts, selection, capacity,
// circuit breakers, cost, and the usage ledger's write path. It imports
// neither gRPC nor a database driver; the api package adapts it to gRPC and
// the store package abstracts persistence.
//
// Hot paths stay off the database. Each organization's accounts and
// settings are loaded from the store once, on first use, into an immutable
// in-memory view that admin operations of this process replace
// (copy-on-write) after their store write succeeds; Select reads only that
// view and the live State. When the store is shared by several processes
// and can report changes (store.ChangeWatcher), Watch reloads a view as
// soon as another process changes its organization (watch.go). Live state
// is per process (MemState) or shared by every replica on Redis
// (redisstate).
//
// Key plaintext exists only inside Select, between decryption and the
// returned Selection, as a secret.String; that holds for an organization's
// default key too (defaultkey.go), which Select hands out only when the
// organization has no account in service and the caller accepts it.
package pool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/wakeup"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Keys encrypts and decrypts API keys bound to their organization and
// account, and organizations' default keys bound to their organization and
// the default-key purpose (so neither decrypts as the other);
// *crypto.Keyring implements it.
type Keys interface {
	Encrypt(plaintext secret.String, orgID, accountID string) ([]byte, int32, error)
	Decrypt(ciphertext []byte, orgID, accountID string) (secret.String, error)
	EncryptDefaultKey(plaintext secret.String, orgID string) ([]byte, int32, error)
	DecryptDefaultKey(ciphertext []byte, orgID string) (secret.String, error)
}

// Config configures a Pool. Store and Keys are required; every other zero
// field takes the default its comment names.
type Config struct {
	Store store.Store
	Keys  Keys
	// State holds the live state; default a new MemState.
	State State
	// Tiers is the tier limits table; default DefaultTiers().
	Tiers Tiers
	// Pricing is the pricing table; default DefaultPricing().
	Pricing Pricing
	// LeaseTimeout is how long a lease holds its reservation if it is never
	// settled; default 2m.
	LeaseTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Jitter turns a breaker cool-down bound into the actual cool-down;
	// default uniform in [bound/2, bound] (equalJitter).
	Jitter func(bound time.Duration) time.Duration
	// Rand returns a uniform random number in [0, n), n > 0; the weighted
	// strategy draws from it. Default math/rand/v2's Int64N.
	Rand func(n int64) int64
	// SessionPinTTL is how long an idle session stays pinned to its account
	// under the session-affinity strategy; default 1h (Anthropic's longest
	// prompt-cache lifetime: a pin idle for longer has no cache to hit).
	SessionPinTTL time.Duration
	// MaxSessionPins bounds the pins one organization keeps, least recently
	// used evicted first; default 10,000.
	MaxSessionPins int
	// MaxAccountsPerOrganization caps each organization's accounts;
	// RegisterAccount past it fails with a LimitError. Default
	// DefaultMaxAccountsPerOrganization.
	MaxAccountsPerOrganization int
	// MaxLabelsPerAccount caps the labels of one account, at most
	// MaxLabelsPerAccountCeiling; default DefaultMaxLabelsPerAccount.
	MaxLabelsPerAccount int
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Meter receives the pool's metrics (metrics.go); nil for none.
	Meter metric.MeterProvider
	// Usage bounds the ranges Usage reads (usage.go); zero fields take
	// their defaults.
	Usage UsageLimits
}

// Breaker policy constants (docs/capacity.md).
const (
	breakerThreshold = 5
	breakerBase      = 5 * time.Second
	breakerMax       = 5 * time.Minute
)

// Session-affinity defaults.
const (
	defaultSessionPinTTL  = time.Hour
	defaultMaxSessionPins = 10_000
)

// Cool-downs when the upstream gives no time.
const (
	defaultRateLimitCooldown  = 5 * time.Second
	defaultSpendLimitCooldown = time.Hour
)

// Pool is the account pool. It is safe for concurrent use.
type Pool struct {
	store        store.Store
	keys         Keys
	state        State
	tiers        Tiers
	pricing      Pricing
	leaseTimeout time.Duration
	now          func() time.Time
	rand         func(n int64) int64
	breaker      breakerPolicy
	pinTTL       time.Duration
	maxPins      int
	maxAccounts  int
	maxLabels    int
	logger       *slog.Logger

	mu   sync.Mutex
	orgs map[string]*orgEntry

	// scans recycles the per-selection scratch (see scan).
	scans sync.Pool

	metrics poolMetrics

	// changes wakes the organization's watchers (Changes).
	changes wakeup.Hub

	// usage is Config.Usage with its defaults.
	usage UsageLimits
}

// New returns a Pool.
func New(cfg Config) (*Pool, error) {
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("pool: Store and Keys are required")
	}
	if cfg.State == nil {
		cfg.State = NewMemState()
	}
	if cfg.Tiers.tiers == nil {
		cfg.Tiers = DefaultTiers()
	}
	if cfg.Pricing.models == nil && cfg.Pricing.families == nil {
		cfg.Pricing = DefaultPricing()
	}
	if cfg.LeaseTimeout <= 0 {
		cfg.LeaseTimeout = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = equalJitter
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Int64N
	}
	if cfg.SessionPinTTL <= 0 {
		cfg.SessionPinTTL = defaultSessionPinTTL
	}
	if cfg.MaxSessionPins <= 0 {
		cfg.MaxSessionPins = defaultMaxSessionPins
	}
	if cfg.MaxAccountsPerOrganization <= 0 {
		cfg.MaxAccountsPerOrganization = DefaultMaxAccountsPerOrganization
	}
	if cfg.MaxLabelsPerAccount <= 0 {
		cfg.MaxLabelsPerAccount = DefaultMaxLabelsPerAccount
	}
	if cfg.MaxLabelsPerAccount > MaxLabelsPerAccountCeiling {
		return nil, fmt.Errorf("pool: MaxLabelsPerAccount is %d; it must be at most %d", cfg.MaxLabelsPerAccount, MaxLabelsPerAccountCeiling)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Pool{
		store:        cfg.Store,
		keys:         cfg.Keys,
		state:        cfg.State,
		tiers:        cfg.Tiers,
		pricing:      cfg.Pricing,
		leaseTimeout: cfg.LeaseTimeout,
		now:          cfg.Now,
		rand:         cfg.Rand,
		breaker:      breakerPolicy{threshold: breakerThreshold, base: breakerBase, max: breakerMax, jitter: cfg.Jitter},
		pinTTL:       cfg.SessionPinTTL,
		maxPins:      cfg.MaxSessionPins,
		maxAccounts:  cfg.MaxAccountsPerOrganization,
		maxLabels:    cfg.MaxLabelsPerAccount,
		logger:       cfg.Logger,
		orgs:         map[string]*orgEntry{},
	}
	p.metrics = p.newMetrics(cfg.Meter)
	p.usage = cfg.Usage.withDefaults()
	return p, nil
}

// equalJitter is uniform in [bound/2, bound]. Since each opening doubles
// the bound, the shortest next cool-down equals the longest previous one:
// jitter spreads the probes of accounts that failed together, yet a
// cool-down never comes out shorter than the one before it (until the
// cap, where they all draw from [max/2, max]). Full jitter, [0, bound],
// would let a fifth opening end sooner than the first.
func equalJitter(bound time.Duration) time.Duration {
	if bound <= 0 {
		return 0
	}
	half := bound / 2
	return half + rand.N(bound-half+1)
}

// newID returns a random (version 4) UUID drawn from the runtime's ChaCha8
// generator. Lease ids and ledger row ids are made on every model call;
// this gives them the uniqueness and unpredictability of uuid.NewString
// without a getrandom system call each.
func newID() string {
	var u uuid.UUID
	binary.LittleEndian.PutUint64(u[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(u[8:], rand.Uint64())
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return u.String()
}

// Tiers returns the tier table in use.
func (p *Pool) Tiers() Tiers { return p.tiers }

// Pricing returns the pricing table in use.
func (p *Pool) Pricing() Pricing { return p.pricing }
