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
// stays per process (MemState) until it moves to Redis.
//
// Key plaintext exists only inside Select, between decryption and the
// returned Selection, as a secret.String.
package pool

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Keys encrypts and decrypts API keys bound to their organization and
// account; *crypto.Keyring implements it.
type Keys interface {
	Encrypt(plaintext secret.String, orgID, accountID string) ([]byte, int32, error)
	Decrypt(ciphertext []byte, orgID, accountID string) (secret.String, error)
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
	// Logger; default slog.Default().
	Logger *slog.Logger
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
	logger       *slog.Logger

	mu   sync.Mutex
	orgs map[string]*orgEntry

	// scans recycles the per-selection scratch (see scan).
	scans sync.Pool
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Pool{
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
		logger:       cfg.Logger,
		orgs:         map[string]*orgEntry{},
	}, nil
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

// orgEntry is one organization's in-memory view. mu serializes loading and
// admin writes, so a load never races a write into a stale view; readers
// only load the pointer.
type orgEntry struct {
	mu   sync.Mutex
	view atomic.Pointer[orgView]
}

// orgView is immutable once published.
type orgView struct {
	accounts []*account // ordered by name, then id
	byID     map[string]*account
	settings store.Settings
	// gone keeps deleted accounts for a while, so a lease issued before the
	// delete can still write its usage row.
	gone map[string]goneAccount
	// stale marks a view the store may have changed under (a refresh
	// failed, or the change feed was down): its next use reloads it
	// instead of serving it.
	stale bool
	// index caches, per model family, what selection needs of the view;
	// every view gets its own, filled on first use.
	index *viewIndex
}

// viewIndex is what Select needs of a view, per family, computed once per
// view rather than on every selection: the accounts that can be selected
// at all, their live-state refs and their tier limits.
type viewIndex struct {
	once [numFamilies]sync.Once
	fams [numFamilies]familyIndex
}

// familyIndex lists the view's selectable accounts for one family: ACTIVE,
// with a tier the table knows, in view order. pos maps each to its place
// in the view's accounts; limits are what each is metered by (see
// meteredLimits).
type familyIndex struct {
	accounts []*account
	refs     []Ref
	limits   []Limits
	pos      []int
	// groups holds each quota group's limits: the lowest of its accounts'.
	groups map[string]Limits
}

// family returns the view's index for f, building it on first use.
func (v *orgView) family(f Family, tiers Tiers) *familyIndex {
	i := f.index()
	fi := &v.index.fams[i]
	v.index.once[i].Do(func() {
		for _, a := range v.accounts {
			lim, ok := tiers.Limits(a.Tier, f)
			if a.QuotaGroup == "" || !ok {
				continue
			}
			if fi.groups == nil {
				fi.groups = map[string]Limits{}
			}
			if g, seen := fi.groups[a.quotaKey]; seen {
				lim = Limits{RPM: min(g.RPM, lim.RPM), InputTPM: min(g.InputTPM, lim.InputTPM), OutputTPM: min(g.OutputTPM, lim.OutputTPM)}
			}
			fi.groups[a.quotaKey] = lim
		}
		hints := make([]refHint, 0, len(v.accounts))
		for j, a := range v.accounts {
			lim, ok := fi.metered(a, f, tiers)
			if a.Status != store.StatusActive || !ok {
				continue
			}
			hints = append(hints, refHint{})
			r := ref(a, f)
			r.hint = &hints[len(hints)-1]
			fi.accounts = append(fi.accounts, a)
			fi.refs = append(fi.refs, r)
			fi.limits = append(fi.limits, lim)
			fi.pos = append(fi.pos, j)
		}
	})
	return fi
}

func (fi *familyIndex) metered(a *account, f Family, tiers Tiers) (Limits, bool) {
	if g, ok := fi.groups[a.quotaKey]; ok {
		return g, true
	}
	return tiers.Limits(a.Tier, f)
}

// meteredLimits are the limits an account's buckets are metered by for f:
// its tier's, or, in a quota group, the lowest of the group's accounts'.
// The keys of a group share one Anthropic organization and so one set of
// limits; a group whose accounts name different tiers is misconfigured,
// and the lowest reading is the one that cannot overdrive it. false when
// the account's tier is not in the table.
func (v *orgView) meteredLimits(a *account, f Family, tiers Tiers) (Limits, bool) {
	if a.QuotaGroup == "" {
		// No group, no need for the view's index: reading one account
		// (after registering it, say) does not build it.
		return tiers.Limits(a.Tier, f)
	}
	return v.family(f, tiers).metered(a, f, tiers)
}

type goneAccount struct {
	account *account
	until   time.Time
}

// account is a stored account as the view holds it, with its quota key
// computed once rather than on every selection.
type account struct {
	store.Account
	quotaKey string
}

func newAccount(a store.Account) *account {
	qk := "a:" + a.ID
	if a.QuotaGroup != "" {
		qk = "g:" + a.QuotaGroup
	}
	return &account{Account: a, quotaKey: qk}
}

func (p *Pool) entry(orgID string) *orgEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.orgs[orgID]
	if !ok {
		e = &orgEntry{}
		p.orgs[orgID] = e
	}
	return e
}

