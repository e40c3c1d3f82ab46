// Package store defines what AccountPool keeps durably: accounts with their
// encrypted keys, per-organization settings and the usage ledger, behind
// one small [Store] interface that every backend implements (memstore for
// development, pgstore for production).
//
// Every method takes the organization id and reads or writes only that
// organization's rows: an id that exists in another organization is
// reported exactly like one that exists nowhere (ErrNotFound), so callers
// cannot probe other tenants. The one exception, ListOrganizations, returns
// organization ids and nothing of their rows, for maintenance that must
// visit every organization.
//
// Times are stored with microsecond precision in UTC (PostgreSQL's
// timestamptz precision); every backend truncates the same way, so a value
// read back equals the value written after truncation. The caller supplies
// every timestamp, which keeps the pool's injected clock authoritative and
// makes backends deterministic.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Backends wrap them with what was being done; callers test
// them with errors.Is.
var (
	// ErrNotFound is returned by GetAccount, UpdateAccount and DeleteAccount
	// when the organization has no account with the given id.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists is returned by CreateAccount when the organization
	// already has an account with the same name (names are unique per
	// organization, compared byte for byte) or the id is taken, and by
	// UpdateAccount when a rename collides with another account's name.
	ErrAlreadyExists = errors.New("already exists")
	// ErrLimitReached is returned by CreateAccount when the organization
	// already has as many accounts as the caller's limit allows.
	ErrLimitReached = errors.New("limit reached")
	// ErrDuplicate is returned by InsertUsage when the organization already
	// has a row for the same upstream call (request id, attempt, upstream
	// request id); the existing row is returned with it and nothing is
	// changed.
	ErrDuplicate = errors.New("duplicate usage record")
	// ErrConflict is returned by ReplaceKey when the account's stored key
	// ciphertext is no longer the one the caller read: another writer (a
	// key rotation, a concurrent re-encryption) replaced it first. Nothing
	// was written.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable may be wrapped by any method of a backend that cannot
	// reach its database. The call may or may not have taken effect; every
	// write here is safe to retry (usage inserts are idempotent).
	ErrUnavailable = errors.New("store unavailable")
	// ErrOutcomeUnknown, which wraps ErrUnavailable, is wrapped instead of
	// it when a write failed after it may have reached the database: the
	// connection broke or a timeout fired before the answer came, so the
	// write may have been applied. The caller must not report it as
	// failed; retrying is safe as ErrUnavailable says. Methods that only
	// read never return it.
	ErrOutcomeUnknown = fmt.Errorf("%w: outcome unknown", ErrUnavailable)
	// ErrQueryTimeout is returned by SumUsage and ListUsage when the read
	// ran longer than the backend allows one usage read (pgstore's
	// statement timeout), so that no caller can keep the database busy
	// for long. It does not wrap ErrUnavailable: the same read is likely
	// to time out again; a shorter range or a smaller page is not.
	ErrQueryTimeout = errors.New("usage query timed out")
)

// Status is an account's administrative state.
type Status string

// Account statuses.
const (
	// StatusActive accounts take traffic.
	StatusActive Status = "active"
	// StatusDisabled accounts were taken out of service by an admin.
	StatusDisabled Status = "disabled"
	// StatusInvalid accounts had their key rejected by the upstream
	// (401/402/403); they stay out of service until an admin sets them
	// active again.
	StatusInvalid Status = "invalid"
)

// Strategy names how the pool chooses among eligible accounts.
type Strategy string

// Selection strategies.
const (
	// StrategyLeastLoaded picks the account with the most headroom left
	// after the reservation. It is the default.
	StrategyLeastLoaded Strategy = "least-loaded"
	// StrategyRoundRobin takes each eligible account in turn.
	StrategyRoundRobin Strategy = "round-robin"
	// StrategyWeighted picks among eligible accounts at random, in
	// proportion to their weight.
	StrategyWeighted Strategy = "weighted"
	// StrategyPriority picks the eligible account with the lowest priority
	// number (ties by headroom); the others serve only as failover.
	StrategyPriority Strategy = "priority"
	// StrategySessionAffinity keeps a session on the account it used last
	// while that account is eligible and has headroom (prompt-cache hits),
	// and otherwise picks least-loaded and re-pins the session.
	StrategySessionAffinity Strategy = "session-affinity"
)

