// Package limits bounds each organization's tasks in the Orchestrator: how
// many run at once and how many start per second (a token bucket with a
// burst). The check runs before anything else of a task (before an account
// is selected or an activity started), so a refused task leases nothing,
// writes nothing and costs one map lookup under a mutex.
//
// The limits are the service-wide defaults, overridden field by field by
// the organization's OrganizationSettings.task_limits, which the Limiter
// fetches (Config.Fetch) and caches per organization:
//
//   - a fresh entry (younger than CacheTTL) costs no round trip;
//   - an expired entry is still used while one background fetch refreshes
//     it, so after the first task of an organization no task waits for the
//     AccountPool;
//   - the first task of an organization (or the first after its entry was
//     evicted) waits for one fetch, bounded by FetchTimeout; concurrent
//     first tasks share it (single flight);
//   - a failed fetch never fails a task: the last known limits stay in force
//     (the defaults when there are none) and the fetch is tried again after
//     RetryAfterFailure, so an AccountPool that is down (the orchestrator's
//     legacy fallback mode) costs at most one bounded wait per organization
//     and window, and no task in between.
//
// Limiter state is bounded: entries are kept in least-recently-used order
// and an entry with no task running or waiting is evicted once it has been
// idle for IdleTTL and its bucket would have refilled (so eviction never
// hands an organization a fresh burst it had not earned back); beyond
// MaxOrganizations entries, the least recently used entries without a
// running task are evicted regardless. An entry with tasks running is never
// evicted: its count must stay exact.
//
// The limits are per orchestrator replica: N replicas admit up to N times
// an organization's limits in all.
package limits

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// Limits are one organization's task limits. In a Config's Defaults every
// field must be positive; in an override (what Fetch returns) a zero field
// means the default.
type Limits struct {
	// MaxConcurrent is the tasks that may run at once.
	MaxConcurrent int
	// PerSecond is the sustained rate at which tasks may start.
	PerSecond float64
	// Burst is how many tasks may start at once above that rate.
	Burst int
}

// Service-wide defaults: generous enough that no well-behaved organization
// meets them, low enough that one organization cannot take the
// orchestrator's file descriptors and memory (see docs/operations.md). The
// burst equals the concurrency, so an organization may fill its share at
// once and is then held to the sustained rate.
const (
	DefaultMaxConcurrent = 256
	DefaultPerSecond     = 500
	DefaultBurst         = 512
)

// Default returns the service-wide default limits.
func Default() Limits {
	return Limits{MaxConcurrent: DefaultMaxConcurrent, PerSecond: DefaultPerSecond, Burst: DefaultBurst}
}

// With returns l with every positive field of o in place of its own.
func (l Limits) With(o Limits) Limits {
	if o.MaxConcurrent > 0 {
		l.MaxConcurrent = o.MaxConcurrent
	}
	if o.PerSecond > 0 && !math.IsInf(o.PerSecond, 0) {
		l.PerSecond = o.PerSecond
	}
	if o.Burst > 0 {
		l.Burst = o.Burst
	}
	return l
}

// Check reports what is wrong with l as a service default.
func (l Limits) Check() error {
	switch {
	case l.MaxConcurrent <= 0:
		return fmt.Errorf("the default max concurrent tasks per organization must be positive, not %d", l.MaxConcurrent)
	case !(l.PerSecond > 0) || math.IsInf(l.PerSecond, 0):
		return fmt.Errorf("the default tasks per second per organization must be a positive number, not %v", l.PerSecond)
	case l.Burst <= 0:
		return fmt.Errorf("the default task burst per organization must be positive, not %d", l.Burst)
	}
	return nil
}

// CheckOverride reports a field that is neither zero (the default) nor a
// valid limit.
func (l Limits) CheckOverride() error {
	switch {
	case l.MaxConcurrent < 0:
		return fmt.Errorf("max concurrent tasks per organization must not be negative, not %d", l.MaxConcurrent)
	case l.PerSecond < 0 || math.IsNaN(l.PerSecond) || math.IsInf(l.PerSecond, 0):
		return fmt.Errorf("tasks per second per organization must be a finite number, not negative, not %v", l.PerSecond)
	case l.Burst < 0:
		return fmt.Errorf("task burst per organization must not be negative, not %d", l.Burst)
	}
	return nil
}

