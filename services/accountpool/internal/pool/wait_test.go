package pool

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func maxWait(d time.Duration) func(*SelectRequest) {
	return func(r *SelectRequest) { r.MaxWait = d }
}

// countingState counts the selections' reads, which is how many times a
// waiting Select looked.
type countingState struct {
	State
	reads chan struct{}
}

func (c *countingState) Read(ctx context.Context, set RefSet, fn func(int, Records)) error {
	select {
	case c.reads <- struct{}{}:
	default:
	}
	return c.State.Read(ctx, set, fn)
}

// A waiting selection gets the account as soon as the call holding its
// capacity settles, and looks again only when woken, not in a loop.
func TestSelectWaitsForASettle(t *testing.T) {
	cs := &countingState{State: NewMemState(), reads: make(chan struct{}, 100)}
	f := newFixture(t, func(c *Config) { c.State = cs })
	id := f.register("a", "tier1").Account.ID
	holder := f.mustSelect(estimate(30_000, 0)) // all of tier 1's input tokens
	for len(cs.reads) > 0 {
		<-cs.reads
	}

	got := make(chan Selection, 1)
	go func() {
		sel, err := f.pool.Select(f.ctx, f.selectReq(estimate(30_000, 0), maxWait(time.Minute)))
		if err != nil {
			t.Error(err)
		}
		got <- sel
	}()
	<-cs.reads // the waiter looked once and found nothing
	select {
	case sel := <-got:
		t.Fatalf("selected %s while the capacity was held", sel.AccountID)
	case <-cs.reads:
		t.Fatal("the waiter looked again before anything was freed")
	case <-time.After(50 * time.Millisecond):
	}
	f.record(holder, store.OutcomeSuccess, used(0, 0))
	sel := <-got
	require.Equal(t, id, sel.AccountID)
	require.Len(t, cs.reads, 1, "woken once, it looked once more and took the account")
}

// A breaker exists to fail fast: a selection never waits for one to
// half-open, however long it may wait.
func TestSelectNeverWaitsForAnOpenBreaker(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	f.failTimes(id, 5)
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	defer cancel()
	_, err := f.pool.Select(ctx, f.selectReq(maxWait(time.Hour)))
	var ex *ExhaustedError
	require.ErrorAs(t, err, &ex, "answered at once rather than at the deadline")
	require.Zero(t, ex.RetryAfter)
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "breaker open")
}

// A cool-down that ends after the wait is not waited for: nothing else
// can free the account sooner.
func TestSelectDoesNotWaitPastItsBudget(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	f.record(f.mustSelect(), store.OutcomeRateLimited, func(r *RecordRequest) { r.Headers.RetryAfter = 30 * time.Second })
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	defer cancel()
	_, err := f.pool.Select(ctx, f.selectReq(maxWait(10*time.Second)))
	var ex *ExhaustedError
	require.ErrorAs(t, err, &ex)
	require.Equal(t, 30*time.Second, ex.RetryAfter)
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "cooling down")
}

// A cool-down that ends within the wait is waited for.
func TestSelectWaitsForACooldownToEnd(t *testing.T) {
	f := newFixture(t)
	clock := f.clock
	id := f.register("a", "tier1").Account.ID
	f.record(f.mustSelect(), store.OutcomeRateLimited, func(r *RecordRequest) { r.Headers.RetryAfter = 20 * time.Millisecond })
	// The pool's clock is manual; move it as real time passes.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				clock.Advance(5 * time.Millisecond)
			}
		}
	}()
	sel, err := f.pool.Select(f.ctx, f.selectReq(maxWait(time.Minute)))
	require.NoError(t, err)
	require.Equal(t, id, sel.AccountID)
}

func TestSelectStopsWaitingWhenTheCallerLeaves(t *testing.T) {
	f := newFixture(t)
	f.register("a", "tier1")
	f.mustSelect(estimate(30_000, 0))
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() {
		_, err := f.pool.Select(ctx, f.selectReq(estimate(30_000, 0), maxWait(time.Hour)))
		done <- err
	}()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

// A call that never settles holds its capacity until its lease expires;
// RunExpiry expires it and so wakes the selection waiting for it.
func TestRunExpiryWakesAWaiterWhenAnAbandonedLeaseExpires(t *testing.T) {
	cs := &countingState{State: NewMemState(), reads: make(chan struct{}, 100)}
	f := newFixture(t, func(c *Config) { c.State = cs })
	id := f.register("a", "tier1").Account.ID
	f.mustSelect(estimate(30_000, 0)) // its caller dies: never recorded
	for len(cs.reads) > 0 {
		<-cs.reads
	}
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	go f.pool.RunExpiry(ctx, 5*time.Millisecond)
	got := make(chan error, 1)
	go func() {
		sel, err := f.pool.Select(ctx, f.selectReq(estimate(30_000, 0), maxWait(time.Hour)))
		if err == nil && sel.AccountID != id {
			err = fmt.Errorf("selected %s", sel.AccountID)
		}
		got <- err
	}()
	<-cs.reads // the waiter looked and found the capacity held
	f.clock.Advance(2 * time.Minute)
	require.NoError(t, <-got, "woken by the expiry, long before the lease timeout it computed in real time")
}