// Strategies returns every strategy, default first. Settings store the
// strategy as its string, so a new one needs no schema change.
func Strategies() []Strategy {
	return []Strategy{StrategyLeastLoaded, StrategyRoundRobin, StrategyWeighted, StrategyPriority, StrategySessionAffinity}
}

// Outcome classifies what the upstream answered to one attempt.
type Outcome string

// Outcomes, one per row of the outcome table in docs/architecture.md.
const (
	OutcomeSuccess       Outcome = "success"
	OutcomeRateLimited   Outcome = "rate_limited"
	OutcomeSpendLimited  Outcome = "spend_limited"
	OutcomeAuthFailed    Outcome = "auth_failed"
	OutcomeUpstreamError Outcome = "upstream_error"
	OutcomeClientError   Outcome = "client_error"
	OutcomeCancelled     Outcome = "cancelled"
)

// Account is one registered Anthropic API key. The key is held only as
// ciphertext; see package crypto for the format.
type Account struct {
	ID             string // UUID, assigned by the caller
	OrganizationID string
	Name           string // unique within the organization
	Tier           string
	Status         Status
	Weight         int32
	Priority       int32
	// QuotaGroup, when set, names the Anthropic organization whose rate
	// limits this key shares with the other keys of the group.
	QuotaGroup    string
	Labels        map[string]string
	KeyCiphertext []byte
	KeyVersion    int32
	CreateTime    time.Time
	UpdateTime    time.Time
}

// AccountUpdate lists the fields UpdateAccount changes; nil fields are left
// as they are. UpdateTime is always written.
type AccountUpdate struct {
	Name       *string
	Tier       *string
	Weight     *int32
	Priority   *int32
	Status     *Status
	QuotaGroup *string
	// Key, when set, replaces the key ciphertext and version together (key
	// rotation, re-encryption under a newer key-encryption key).
	Key        *EncryptedKey
	UpdateTime time.Time
}

// EncryptedKey is an API key's ciphertext and the version of the
// key-encryption key that produced it.
type EncryptedKey struct {
	Ciphertext []byte
	Version    int32
}

// Settings are an organization's pool preferences.
type Settings struct {
	OrganizationID    string
	SelectionStrategy Strategy
	// TaskLimits are the organization's limits in the Orchestrator; the
	// zero value (of any field) means the orchestrator's default.
	TaskLimits TaskLimits
	// UpdateTime is zero for an organization that never saved settings.
	UpdateTime time.Time
}

// TaskLimits bound an organization's tasks in the Orchestrator, which
// enforces them; the AccountPool only keeps them. A zero field means the
// orchestrator's service-wide default for it. The pool validates the
// ranges (pool.CheckTaskLimits) before a store sees them.
type TaskLimits struct {
	MaxConcurrentTasks int32
	TasksPerSecond     float64
	Burst              int32
}

// DefaultSettings are the settings of an organization that never saved any.
func DefaultSettings(orgID string) Settings {
	return Settings{OrganizationID: orgID, SelectionStrategy: StrategyLeastLoaded}
}

// DefaultKey is an organization's default key: the API key legacy mode
// runs on while the organization has no account in service. The key is
// held only as ciphertext, bound to the organization and to the default-key
// purpose (crypto.Keyring.EncryptDefaultKey), never to an account.
type DefaultKey struct {
	OrganizationID string
	Ciphertext     []byte
	KeyVersion     int32
	// Invalid is set once the upstream rejected the key (401/402/403);
	// legacy mode no longer hands it out until it is set again.
	Invalid    bool
	UpdateTime time.Time
}

// UsageRecord is one ledger row: one successful or failed model call.
type UsageRecord struct {
	ID             string // UUID, assigned by the caller
	OrganizationID string
	// AccountID is the account's UUID, empty for a legacy-mode call (the
	// orchestrator's fallback key, no pool account).
	AccountID string
	// AccountName is the account's name when the row was written, so rows
	// of renamed or deleted accounts stay readable.
	AccountName         string
	RequestID           string
	Attempt             int32
	Outcome             Outcome
	Model               string
	Category            string
	SessionID           string
	UserID              string
	InputTokens         int64
	OutputTokens        int64
	CacheReadTokens     int64
	CacheCreationTokens int64
	CostUSD             float64
	HTTPStatus          int32
	ErrorType           string
	UpstreamRequestID   string
	DurationMS          int64
	CreateTime          time.Time
}

