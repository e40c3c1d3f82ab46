package limits

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
)

func newClock() *fakeclock.Clock { return fakeclock.New(time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)) }

// overrides is a fake AccountPool: per-organization overrides, a call
// count, and an optional failure.
type overrides struct {
	mu    sync.Mutex
	byOrg map[string]Limits
	err   error
	calls atomic.Int64
}

func (o *overrides) set(org string, l Limits) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byOrg == nil {
		o.byOrg = map[string]Limits{}
	}
	o.byOrg[org] = l
}

func (o *overrides) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.err = err
}

func (o *overrides) fetch(_ context.Context, org string) (Limits, error) {
	o.calls.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byOrg[org], o.err
}

func newLimiter(t *testing.T, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	require.NoError(t, err)
	return l
}

func mustAcquire(t *testing.T, l *Limiter, org string) func() {
	t.Helper()
	release, err := l.Acquire(context.Background(), org)
	require.NoError(t, err, org)
	return release
}

func requireRefused(t *testing.T, l *Limiter, org, limit string) *Error {
	t.Helper()
	release, err := l.Acquire(context.Background(), org)
	require.Nil(t, release)
	var le *Error
	require.ErrorAs(t, err, &le)
	require.Equal(t, limit, le.Limit, le.Error())
	return le
}

func TestConcurrencyCapIsPerOrganization(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 3, PerSecond: 1000, Burst: 1000}, Now: c.Now})
	var releases []func()
	for range 3 {
		releases = append(releases, mustAcquire(t, l, "a"))
	}
	le := requireRefused(t, l, "a", LimitConcurrent)
	require.Equal(t, time.Second, le.RetryAfter, "a fixed short delay: when a task ends is unknown")
	require.Contains(t, le.Error(), "max_concurrent_tasks 3")
	require.Equal(t, "3", le.Value())

	relB := mustAcquire(t, l, "b") // another organization is not affected
	releases[0]()
	releases[0]() // a second release does nothing
	relA := mustAcquire(t, l, "a")
	requireRefused(t, l, "a", LimitConcurrent)
	relA()
	relB()
	for _, r := range releases[1:] {
		r()
	}
	for range 3 {
		mustAcquire(t, l, "a")
	}
}

func TestRateLimitBurstThenRefusal(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 100, PerSecond: 2, Burst: 3}, Now: c.Now})
	for range 3 {
		mustAcquire(t, l, "a")()
	}
	le := requireRefused(t, l, "a", LimitRate)
	require.Equal(t, 500*time.Millisecond, le.RetryAfter, "the time until the next token at 2/s")
	require.Contains(t, le.Error(), "tasks_per_second 2 with a burst of 3")
	mustAcquire(t, l, "b")() // b has its own bucket

	c.Advance(250 * time.Millisecond)
	le = requireRefused(t, l, "a", LimitRate)
	require.Equal(t, 250*time.Millisecond, le.RetryAfter, "half a token is there")
	c.Advance(250 * time.Millisecond)
	mustAcquire(t, l, "a")()
	requireRefused(t, l, "a", LimitRate)

	c.Advance(time.Hour) // the bucket refills to the burst, no further
	for range 3 {
		mustAcquire(t, l, "a")()
	}
	requireRefused(t, l, "a", LimitRate)
}

func TestRefusedTaskConsumesNothing(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 1, PerSecond: 1, Burst: 2}, Now: c.Now})
	rel := mustAcquire(t, l, "a")
	for range 5 {
		requireRefused(t, l, "a", LimitConcurrent) // no token taken for these
	}
	rel()
	mustAcquire(t, l, "a")() // the second token of the burst is still there
}