// Names of the two limits as the API names them (TaskLimits fields), in
// errors and in the refusal metric's switchyard.limit attribute.
const (
	LimitConcurrent = "max_concurrent_tasks"
	LimitRate       = "tasks_per_second"
)

// Error is a refused task: which limit, its value, and when a retry may
// succeed. Nothing of the task ran.
type Error struct {
	// Limit is LimitConcurrent or LimitRate.
	Limit string
	// Limits are the organization's limits in force.
	Limits Limits
	// RetryAfter is the time until the bucket has a token (LimitRate) or
	// a fixed short delay (LimitConcurrent: when a running task ends is
	// unknown).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Limit == LimitConcurrent {
		return fmt.Sprintf("the organization already has %d tasks running, its limit (task_limits.max_concurrent_tasks %d)",
			e.Limits.MaxConcurrent, e.Limits.MaxConcurrent)
	}
	return fmt.Sprintf("the organization is starting tasks faster than its limit (task_limits.tasks_per_second %s with a burst of %d)",
		FormatRate(e.Limits.PerSecond), e.Limits.Burst)
}

// Value is the limit's value as text, for error details.
func (e *Error) Value() string {
	if e.Limit == LimitConcurrent {
		return strconv.Itoa(e.Limits.MaxConcurrent)
	}
	return FormatRate(e.Limits.PerSecond)
}

// FormatRate writes a rate without trailing zeros: 50, 0.5.
func FormatRate(r float64) string { return strconv.FormatFloat(r, 'g', -1, 64) }

// Fetch returns an organization's overrides (zero fields: the defaults).
// It is called with a context carrying the first waiting task's values
// (its trace and acting organization) but not its cancellation.
type Fetch func(ctx context.Context, orgID string) (Limits, error)

// Config configures a Limiter. Zero values take the documented defaults.
type Config struct {
	// Defaults are the service-wide limits; default Default(). Every field
	// must be positive.
	Defaults Limits
	// Fetch reads an organization's overrides; nil uses Defaults for every
	// organization.
	Fetch Fetch
	// CacheTTL is how long fetched limits are used before they are
	// refreshed; default 30s. A change of an organization's settings takes
	// effect within it.
	CacheTTL time.Duration
	// RetryAfterFailure is how long after a failed fetch the limits in
	// force (the defaults when there were none) are used before the next
	// fetch; default 5s.
	RetryAfterFailure time.Duration
	// FetchTimeout bounds one fetch; default 2s.
	FetchTimeout time.Duration
	// ConcurrencyRetryDelay is the RetryAfter of a task refused for
	// concurrency; default 1s.
	ConcurrencyRetryDelay time.Duration
	// IdleTTL is how long an entry with nothing running is kept after its
	// last use (and its bucket refilled); default 5m, at least CacheTTL.
	IdleTTL time.Duration
	// MaxOrganizations bounds the entries without a running task; default
	// 100,000 (an entry is a few hundred bytes).
	MaxOrganizations int
	// Now is the clock; default time.Now. Tests pass a fakeclock.
	Now func() time.Time
	// Meter receives switchyard.tasks.refused; nil for none.
	Meter  metric.MeterProvider
	Logger *slog.Logger
}

// Limiter admits tasks. It is safe for concurrent use.
type Limiter struct {
	cfg     Config
	refused metric.Int64Counter

	mu   sync.Mutex
	orgs map[string]*entry
	lru  lruList // most recently used first
	// fetches counts background and waited-for fetches in flight, for
	// tests (and Close) to wait on.
	fetches sync.WaitGroup
}

// entry is one organization's state.
type entry struct {
	org        string
	prev, next *entry // lru links

	running int // tasks admitted and not yet released
	waiting int // tasks waiting for the first fetch

	tokens float64   // the bucket's level at last
	last   time.Time // when tokens was computed
	used   time.Time // last admission or release

	loaded   bool          // limits were fetched (or the fetch failed)
	limits   Limits        // in force: Defaults.With(the override)
	expires  time.Time     // when limits are refreshed
	fetching chan struct{} // closed when the fetch in flight ends; nil when none
	failing  bool          // the last fetch failed (logged once per run of failures)
}