// UsageFilter selects ledger rows. Zero fields do not filter.
type UsageFilter struct {
	// Start is inclusive.
	Start time.Time
	// End is exclusive.
	End time.Time
	// AccountID restricts the rows to one account.
	AccountID string
}

// UsageTotals sums the rows of one account.
type UsageTotals struct {
	AccountID string
	// AccountName is the name on the newest row summed.
	AccountName         string
	Requests            int64
	FailedRequests      int64 // rows whose outcome is not success
	InputTokens         int64
	OutputTokens        int64
	CacheReadTokens     int64
	CacheCreationTokens int64
	CostUSD             float64
}

// UsageCursor is a position in the ledger's newest-first order
// (CreateTime descending, then ID descending). ListUsage returns the rows
// strictly after it.
type UsageCursor struct {
	CreateTime time.Time
	ID         string
}

// Store is AccountPool's durable state. Implementations are safe for
// concurrent use. A method returns only the errors its comment names,
// wrapped, or an infrastructure error (possibly wrapping ErrUnavailable).
//
// Ids (accounts, usage rows) are UUIDs in canonical lower-case form, as
// uuid.NewString makes them. An account id that is not a UUID names no
// account: reads, updates and deletes report ErrNotFound for it.
type Store interface {
	// CreateAccount stores a new account. ErrAlreadyExists when the
	// organization already has an account named a.Name, or a.ID is taken;
	// ErrLimitReached when maxAccounts > 0 and the organization already has
	// maxAccounts accounts (or more: a lowered limit refuses until enough
	// are deleted). The count and the insert are one atomic step, even
	// across processes sharing the store: concurrent calls never take an
	// organization past maxAccounts together. Its cost does not grow with
	// the number of accounts beyond the count itself, which the limit
	// bounds.
	CreateAccount(ctx context.Context, a Account, maxAccounts int) error
	// GetAccount returns one account. ErrNotFound when the organization has
	// no account with that id.
	GetAccount(ctx context.Context, orgID, id string) (Account, error)
	// ListAccounts returns every account of the organization ordered by name
	// (byte order), empty when it has none.
	ListAccounts(ctx context.Context, orgID string) ([]Account, error)
	// UpdateAccount applies u atomically and returns the account as stored.
	// ErrNotFound when the organization has no account with that id;
	// ErrAlreadyExists when u renames it to another account's name.
	UpdateAccount(ctx context.Context, orgID, id string, u AccountUpdate) (Account, error)
	// DeleteAccount removes an account; its usage rows stay. ErrNotFound
	// when the organization has no account with that id.
	DeleteAccount(ctx context.Context, orgID, id string) error
	// ReplaceKey replaces the account's key ciphertext and version with key
	// and its update time with now, but only if the stored ciphertext still
	// equals old byte for byte: a compare-and-swap in one atomic step. It is
	// how a re-encryption under a newer key-encryption key writes back, so
	// that it can never overwrite a key rotated (UpdateAccount{Key}) after
	// the old ciphertext was read; ciphertexts carry a random nonce, so
	// equal bytes mean the same write. ErrNotFound when the organization has
	// no account with that id; ErrConflict when it has, with another
	// ciphertext. Either way nothing changes.
	ReplaceKey(ctx context.Context, orgID, id string, old []byte, key EncryptedKey, now time.Time) error

	// ListOrganizations returns the id of every organization that has
	// accounts or a default key, in byte order, without duplicates; it may
	// also name organizations whose accounts (or default key) were deleted. It is for maintenance
	// that must visit every tenant (re-encrypting keys), the one read that is
	// not scoped to an organization, and it returns ids only. It returns no
	// sentinel error.
	ListOrganizations(ctx context.Context) ([]string, error)

	// GetSettings returns the organization's settings, DefaultSettings when
	// it never saved any. It returns no sentinel error.
	GetSettings(ctx context.Context, orgID string) (Settings, error)
	// PutSettings creates or replaces the organization's settings
	// (s.OrganizationID). It returns no sentinel error.
	PutSettings(ctx context.Context, s Settings) error

	// GetDefaultKey returns the organization's default key. ErrNotFound
	// when it has none.
	GetDefaultKey(ctx context.Context, orgID string) (DefaultKey, error)
	// PutDefaultKey creates or replaces the organization's default key
	// (k.OrganizationID) with k as given, Invalid included: setting a key
	// again passes Invalid false. It returns no sentinel error.
	PutDefaultKey(ctx context.Context, k DefaultKey) error
	// DeleteDefaultKey removes the organization's default key. Deleting a
	// key that is not set is not an error; it returns no sentinel error.
	DeleteDefaultKey(ctx context.Context, orgID string) error
	// InvalidateDefaultKey marks the organization's default key invalid
	// and sets its update time to now, but only if the stored ciphertext
	// still equals ciphertext byte for byte, so an upstream's rejection of
	// a key can never mark the key that replaced it. ErrNotFound when the
	// organization has no default key; ErrConflict when it has another
	// ciphertext. Either way nothing changes. Marking a key already invalid
	// succeeds.
	InvalidateDefaultKey(ctx context.Context, orgID string, ciphertext []byte, now time.Time) error
	// ReplaceDefaultKey is ReplaceKey for the organization's default key:
	// a compare-and-swap of the ciphertext and version (the invalid flag
	// stays), for re-encryption. ErrNotFound when the organization has no
	// default key; ErrConflict when it has another ciphertext.
	ReplaceDefaultKey(ctx context.Context, orgID string, old []byte, key EncryptedKey, now time.Time) error

	// InsertUsage appends a ledger row and returns it as stored. When the
	// organization already has a row for the same upstream call
	// (RequestID, Attempt, UpstreamRequestID) it returns that existing row
	// and ErrDuplicate, and changes nothing, even under concurrent inserts
	// of the same call. Rows that differ only in UpstreamRequestID are two
	// real calls and are both kept.
	InsertUsage(ctx context.Context, r UsageRecord) (UsageRecord, error)
	// SumUsage returns one total per account with rows matching f, and for
	// legacy rows (no account) one total per account name, ordered by
	// account name then account id; empty when nothing matches.
	SumUsage(ctx context.Context, orgID string, f UsageFilter) ([]UsageTotals, error)
	// ListUsage returns at most limit (> 0) rows matching f, newest first
	// (CreateTime descending, then ID descending), starting strictly after
	// the cursor when it is not nil. next is the cursor for the following
	// page and nil when there are no more rows. Keyset pagination: rows
	// inserted between pages never cause a gap or a duplicate.
	ListUsage(ctx context.Context, orgID string, f UsageFilter, limit int, after *UsageCursor) (rows []UsageRecord, next *UsageCursor, err error)
}