// view returns the organization's view, loading it on first use and
// reloading it when it is stale.
func (p *Pool) view(ctx context.Context, orgID string) (*orgView, error) {
	e := p.entry(orgID)
	if v := e.view.Load(); v != nil && !v.stale {
		return v, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return p.loadLocked(ctx, orgID, e)
}

func (p *Pool) loadLocked(ctx context.Context, orgID string, e *orgEntry) (*orgView, error) {
	if v := e.view.Load(); v != nil && !v.stale {
		return v, nil
	}
	return p.reloadLocked(ctx, orgID, e)
}

// reloadLocked reads the organization's accounts and settings from the
// store and publishes them as its view. e.mu must be held.
//
// What the store does not hold carries over from the previous view:
// recently deleted accounts (gone), plus the accounts that vanished since,
// deleted by another process, so leases issued before the delete can still
// record. Live state needs no carrying: State is keyed by organization,
// account and quota key, never by view, so buckets, cool-downs and
// breakers stay as they are. Only what an admin write in this process would
// have done to them is done here: a vanished account's live records are
// dropped (DeleteAccount), and an account that came back to ACTIVE gets its
// breaker closed (UpdateAccount to ACTIVE; a remote update that keeps an
// account ACTIVE is indistinguishable from a rename and closes nothing).
func (p *Pool) reloadLocked(ctx context.Context, orgID string, e *orgEntry) (*orgView, error) {
	accounts, err := p.store.ListAccounts(ctx, orgID)
	if err != nil {
		return nil, fmt.Errorf("loading accounts of organization %s: %w", orgID, err)
	}
	settings, err := p.store.GetSettings(ctx, orgID)
	if err != nil {
		return nil, fmt.Errorf("loading settings of organization %s: %w", orgID, err)
	}
	v := &orgView{byID: make(map[string]*account, len(accounts)), settings: settings, index: &viewIndex{}}
	for _, sa := range accounts {
		a := newAccount(sa)
		v.accounts = append(v.accounts, a)
		v.byID[a.ID] = a
	}
	var vanished, reactivated []*account
	if old := e.view.Load(); old != nil {
		now := p.now()
		for id, g := range old.gone {
			if _, back := v.byID[id]; !back && !now.After(g.until) {
				v.remember(id, g)
			}
		}
		for _, a := range old.accounts {
			switch n, ok := v.byID[a.ID]; {
			case !ok:
				v.remember(a.ID, goneAccount{account: a, until: now.Add(2 * p.leaseTimeout)})
				vanished = append(vanished, a)
			case a.Status != store.StatusActive && n.Status == store.StatusActive:
				reactivated = append(reactivated, n)
			}
		}
	}
	e.view.Store(v)
	// The view is right whatever happens to these; a failure leaves at
	// worst a stale breaker or an unused bucket, so it is logged, not
	// returned to a caller who only wanted to select.
	for _, a := range vanished {
		if err := p.dropLive(ctx, a); err != nil {
			p.logger.WarnContext(ctx, "dropping live state of an account deleted elsewhere", "organization_id", orgID, "account_id", a.ID, "error", err)
		}
	}
	for _, a := range reactivated {
		if err := p.closeBreaker(ctx, a); err != nil {
			p.logger.WarnContext(ctx, "closing the breaker of an account set active elsewhere", "organization_id", orgID, "account_id", a.ID, "error", err)
		}
	}
	return v, nil
}

func (v *orgView) remember(id string, g goneAccount) {
	if v.gone == nil {
		v.gone = map[string]goneAccount{}
	}
	v.gone[id] = g
}

// modify runs an admin write: under the organization's lock, with the view
// loaded, fn performs the store write and returns the view that reflects
// it, which is then published and returned.
func (p *Pool) modify(ctx context.Context, orgID string, fn func(v *orgView) (*orgView, error)) (*orgView, error) {
	e := p.entry(orgID)
	e.mu.Lock()
	defer e.mu.Unlock()
	v, err := p.loadLocked(ctx, orgID, e)
	if err != nil {
		return nil, err
	}
	next, err := fn(v)
	if err != nil {
		return nil, err
	}
	e.view.Store(next)
	return next, nil
}

func (v *orgView) clone() *orgView {
	return &orgView{
		accounts: slices.Clone(v.accounts),
		byID:     maps.Clone(v.byID),
		settings: v.settings,
		gone:     maps.Clone(v.gone),
		index:    &viewIndex{},
	}
}

// with returns a copy of v holding a (added or replaced).
func (v *orgView) with(sa store.Account) *orgView {
	a := newAccount(sa)
	n := v.clone()
	n.accounts = slices.DeleteFunc(n.accounts, func(x *account) bool { return x.ID == a.ID })
	n.accounts = append(n.accounts, a)
	slices.SortFunc(n.accounts, func(x, y *account) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.ID, y.ID))
	})
	n.byID[a.ID] = a
	return n
}