// New returns a Limiter.
func New(cfg Config) (*Limiter, error) {
	if cfg.Defaults == (Limits{}) {
		cfg.Defaults = Default()
	}
	if err := cfg.Defaults.Check(); err != nil {
		return nil, err
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.RetryAfterFailure <= 0 {
		cfg.RetryAfterFailure = 5 * time.Second
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 2 * time.Second
	}
	if cfg.ConcurrencyRetryDelay <= 0 {
		cfg.ConcurrencyRetryDelay = time.Second
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = 5 * time.Minute
	}
	cfg.IdleTTL = max(cfg.IdleTTL, cfg.CacheTTL)
	if cfg.MaxOrganizations <= 0 {
		cfg.MaxOrganizations = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mp := cfg.Meter
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	refused, _ := mp.Meter("github.com/switchyard-dev/switchyard/services/orchestrator/internal/limits").Int64Counter(
		"switchyard.tasks.refused", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks refused before they ran because their organization was over a task limit, by limit (max_concurrent_tasks, tasks_per_second)."))
	return &Limiter{cfg: cfg, refused: refused, orgs: map[string]*entry{}}, nil
}

// Acquire admits one task of the organization or refuses it with *Error.
// On admission the caller must call release exactly once when the task
// ends (further calls do nothing). The only other error is ctx's, when the
// caller gives up while the organization's first fetch is in flight.
func (l *Limiter) Acquire(ctx context.Context, orgID string) (release func(), err error) {
	l.mu.Lock()
	now := l.cfg.Now()
	e := l.entryLocked(orgID, now)
	if !e.loaded {
		wait := l.fetchLocked(ctx, e)
		e.waiting++
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		l.mu.Lock()
		e.waiting--
		if !e.loaded { // only the caller's context ends before the fetch does
			l.mu.Unlock()
			return nil, ctx.Err()
		}
		now = l.cfg.Now()
	} else if !now.Before(e.expires) && e.fetching == nil {
		l.fetchLocked(ctx, e) // refresh in the background; the current limits apply meanwhile
	}
	lim := e.limits
	l.refill(e, now)
	var refusal *Error
	switch {
	case e.running >= lim.MaxConcurrent:
		refusal = &Error{Limit: LimitConcurrent, Limits: lim, RetryAfter: l.cfg.ConcurrencyRetryDelay}
	case e.tokens < 1:
		wait := time.Duration(math.Ceil((1 - e.tokens) / lim.PerSecond * float64(time.Second)))
		refusal = &Error{Limit: LimitRate, Limits: lim, RetryAfter: max(wait, time.Millisecond)}
	default:
		e.tokens--
		e.running++
		e.used = now
	}
	l.mu.Unlock()
	if refusal != nil {
		l.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("switchyard.limit", refusal.Limit)))
		return nil, refusal
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(e) }) }, nil
}

func (l *Limiter) release(e *entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.running--
	e.used = l.cfg.Now()
	if l.orgs[e.org] == e {
		l.lru.moveToFront(e)
	}
}

// refill brings e's bucket up to now under the limits in force (a lowered
// burst caps what is already in it).
func (l *Limiter) refill(e *entry, now time.Time) {
	lim := e.limits
	if elapsed := now.Sub(e.last); elapsed > 0 {
		e.tokens += elapsed.Seconds() * lim.PerSecond
	}
	e.tokens = min(e.tokens, float64(lim.Burst))
	if now.After(e.last) {
		e.last = now
	}
}

