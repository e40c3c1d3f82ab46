package pool

import (
	"context"
	"time"
)

// State is the pool's live state: capacity buckets, cool-downs, circuit
// breakers, round-robin cursors, session pins and open leases. It changes on
// every SelectAccount and RecordRequest, so it lives outside the store.
//
// State is deliberately a dumb, atomic container: every policy (refill
// arithmetic, breaker transitions, what a header means) stays in the pool
// and reaches the state as a function run inside Update, Reserve, Settle or
// ExpireLeases. An implementation may run such a function more than once
// (an optimistic transaction retries on conflict), so it must be
// deterministic in its inputs and free of side effects, and must not call
// the State. MemState runs it once, under a per-organization mutex;
// RedisState (package redisstate) runs it in a compare-and-set
// transaction shared by every AccountPool replica.
//
// A reservation and the lease that gives it back change together (Reserve,
// Settle, ExpireLeases), so a process that dies between two calls never
// leaves capacity reserved with no lease to release it.
//
// Records are keyed per organization: an account's breaker by (org,
// account), cool-downs by (org, quota key) and buckets by (org, quota key,
// family), so accounts that share a quota group share their capacity and
// cool-down but keep their own breaker.
type State interface {
	// Prepare returns refs, all of one organization, in the form Read
	// takes. Selection reads the same refs (a view's selectable accounts)
	// on every call, so it prepares them once per view: an implementation
	// may compute there what it would otherwise compute on every Read
	// (MemState, where the records are; RedisState, the key names). A
	// RefSet stays valid for as long as the caller keeps it, and may be
	// read by many goroutines at once.
	Prepare(refs []Ref) RefSet
	// Read calls fn once per ref of set, in order, with that ref's live
	// records as they were at one instant. Records never written are zero
	// values. fn must treat the records as read-only, must not keep the
	// pointers after returning, and must not call the State. The records
	// may have changed by the time the caller acts on them: decisions that
	// must hold are re-checked in Reserve or Update.
	Read(ctx context.Context, set RefSet, fn func(i int, r Records)) error
	// Update runs fn atomically on the live records of ref and keeps its
	// changes only when it returns nil; fn's error is returned unchanged.
	// Records left at their zero value are dropped.
	Update(ctx context.Context, ref Ref, fn func(*Live) error) error
	// Reserve is Update on l.Ref that also records *l as an open lease, in
	// the same atomic step, when fn returns nil. fn may change *l (to mark
	// it as a breaker's probe, say); the lease recorded is *l as fn left
	// it. A lease id is never reused.
	Reserve(ctx context.Context, l *Lease, fn func(*Live) error) error
	// Settle marks a lease settled and, in the same atomic step, runs fn on
	// the live records it reserved from: fn gets the lease as recorded and
	// the status it had before the call (LeaseOpen or LeaseExpired the
	// first time, LeaseSettled after that). A lease that is unknown,
	// forgotten, or belongs to another organization or account is
	// LeaseUnknown, is left untouched, and fn runs on the records of
	// fallback instead. When fn returns an error nothing changes and the
	// error is returned unchanged.
	Settle(ctx context.Context, orgID, accountID, leaseID string, fallback Ref, fn func(l Lease, was LeaseStatus, live *Live) error) error
	// ExpireLeases marks every open lease whose ExpireTime is not after now
	// expired, runs release on its records in the same atomic step, and
	// returns the leases it expired. An implementation may look for due
	// leases less often than it is called (RedisState, at most every few
	// milliseconds per process), so a lease may expire somewhat after its
	// ExpireTime. Settled and expired leases are forgotten one lease
	// lifetime after their ExpireTime, which bounds how long a second
	// settle is recognised as one.
	ExpireLeases(ctx context.Context, now time.Time, release func(l Lease, live *Live)) ([]Lease, error)
	// Share is the fraction, in (0, 1], of every account's limits this
	// process may hand out: 1 when the state is the whole deployment's
	// (one process, or replicas sharing it), less while a replica runs on
	// state of its own (DegradingState) and must keep to its part.
	Share() float64
	// Freed returns a channel that is closed the next time capacity of the
	// organization may have been given back anywhere the state is shared:
	// a lease settled or expired, or records were changed by Update. A
	// waiting selection takes the channel before it looks, so an event
	// between its look and its wait still wakes it. Notifications may be
	// spurious or, when the state's connection is down, late: waiters also
	// wake at the time they computed.
	Freed(orgID string) <-chan struct{}
	// NextCursor returns the organization's round-robin cursor and advances
	// it by one.
	NextCursor(ctx context.Context, orgID string) (uint64, error)
	// SessionAccount returns the account the organization's session is
	// pinned to, "" when it has no pin or its pin was last used ttl or
	// longer before now. A pin found is marked used at now.
	SessionAccount(ctx context.Context, orgID, sessionID string, now time.Time, ttl time.Duration) (string, error)
	// PinSession pins the session to accountID, used at now. An
	// organization keeps at most maxPins pins: the least recently used go
	// first, and pins idle for ttl may be dropped at any time.
	PinSession(ctx context.Context, orgID, sessionID, accountID string, now time.Time, ttl time.Duration, maxPins int) error
	// UnpinSession removes the session's pin if it names accountID, so a
	// late un-pin never removes a newer pin to another account.
	UnpinSession(ctx context.Context, orgID, sessionID, accountID string) error
}