// without returns a copy of v without account id, remembered as gone until
// until; gone accounts past their time are pruned.
func (v *orgView) without(id string, now, until time.Time) *orgView {
	n := v.clone()
	if n.gone == nil {
		n.gone = map[string]goneAccount{}
	}
	maps.DeleteFunc(n.gone, func(_ string, g goneAccount) bool { return now.After(g.until) })
	if a, ok := n.byID[id]; ok {
		n.gone[id] = goneAccount{account: a, until: until}
	}
	n.accounts = slices.DeleteFunc(n.accounts, func(x *account) bool { return x.ID == id })
	delete(n.byID, id)
	return n
}

// ref names an account's live records for a family.
func ref(a *account, f Family) Ref {
	return Ref{OrgID: a.OrganizationID, AccountID: a.ID, QuotaKey: a.quotaKey, Family: f}
}

// NewAccount is what RegisterAccount needs.
type NewAccount struct {
	OrgID  string
	Name   string
	APIKey secret.String
	// Tier defaults to DefaultTier.
	Tier string
	// Weight defaults to 1.
	Weight     int32
	Priority   int32
	QuotaGroup string
	Labels     map[string]string
}

// AccountInfo is an account with its live state. Account.KeyCiphertext is
// always nil: nothing derived from the key leaves the pool except through
// Select.
type AccountInfo struct {
	Account        store.Account
	Breaker        BreakerInfo
	CooldownUntil  time.Time // zero unless cooling down
	CooldownReason CooldownReason
	Capacity       []Capacity // one per family, in Families() order
}

// BreakerInfo is the live breaker state of one account.
type BreakerInfo struct {
	State               BreakerState
	ConsecutiveFailures int32
	// OpenUntil is when an open breaker half-opens; zero when closed.
	OpenUntil time.Time
}

// Capacity is the live state of one account's buckets for one family.
type Capacity struct {
	Family                             Family
	RequestsLimit, RequestsRemaining   int64
	InputTokensLimit, InputRemaining   int64
	OutputTokensLimit, OutputRemaining int64
}

func (p *Pool) unknownTier(tier string) error {
	return &FieldError{Field: "tier", Problem: fmt.Sprintf("unknown tier %s; use one of %v", validate.Quote(tier), p.tiers.Names())}
}