// entryLocked evicts what has become evictable, then returns the
// organization's entry, created with a full bucket of the defaults (the
// burst of the limits fetched next caps it), moved to the front.
//
// Eviction comes first: the pass moves busy entries to the front, which
// can leave the caller's entry at the back, and an entry evicted after it
// was looked up would be an orphan whose counts no later call sees.
func (l *Limiter) entryLocked(orgID string, now time.Time) *entry {
	l.evictLocked(now)
	e, ok := l.orgs[orgID]
	if !ok {
		e = &entry{org: orgID, limits: l.cfg.Defaults, tokens: float64(l.cfg.Defaults.Burst), last: now, used: now}
		l.orgs[orgID] = e
		l.lru.pushFront(e)
	} else {
		l.lru.moveToFront(e)
	}
	return e
}

// evictSteps bounds the work of one eviction pass: amortised, every entry
// is visited a constant number of times (an entry skipped because tasks
// are running is moved to the front).
const evictSteps = 16

// evictLocked drops idle entries from the back of the LRU list, and over
// MaxOrganizations any entry with nothing running or waiting.
func (l *Limiter) evictLocked(now time.Time) {
	for range evictSteps {
		e := l.lru.back()
		if e == nil {
			return
		}
		over := len(l.orgs) > l.cfg.MaxOrganizations
		busy := e.running > 0 || e.waiting > 0 || e.fetching != nil
		switch {
		case busy && over:
			l.lru.moveToFront(e) // cannot go; look at the next
		case busy:
			if now.Sub(e.used) < l.cfg.IdleTTL {
				return
			}
			l.lru.moveToFront(e) // long-running tasks keep it; look at the next
		case over || l.idle(e, now):
			l.lru.remove(e)
			delete(l.orgs, e.org)
		default:
			return // the back is the least recently used: nothing older to evict
		}
	}
}

// idle reports whether dropping e changes nothing but the cache: nothing
// runs, it was last used IdleTTL ago, and its bucket is full again.
func (l *Limiter) idle(e *entry, now time.Time) bool {
	idleFor := now.Sub(e.used)
	refill := time.Duration(float64(e.limits.Burst) / e.limits.PerSecond * float64(time.Second))
	return idleFor >= l.cfg.IdleTTL && idleFor >= refill
}

// fetchLocked starts the organization's fetch unless one is in flight and
// returns the channel closed when it ends.
func (l *Limiter) fetchLocked(ctx context.Context, e *entry) <-chan struct{} {
	if e.fetching != nil {
		return e.fetching
	}
	done := make(chan struct{})
	e.fetching = done
	if l.cfg.Fetch == nil {
		l.settleLocked(e, Limits{}, nil)
		return done
	}
	fctx := context.WithoutCancel(ctx)
	l.fetches.Add(1)
	go func() {
		defer l.fetches.Done()
		fctx, cancel := context.WithTimeout(fctx, l.cfg.FetchTimeout)
		o, err := l.cfg.Fetch(fctx, e.org)
		cancel()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.settleLocked(e, o, err)
	}()
	return done
}

// settleLocked records a fetch's result and wakes its waiters.
func (l *Limiter) settleLocked(e *entry, override Limits, err error) {
	now := l.cfg.Now()
	switch {
	case err != nil:
		if !e.loaded {
			e.limits = l.cfg.Defaults
		}
		e.expires = now.Add(l.cfg.RetryAfterFailure)
		if !e.failing {
			l.cfg.Logger.Warn("could not read the organization's task limits; the limits in force (the defaults when none were read) apply until the next try",
				"organization_id", e.org, "limits", e.limits, "retry_in", l.cfg.RetryAfterFailure, "error", err)
		}
		e.failing = true
	default:
		e.limits = l.cfg.Defaults.With(override)
		e.expires = now.Add(l.cfg.CacheTTL)
		e.failing = false
	}
	e.loaded = true
	close(e.fetching)
	e.fetching = nil
}

// Len is the number of organizations the limiter holds state for.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.orgs)
}

// Wait blocks until no fetch is in flight. Tests use it after a call that
// started a background refresh.
func (l *Limiter) Wait() { l.fetches.Wait() }

// String describes l for logs: "256 concurrent, 50/s, burst 256".
func (l Limits) String() string {
	return fmt.Sprintf("%d concurrent, %s/s, burst %d", l.MaxConcurrent, FormatRate(l.PerSecond), l.Burst)
}
