package pool

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// flakyShared is a shared state that can be taken down: every call fails
// with ErrStateUnavailable while down.
type flakyShared struct {
	*MemState
	down     atomic.Bool
	replicas int
}

func (f *flakyShared) err() error {
	if f.down.Load() {
		return fmt.Errorf("%w: redis: connection refused", ErrStateUnavailable)
	}
	return nil
}

func (f *flakyShared) Replicas() int { return f.replicas }

func (f *flakyShared) Ping(context.Context) error { return f.err() }

func (f *flakyShared) Read(ctx context.Context, set RefSet, fn func(int, Records)) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.MemState.Read(ctx, set, fn)
}

func (f *flakyShared) Reserve(ctx context.Context, l *Lease, fn func(*Live) error) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.MemState.Reserve(ctx, l, fn)
}

func (f *flakyShared) ExpireLeases(ctx context.Context, now time.Time, release func(Lease, *Live)) ([]Lease, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.MemState.ExpireLeases(ctx, now, release)
}

func TestDegradedReplicaKeepsToItsShare(t *testing.T) {
	shared := &flakyShared{MemState: NewMemState(), replicas: 3}
	ds := NewDegradingState(shared, quiet())
	ds.every = time.Millisecond
	f := newFixture(t, func(c *Config) { c.State = ds })
	f.register("a", "tier1") // 50 requests a minute

	f.mustSelect()
	shared.down.Store(true)
	admitted := 0
	for {
		_, err := f.pool.Select(f.ctx, f.selectReq())
		if err != nil {
			var ex *ExhaustedError
			require.ErrorAs(t, err, &ex)
			require.Contains(t, ex.Candidates[0].SkipReason, "requests: need 1, have 0")
			break
		}
		admitted++
	}
	require.True(t, ds.Degraded())
	require.Equal(t, 16, admitted, "a third of 50 requests a minute, on state of its own")

	shared.down.Store(false)
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { ds.Run(ctx); close(done) }()
	require.Eventually(t, func() bool { return !ds.Degraded() }, 10*time.Second, time.Millisecond, "back on the shared state once it answers")
	cancel()
	<-done
	sel := f.mustSelect()
	f.record(sel, store.OutcomeSuccess)
	require.Equal(t, int64(48), capacityOf(f.account(sel.AccountID), FamilySonnet).RequestsRemaining, "the shared state's count resumed: two of its 50 used")

	shared.down.Store(true)
	_, err := f.pool.Select(f.ctx, f.selectReq())
	var ex *ExhaustedError
	require.ErrorAs(t, err, &ex, "an outage soon after the last takes up its local state: no fresh share")
}

func TestDegradeFailsClosedWithoutAKnownShare(t *testing.T) {
	shared := &flakyShared{MemState: NewMemState(), replicas: 0}
	f := newFixture(t, func(c *Config) { c.State = NewDegradingState(shared, quiet()) })
	f.register("a", "tier1")
	shared.down.Store(true)
	_, err := f.pool.Select(f.ctx, f.selectReq())
	require.ErrorIs(t, err, ErrStateUnavailable, "a replica that never reached the shared state does not know its share")
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// flakySettle also fails Settle while down.
type flakySettle struct{ *flakyShared }

func (f *flakySettle) Settle(ctx context.Context, orgID, accountID, leaseID string, fallback Ref, fn func(Lease, LeaseStatus, *Live) error) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.flakyShared.Settle(ctx, orgID, accountID, leaseID, fallback, fn)
}

// The share is the one of the state that runs the call: a settle that
// starts on the shared state and falls back to the local one calibrates
// the local buckets with the replica's share of the upstream's limit, not
// the whole of it.
func TestAFallenBackSettleCalibratesTheShare(t *testing.T) {
	shared := &flakySettle{&flakyShared{MemState: NewMemState(), replicas: 3}}
	ds := NewDegradingState(shared, quiet())
	f := newFixture(t, func(c *Config) { c.State = ds })
	f.register("a", "tier1") // 50 requests a minute
	sel := f.mustSelect()
	shared.down.Store(true)
	f.record(sel, store.OutcomeSuccess, func(r *RecordRequest) {
		r.Headers.RequestsLimit, r.Headers.RequestsRemaining, r.Headers.RequestsReset = 50, 49, f.clock.Now().Add(1200*time.Millisecond)
	})
	require.True(t, ds.Degraded())
	admitted := 0
	for ; admitted < 100; admitted++ {
		if _, err := f.pool.Select(f.ctx, f.selectReq()); err != nil {
			break
		}
	}
	require.LessOrEqual(t, admitted, 16, "a third of 50 requests a minute, whatever the upstream's headers said")
}

// A cool-down that outlasts the wait is not waited for, even when the 429
// that started it also emptied the bucket: no settle can lift a cool-down.
func TestSelectDoesNotWaitOnACooldownThatAlsoLacksCapacity(t *testing.T) {
	f := newFixture(t)
	f.register("a", "tier1")
	f.record(f.mustSelect(), store.OutcomeRateLimited, func(r *RecordRequest) {
		r.Headers.RetryAfter = 30 * time.Second
		r.Headers.RequestsLimit, r.Headers.RequestsRemaining, r.Headers.RequestsReset = 50, 0, f.clock.Now().Add(time.Minute)
	})
	// Were it to wait, the context would end it first.
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	defer cancel()
	_, err := f.pool.Select(ctx, f.selectReq(maxWait(10*time.Second)))
	var ex *ExhaustedError
	require.ErrorAs(t, err, &ex, "answered at once, not at the context's end")
	require.Contains(t, ex.Candidates[0].SkipReason, "cooling down")
	require.Contains(t, ex.Candidates[0].SkipReason, "no headroom")
}