// RegisterAccount encrypts the key and stores a new ACTIVE account.
// FieldError for an unknown tier; store.ErrAlreadyExists for a name the
// organization already uses.
func (p *Pool) RegisterAccount(ctx context.Context, n NewAccount) (AccountInfo, error) {
	if n.Tier == "" {
		n.Tier = DefaultTier
	}
	if !p.tiers.Has(n.Tier) {
		return AccountInfo{}, p.unknownTier(n.Tier)
	}
	if n.Weight == 0 {
		n.Weight = 1
	}
	id := uuid.NewString()
	ct, ver, err := p.keys.Encrypt(n.APIKey, n.OrgID, id)
	if err != nil {
		return AccountInfo{}, fmt.Errorf("encrypting api key: %w", err)
	}
	now := store.Normalize(p.now())
	a := store.Account{
		ID:             id,
		OrganizationID: n.OrgID,
		Name:           n.Name,
		Tier:           n.Tier,
		Status:         store.StatusActive,
		Weight:         n.Weight,
		Priority:       n.Priority,
		QuotaGroup:     n.QuotaGroup,
		Labels:         maps.Clone(n.Labels),
		KeyCiphertext:  ct,
		KeyVersion:     ver,
		CreateTime:     now,
		UpdateTime:     now,
	}
	v, err := p.modify(ctx, n.OrgID, func(v *orgView) (*orgView, error) {
		if err := p.store.CreateAccount(ctx, a); err != nil {
			return nil, err
		}
		return v.with(a), nil
	})
	if err != nil {
		return AccountInfo{}, err
	}
	infos, err := p.infos(ctx, v, []*account{v.byID[id]})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// GetAccount returns one account of the organization with its live state.
// store.ErrNotFound when the organization has no such account.
func (p *Pool) GetAccount(ctx context.Context, orgID, id string) (AccountInfo, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return AccountInfo{}, err
	}
	a, ok := v.byID[id]
	if !ok {
		return AccountInfo{}, fmt.Errorf("account %s: %w", id, store.ErrNotFound)
	}
	if err := p.expireLeases(ctx); err != nil {
		return AccountInfo{}, err
	}
	infos, err := p.infos(ctx, v, []*account{a})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// ListAccounts returns every account of the organization, ordered by name,
// with live state.
func (p *Pool) ListAccounts(ctx context.Context, orgID string) ([]AccountInfo, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return nil, err
	}
	if err := p.expireLeases(ctx); err != nil {
		return nil, err
	}
	return p.infos(ctx, v, v.accounts)
}

// AccountChanges lists the fields UpdateAccount changes; nil fields stay.
type AccountChanges struct {
	Name       *string
	Tier       *string
	Weight     *int32
	Priority   *int32
	Status     *store.Status
	QuotaGroup *string
}

// UpdateAccount applies the changes. Setting the status to ACTIVE (whatever
// it was) also closes the account's breaker: it is the admin's "this key is
// good now" and the only way back for an INVALID account. FieldError for an
// unknown tier; store.ErrNotFound; store.ErrAlreadyExists for a taken name.
func (p *Pool) UpdateAccount(ctx context.Context, orgID, id string, c AccountChanges) (AccountInfo, error) {
	if c.Tier != nil && !p.tiers.Has(*c.Tier) {
		return AccountInfo{}, p.unknownTier(*c.Tier)
	}
	var updated store.Account
	v, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		var err error
		updated, err = p.store.UpdateAccount(ctx, orgID, id, store.AccountUpdate{
			Name: c.Name, Tier: c.Tier, Weight: c.Weight, Priority: c.Priority,
			Status: c.Status, QuotaGroup: c.QuotaGroup, UpdateTime: store.Normalize(p.now()),
		})
		if err != nil {
			return nil, err
		}
		return v.with(updated), nil
	})
	if err != nil {
		return AccountInfo{}, err
	}
	a := v.byID[id]
	if c.Status != nil && *c.Status == store.StatusActive {
		if err := p.closeBreaker(ctx, a); err != nil {
			return AccountInfo{}, err
		}
	}
	infos, err := p.infos(ctx, v, []*account{a})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// RotateKey replaces an account's API key with key, encrypted under the
