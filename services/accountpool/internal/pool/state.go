package pool

import (
	"context"
	"time"
)

// State is the pool's live state: capacity buckets, cool-downs, circuit
// breakers, round-robin cursors and open leases. It changes on every
// SelectAccount and RecordRequest, so it lives outside the store.
//
// State is deliberately a dumb, atomic container: every policy (refill
// arithmetic, breaker transitions, what a header means) stays in the pool
// and reaches the state as a function run inside Update. MemState, the
// in-process implementation, runs it under a mutex; a Redis implementation
// (DESIGN §10, for several AccountPool replicas) runs it as an optimistic
// WATCH/MULTI transaction over the three keys a Ref names, retrying fn on
// conflict, and keeps leases in a sorted set by expiry. fn must therefore
// be deterministic in its inputs and free of side effects.
//
// Records are keyed per organization: an account's breaker by (org,
// account), cool-downs by (org, quota key) and buckets by (org, quota key,
// family), so accounts that share a quota group share their capacity and
// cool-down but keep their own breaker.
type State interface {
	// Snapshot returns a copy of the live records of each ref, in order.
	// Records never written are zero values. The copies may be stale by the
	// time they are used; decisions that must hold are re-checked in
	// Update.
	Snapshot(ctx context.Context, refs []Ref) ([]Live, error)
	// Update runs fn atomically on the live records of ref and keeps its
	// changes only when it returns nil; fn's error is returned unchanged.
	// Records left at their zero value are dropped.
	Update(ctx context.Context, ref Ref, fn func(*Live) error) error
	// AddLease records an open lease.
	AddLease(ctx context.Context, l Lease) error
	// SettleLease marks the lease settled and returns it with the status it
	// had before the call: LeaseOpen or LeaseExpired the first time,
	// LeaseSettled after that. A lease that is unknown, forgotten, or
	// belongs to another organization or account is LeaseUnknown and is
	// left untouched.
	SettleLease(ctx context.Context, orgID, accountID, leaseID string) (Lease, LeaseStatus, error)
	// ExpireLeases marks every open lease whose ExpireTime is not after now
	// expired and returns them, so their reservations can be released.
	// Settled and expired leases are forgotten one lease lifetime after
	// their ExpireTime, which bounds how long a second settle is
	// recognised as one.
	ExpireLeases(ctx context.Context, now time.Time) ([]Lease, error)
	// NextCursor returns the organization's round-robin cursor and advances
	// it by one.
	NextCursor(ctx context.Context, orgID string) (uint64, error)
}

// Ref names the live records of one account for one model family.
type Ref struct {
	OrgID     string
	AccountID string
	// QuotaKey is "g:<quota group>" for accounts in a quota group and
	// "a:<account id>" otherwise: the key capacity and cool-downs live under.
	QuotaKey string
	Family   Family
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
type Bucket struct {
	Level float64
	At    time.Time
	Limit int64
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
	Reserved    Amount
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