// AllOrganizations is the organization id a ChangeWatcher reports when
// any organization may have changed. No organization has it: ids are never
// empty.
const AllOrganizations = ""

// ChangeWatcher is an optional capability of a Store that other processes
// share (pgstore): it reports changes to an organization's accounts,
// settings or default key, whoever made them, so each process can refresh its in-memory
// view instead of serving a stale one until restart. Stores that only one
// process can see (memstore) do not implement it. Callers discover it with
// a type assertion.
type ChangeWatcher interface {
	// WatchChanges calls onChange with an organization's id after a change
	// to its accounts, settings or default key has committed, including changes this
	// process made. It calls onChange(AllOrganizations) whenever changes
	// may have been missed, in particular once the feed is (re)established,
	// so a caller that reloads what it caches on that call never keeps a
	// view older than the feed. Notifications may repeat; they never name
	// what changed, only whose.
	//
	// onChange runs on WatchChanges' goroutine, one call at a time, and
	// should return quickly: the feed waits for it. WatchChanges retries a
	// lost feed by itself with backoff and runs until ctx is done; it then
	// returns nil.
	WatchChanges(ctx context.Context, onChange func(orgID string)) error
}

// Normalize returns t as backends store it: UTC, truncated to the
// microsecond.
func Normalize(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}