// keyring's current version and bound to (organization, account). An
// INVALID account becomes ACTIVE (the rejected key is gone); a DISABLED one
// stays DISABLED, which is an admin's decision rather than the key's. The
// breaker closes whatever the status: its failures were the old key's. Leases
// already handed out carry the old key and settle as usual; selections after
// the rotation decrypt the new one. Capacity and cool-downs stay: they
// belong to the Anthropic organization, not to the key.
//
// The key appears in no error and no log line. store.ErrNotFound when the
// organization has no such account.
func (p *Pool) RotateKey(ctx context.Context, orgID, id string, key secret.String) (AccountInfo, error) {
	ct, ver, err := p.keys.Encrypt(key, orgID, id)
	if err != nil {
		return AccountInfo{}, fmt.Errorf("encrypting api key: %w", err)
	}
	var updated store.Account
	v, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		u := store.AccountUpdate{Key: &store.EncryptedKey{Ciphertext: ct, Version: ver}, UpdateTime: store.Normalize(p.now())}
		if a, ok := v.byID[id]; ok && a.Status == store.StatusInvalid {
			active := store.StatusActive
			u.Status = &active
		}
		var err error
		if updated, err = p.store.UpdateAccount(ctx, orgID, id, u); err != nil {
			return nil, err
		}
		if updated.Status == store.StatusInvalid {
			// This view was behind the store (another process marked the
			// account invalid after our last reload): the rule still holds.
			active := store.StatusActive
			if updated, err = p.store.UpdateAccount(ctx, orgID, id, store.AccountUpdate{Status: &active, UpdateTime: u.UpdateTime}); err != nil {
				return nil, err
			}
		}
		return v.with(updated), nil
	})
	if err != nil {
		return AccountInfo{}, err
	}
	a := v.byID[id]
	if err := p.closeBreaker(ctx, a); err != nil {
		return AccountInfo{}, err
	}
	p.logger.InfoContext(ctx, "account key rotated", "organization_id", orgID, "account_id", id, "key_version", ver, "status", string(updated.Status))
	infos, err := p.infos(ctx, v, []*account{a})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// DeleteAccount removes an account; its usage rows stay. Its live records
// are dropped, except capacity shared with its quota group.
// store.ErrNotFound when the organization has no such account.
func (p *Pool) DeleteAccount(ctx context.Context, orgID, id string) error {
	var deleted *account
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		if err := p.store.DeleteAccount(ctx, orgID, id); err != nil {
			return nil, err
		}
		deleted = v.byID[id]
		now := p.now()
		return v.without(id, now, now.Add(2*p.leaseTimeout)), nil
	})
	if err != nil || deleted == nil {
		return err
	}
	return p.dropLive(ctx, deleted)
}