// RefSet is refs prepared for Read by the State that made them.
type RefSet interface {
	// Refs are the refs, in the order Read visits them.
	Refs() []Ref
}

// Refs is a RefSet prepared by nobody: every State can read it (MemState
// and RedisState read their own RefSets faster).
type Refs []Ref

// Refs implements RefSet.
func (r Refs) Refs() []Ref { return r }

// Ref names the live records of one account for one model family.
type Ref struct {
	OrgID     string
	AccountID string
	// QuotaKey is "g:<quota group>" for accounts in a quota group and
	// "a:<account id>" otherwise: the key capacity and cool-downs live under.
	QuotaKey string
	Family   Family
}

// Records points at one ref's live records during a State.Read callback.
// They are read-only and valid only until the callback returns.
type Records struct {
	Breaker  *Breaker
	Cooldown *Cooldown
	Buckets  *Buckets
}

// Records returns pointers to l's records.
func (l *Live) Records() Records {
	return Records{Breaker: &l.Breaker, Cooldown: &l.Cooldown, Buckets: &l.Buckets}
}

// Live is the live state one Ref names.
type Live struct {
	Breaker  Breaker  // per account
	Cooldown Cooldown // per quota key
	Buckets  Buckets  // per quota key and family
}

// Bucket is one continuously refilled token bucket. A zero At means the
// bucket was never used and is full. Limit, when positive, is the limit the
// upstream reported in an anthropic-ratelimit-*-limit header and overrides
// the tier table. Level may be negative: real usage can exceed what was
// reserved, and a reset far in the future leaves the bucket in debt.
//
// Reserved is the sum of the open reservations taken from the bucket and
// not yet settled or released. The upstream has not necessarily seen those
// requests yet, so a reading of its remaining count is lowered by them
// (see calibrate): without that, a response arriving while other requests
// are in flight would hand their capacity out a second time.
type Bucket struct {
	Level    float64
	At       time.Time
	Limit    int64
	Reserved int64
}

// Buckets are the three buckets Anthropic meters per model family.
type Buckets struct {
	Requests Bucket
	Input    Bucket // input tokens, including cache writes, excluding cache reads
	Output   Bucket
}

// CooldownReason says why a quota key cools down.
type CooldownReason string

// Cool-down reasons.
const (
	CooldownRateLimited  CooldownReason = "rate limited"
	CooldownSpendLimited CooldownReason = "spend limit reached"
	// CooldownRetryAfter is a retry-after on an answer other than a 429,
	// such as a 529 overloaded error.
	CooldownRetryAfter CooldownReason = "upstream asked to retry later"
)

// Cooldown keeps a quota key out of selection until Until.
type Cooldown struct {
	Until  time.Time
	Reason CooldownReason
}

// Breaker is one account's circuit breaker record. Open with now before
// OpenUntil is open; Open with now at or after OpenUntil is half-open, and a
// probe lease is in flight while ProbeLease is set and now is before
// ProbeUntil (so a lost probe frees the slot by itself).
type Breaker struct {
	Open bool
	// Failures counts consecutive counted failures.
	Failures int32
	// Opens counts consecutive openings; the cool-down doubles with each.
	Opens      int32
	OpenUntil  time.Time
	ProbeLease string
	ProbeUntil time.Time
}

// Amount is what a lease reserves: requests, input tokens, output tokens.
type Amount struct {
	Requests int64
	Input    int64
	Output   int64
}

// Lease is one selection's reservation, settled by RecordRequest or
// released when it expires.
type Lease struct {
	ID          string
	Ref         Ref
	AccountName string
	Tier        string
	// Limits are what the reservation was metered by, so releasing it
	// later does the same arithmetic.
	Limits   Limits
	Reserved Amount
	// Probe marks the one lease a half-open breaker lets through.
	Probe      bool
	IssueTime  time.Time
	ExpireTime time.Time
}

// LeaseStatus is where a lease is in its life.
type LeaseStatus int

// Lease statuses.
const (
	LeaseUnknown LeaseStatus = iota
	LeaseOpen
	LeaseExpired
	LeaseSettled
)