func TestOverrideTakesEffectAfterTheCacheTTL(t *testing.T) {
	c := newClock()
	pool := &overrides{}
	pool.set("a", Limits{MaxConcurrent: 1})
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 10, PerSecond: 1000, Burst: 1000}, Fetch: pool.fetch, CacheTTL: 30 * time.Second, Now: c.Now})

	rel := mustAcquire(t, l, "a")
	le := requireRefused(t, l, "a", LimitConcurrent)
	require.Equal(t, 1, le.Limits.MaxConcurrent, "the override")
	require.Equal(t, 1000.0, le.Limits.PerSecond, "unset fields keep the defaults")
	require.EqualValues(t, 1, pool.calls.Load(), "one fetch; hits pay no round trip")

	pool.set("a", Limits{MaxConcurrent: 2})
	c.Advance(29 * time.Second)
	requireRefused(t, l, "a", LimitConcurrent)
	l.Wait()
	require.EqualValues(t, 1, pool.calls.Load(), "still fresh")

	c.Advance(time.Second)
	requireRefused(t, l, "a", LimitConcurrent) // the stale limits apply while the refresh runs
	l.Wait()
	require.EqualValues(t, 2, pool.calls.Load())
	rel2 := mustAcquire(t, l, "a")
	requireRefused(t, l, "a", LimitConcurrent)
	rel()
	rel2()

	// Back to the defaults when the override is cleared.
	pool.set("a", Limits{})
	c.Advance(30 * time.Second)
	mustAcquire(t, l, "a")()
	l.Wait()
	for range 10 {
		mustAcquire(t, l, "a")
	}
	requireRefused(t, l, "a", LimitConcurrent)
}

func TestLoweredBurstCapsTheBucket(t *testing.T) {
	c := newClock()
	pool := &overrides{}
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 100, PerSecond: 1, Burst: 50}, Fetch: pool.fetch, Now: c.Now})
	mustAcquire(t, l, "a")()
	pool.set("a", Limits{Burst: 2})
	c.Advance(30 * time.Second)
	mustAcquire(t, l, "a")() // refresh starts
	l.Wait()
	mustAcquire(t, l, "a")()
	mustAcquire(t, l, "a")()
	requireRefused(t, l, "a", LimitRate)
}

func TestFirstTasksShareOneFetch(t *testing.T) {
	c := newClock()
	gate := make(chan struct{})
	var calls atomic.Int64
	fetch := func(ctx context.Context, _ string) (Limits, error) {
		calls.Add(1)
		<-gate
		return Limits{MaxConcurrent: 5}, nil
	}
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 100, PerSecond: 1000, Burst: 1000}, Fetch: fetch, Now: c.Now})
	const n = 8
	results := make(chan error, n)
	for range n {
		go func() {
			_, err := l.Acquire(context.Background(), "a")
			results <- err
		}()
	}
	for l.waitingFor("a") < n {
		runtime.Gosched()
	}
	close(gate)
	var admitted, refused int
	for range n {
		if err := <-results; err == nil {
			admitted++
		} else {
			var le *Error
			require.ErrorAs(t, err, &le)
			refused++
		}
	}
	require.EqualValues(t, 1, calls.Load(), "one fetch for the whole burst")
	require.Equal(t, 5, admitted, "every waiter applies the fetched limit")
	require.Equal(t, 3, refused)
}

func TestCallerGivingUpDuringTheFirstFetch(t *testing.T) {
	gate := make(chan struct{})
	fetch := func(ctx context.Context, _ string) (Limits, error) {
		<-gate
		return Limits{}, nil
	}
	l := newLimiter(t, Config{Fetch: fetch})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.Acquire(ctx, "a")
	require.ErrorIs(t, err, context.Canceled)
	close(gate)
	l.Wait()
	mustAcquire(t, l, "a")()
}

func TestPoolDownAppliesTheDefaults(t *testing.T) {
	c := newClock()
	pool := &overrides{}
	pool.fail(errors.New("rpc error: code = Unavailable desc = connection refused"))
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 2, PerSecond: 1000, Burst: 1000}, Fetch: pool.fetch, RetryAfterFailure: 5 * time.Second, Now: c.Now})

	r1 := mustAcquire(t, l, "a")
	r2 := mustAcquire(t, l, "a")
	requireRefused(t, l, "a", LimitConcurrent) // the defaults are enforced
	require.EqualValues(t, 1, pool.calls.Load(), "the failure is remembered: no fetch per task")
	c.Advance(5 * time.Second)
	requireRefused(t, l, "a", LimitConcurrent)
	l.Wait()
	require.EqualValues(t, 2, pool.calls.Load(), "tried again after RetryAfterFailure")

	// The pool comes back with an override; a later outage keeps it.
	pool.fail(nil)
	pool.set("a", Limits{MaxConcurrent: 3})
	c.Advance(5 * time.Second)
	requireRefused(t, l, "a", LimitConcurrent) // the defaults still apply while the refresh runs
	l.Wait()
	r3 := mustAcquire(t, l, "a") // the override: 3
	requireRefused(t, l, "a", LimitConcurrent)
	r1()
	r2()
	r3()
	for range 3 {
		mustAcquire(t, l, "a")
	}
	requireRefused(t, l, "a", LimitConcurrent)
	pool.fail(errors.New("unavailable"))
	c.Advance(time.Minute)
	requireRefused(t, l, "a", LimitConcurrent)
	l.Wait()
	le := requireRefused(t, l, "a", LimitConcurrent)
	require.Equal(t, 3, le.Limits.MaxConcurrent, "the last known override outlives an outage")
}