// dropLive drops a deleted account's live records, except capacity and
// cool-downs its quota group shares with other accounts.
func (p *Pool) dropLive(ctx context.Context, a *account) error {
	for _, f := range Families() {
		err := p.state.Update(ctx, ref(a, f), func(l *Live) error {
			l.Breaker = Breaker{}
			if a.QuotaGroup == "" {
				l.Cooldown, l.Buckets = Cooldown{}, Buckets{}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("dropping live state of account %s: %w", a.ID, err)
		}
	}
	return nil
}

// closeBreaker closes an account's breaker: an admin vouched for its key.
func (p *Pool) closeBreaker(ctx context.Context, a *account) error {
	err := p.state.Update(ctx, ref(a, FamilyDefault), func(l *Live) error {
		l.Breaker = Breaker{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resetting breaker of account %s: %w", a.ID, err)
	}
	return nil
}

// infos attaches live state to accounts of the view v.
func (p *Pool) infos(ctx context.Context, v *orgView, accounts []*account) ([]AccountInfo, error) {
	fams := Families()
	refs := make([]Ref, 0, len(accounts)*len(fams))
	for _, a := range accounts {
		for _, f := range fams {
			refs = append(refs, ref(a, f))
		}
	}
	now := p.now()
	out := make([]AccountInfo, len(accounts))
	for i, a := range accounts {
		out[i].Account = a.Account
		out[i].Account.KeyCiphertext = nil
		out[i].Account.Labels = maps.Clone(a.Labels)
		out[i].Capacity = make([]Capacity, len(fams))
	}
	err := p.state.Read(ctx, refs, func(k int, l Records) {
		i, j := k/len(fams), k%len(fams)
		a, info := accounts[i], &out[i]
		if j == 0 {
			b := *l.Breaker
			info.Breaker = BreakerInfo{State: p.breaker.state(b, now), ConsecutiveFailures: b.Failures}
			if b.Open {
				info.Breaker.OpenUntil = b.OpenUntil
			}
			if l.Cooldown.Until.After(now) {
				info.CooldownUntil, info.CooldownReason = l.Cooldown.Until, l.Cooldown.Reason
			}
		}
		f := fams[j]
		lim, _ := v.meteredLimits(a, f, p.tiers)
		bs := *l.Buckets
		info.Capacity[j] = Capacity{
			Family:            f,
			RequestsLimit:     int64(bs.Requests.limit(lim.RPM)),
			RequestsRemaining: remaining(bs.Requests, lim.RPM, now),
			InputTokensLimit:  int64(bs.Input.limit(lim.InputTPM)),
			InputRemaining:    remaining(bs.Input, lim.InputTPM, now),
			OutputTokensLimit: int64(bs.Output.limit(lim.OutputTPM)),
			OutputRemaining:   remaining(bs.Output, lim.OutputTPM, now),
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading live state: %w", err)
	}
	return out, nil
}

// remaining is what a new call could take: the level less the calls in
// flight.
func remaining(b Bucket, table int64, now time.Time) int64 {
	return int64(math.Floor(max(0, b.available(table, now))))
}

// Settings returns the organization's settings, the defaults when it never
// saved any.
func (p *Pool) Settings(ctx context.Context, orgID string) (store.Settings, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return store.Settings{}, err
	}
	return v.settings, nil
}

// UpdateSettings sets the organization's selection strategy; an empty
// strategy leaves it unchanged. FieldError for an unknown strategy.
func (p *Pool) UpdateSettings(ctx context.Context, orgID string, strategy store.Strategy) (store.Settings, error) {
	if strategy != "" && !validStrategy(strategy) {
		return store.Settings{}, unknownStrategy("selection_strategy", strategy)
	}
	var out store.Settings
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		out = v.settings
		if strategy != "" {
			out.SelectionStrategy = strategy
		}
		out.OrganizationID = orgID
		out.UpdateTime = store.Normalize(p.now())
		if err := p.store.PutSettings(ctx, out); err != nil {
			return nil, err
		}
		n := v.clone()
		n.settings = out
		return n, nil
	})
	return out, err
}

func validStrategy(s store.Strategy) bool { return slices.Contains(store.Strategies(), s) }

func unknownStrategy(field string, s store.Strategy) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf("unknown strategy %s; use one of %q", validate.Quote(string(s)), store.Strategies())}
}

// UsageQuery selects ledger rows.
type UsageQuery struct {
	// Filter.End zero means no upper bound, which is "until now" without
	// excluding a row written in the same instant as the query.
	Filter         store.UsageFilter
	IncludeRecords bool
	// PageSize is the number of rows per page, 1..1000.
	PageSize int
	After    *store.UsageCursor
}

// UsageReport is the answer to a UsageQuery.
type UsageReport struct {
	Total     store.UsageTotals
	ByAccount []store.UsageTotals
	Records   []store.UsageRecord
	// Next is the cursor of the following page, nil on the last one.
	Next *store.UsageCursor
}

// Usage sums the ledger by account and, when asked, returns one page of
// rows, newest first. Reading the ledger goes to the store: it is not a hot
// path.
func (p *Pool) Usage(ctx context.Context, orgID string, q UsageQuery) (UsageReport, error) {
	by, err := p.store.SumUsage(ctx, orgID, q.Filter)
	if err != nil {
		return UsageReport{}, fmt.Errorf("summing usage: %w", err)
	}
	r := UsageReport{ByAccount: by}
	for _, t := range by {
		r.Total.Requests += t.Requests
		r.Total.FailedRequests += t.FailedRequests
		r.Total.InputTokens += t.InputTokens
		r.Total.OutputTokens += t.OutputTokens
		r.Total.CacheReadTokens += t.CacheReadTokens
		r.Total.CacheCreationTokens += t.CacheCreationTokens
		r.Total.CostUSD += t.CostUSD
	}
	if q.IncludeRecords {
		r.Records, r.Next, err = p.store.ListUsage(ctx, orgID, q.Filter, q.PageSize, q.After)
		if err != nil {
			return UsageReport{}, fmt.Errorf("listing usage: %w", err)
		}
	}
	return r, nil
}