func TestIdleOrganizationsAreEvicted(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 10, PerSecond: 10, Burst: 10}, IdleTTL: time.Minute, Now: c.Now})
	for i := range 10 {
		mustAcquire(t, l, fmt.Sprintf("org-%d", i))()
	}
	require.Equal(t, 10, l.Len())
	c.Advance(time.Minute)
	mustAcquire(t, l, "new")()
	require.Equal(t, 1, l.Len(), "every idle organization went")
}

func TestEvictionKeepsAnUnrefilledBucket(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 10, PerSecond: 0.01, Burst: 1}, IdleTTL: time.Minute, Now: c.Now})
	mustAcquire(t, l, "a")()
	c.Advance(70 * time.Second) // idle for IdleTTL, but at 0.01/s a token takes 100s
	mustAcquire(t, l, "other")()
	require.Equal(t, 2, l.Len(), "an organization whose bucket is still refilling is kept")
	requireRefused(t, l, "a", LimitRate)
	c.Advance(30 * time.Second)
	mustAcquire(t, l, "a")() // earned back, not handed out by eviction
}

func TestStateIsBoundedAndRunningCountsSurvive(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 1, PerSecond: 1000, Burst: 1000}, MaxOrganizations: 10, Now: c.Now})
	busy := mustAcquire(t, l, "busy")
	for i := range 1000 {
		mustAcquire(t, l, fmt.Sprintf("org-%d", i))()
		require.LessOrEqual(t, l.Len(), 11, "at most MaxOrganizations plus the one being admitted")
	}
	requireRefused(t, l, "busy", LimitConcurrent) // its running task is still counted
	busy()
	mustAcquire(t, l, "busy")
}

// A busy entry moved to the front by an eviction pass must not push the
// entry being admitted to the back and out: the task would count on an
// orphan, and the organization's next task would find a fresh entry.
func TestAdmittedOrganizationIsNotEvictedByThePassItTriggers(t *testing.T) {
	c := newClock()
	l := newLimiter(t, Config{Defaults: Limits{MaxConcurrent: 1, PerSecond: 1000, Burst: 1000}, IdleTTL: time.Minute, Now: c.Now})
	mustAcquire(t, l, "x")()
	held := mustAcquire(t, l, "b")
	defer held()
	c.Advance(10 * time.Minute) // x is idle, b busy past the TTL: the pass moves b ahead of x
	release := mustAcquire(t, l, "x")
	requireRefused(t, l, "x", LimitConcurrent)
	release()
	mustAcquire(t, l, "x")()
}

func TestDefaultsAreChecked(t *testing.T) {
	for _, bad := range []Limits{
		{MaxConcurrent: -1, PerSecond: 1, Burst: 1},
		{MaxConcurrent: 1, PerSecond: 0, Burst: 1},
		{MaxConcurrent: 1, PerSecond: -2, Burst: 1},
		{MaxConcurrent: 1, PerSecond: 1, Burst: 0},
	} {
		_, err := New(Config{Defaults: bad})
		require.Error(t, err, "%+v", bad)
	}
	l := newLimiter(t, Config{})
	require.Equal(t, Default(), l.cfg.Defaults)
}

// waitingFor is how many tasks of org wait for its first fetch.
func (l *Limiter) waitingFor(org string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.orgs[org]; ok {
		return e.waiting
	}
	return 0
}
