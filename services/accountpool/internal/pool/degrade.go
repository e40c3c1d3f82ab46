package pool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// SharedState is a State that several replicas share and that can be out
// of reach: redisstate.State.
type SharedState interface {
	State
	// Replicas is how many replicas shared the state when it was last
	// reached; 0 if it never was.
	Replicas() int
	// Ping checks that the state can be reached.
	Ping(ctx context.Context) error
}

// DegradingState is the "degrade" failure policy for a shared state: while
// the shared state cannot be reached, this replica runs on a MemState of
// its own with its share of every account's limits, one over the number of
// replicas alive when the shared state was last reached, so that all of
// them together never hand out more than the whole, as long as every one of
// them has lost the shared state (one that alone lost it adds its share to
// the others' whole). Once pings reach the shared state again
// (pingsToRecover in a row) it is used again; what the local state learned
// meanwhile (its reservations, cool-downs, breakers) is set aside, and
// taken up again should the shared state fail within reuseLocalFor, so that
// a flapping Redis does not hand out a fresh share with every outage.
// Leases issued on either side that settle on the other are charged as
// unknown leases are. Only ErrStateUnavailable degrades (ErrStateContended
// means the state is there, only busy). A replica that never reached the
// shared state does not know its share and fails closed
// (ErrStateUnavailable) until it does.
//
// The other policy, "closed", is the shared state itself: its errors reach
// callers as ErrStateUnavailable, which SelectAccount answers with
// Unavailable.
type DegradingState struct {
	shared SharedState
	logger *slog.Logger
	every  time.Duration

	mu       sync.Mutex
	local    *MemState // while degraded, else nil
	share    float64
	degraded atomic.Bool
	// last is the local state of the previous outage and when it ended: a
	// Redis that flaps must not hand each outage a fresh, full share.
	last      *MemState
	lastShare float64
	lastEnd   time.Time
}

// Hysteresis of the degrade policy: how many pings in a row must succeed
// before the shared state is used again, and for how long after an outage
// its local state is taken up again by the next one.
const (
	pingsToRecover = 3
	reuseLocalFor  = time.Minute
)

var _ State = (*DegradingState)(nil)

// NewDegradingState wraps shared. Run must run for the state to come back
// after an outage.
func NewDegradingState(shared SharedState, logger *slog.Logger) *DegradingState {
	if logger == nil {
		logger = slog.Default()
	}
	return &DegradingState{shared: shared, logger: logger, every: 500 * time.Millisecond}
}

// Run pings the shared state while degraded, every half second, and goes
// back to it after pingsToRecover pings in a row succeed; it returns when
// ctx ends.
func (d *DegradingState) Run(ctx context.Context) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	good := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !d.degraded.Load() {
			good = 0
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, d.every)
		err := d.shared.Ping(pctx)
		cancel()
		if err != nil {
			good = 0
			continue
		}
		if good++; good < pingsToRecover {
			continue
		}
		good = 0
		d.mu.Lock()
		d.last, d.lastShare, d.lastEnd = d.local, d.share, time.Now()
		d.local = nil
		d.degraded.Store(false)
		d.mu.Unlock()
		d.logger.WarnContext(ctx, "the pool's shared live state is reachable again; using it")
	}
}

// current returns the local state while degraded, nil otherwise.
func (d *DegradingState) current() *MemState {
	if !d.degraded.Load() {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.local
}

// fellBack decides what a shared-state error means: for ErrStateUnavailable
// with a known share, degrade and return the local state to retry on.
func (d *DegradingState) fellBack(ctx context.Context, err error) (*MemState, bool) {
	if !errors.Is(err, ErrStateUnavailable) {
		return nil, false
	}
	n := d.shared.Replicas()
	if n < 1 {
		return nil, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local == nil {
		d.local, d.share = NewMemState(), 1/float64(n)
		if d.last != nil && time.Since(d.lastEnd) < reuseLocalFor && d.lastShare == d.share {
			// The previous outage's reservations and usage still count.
			d.local = d.last
		}
		d.last = nil
		d.degraded.Store(true)
		d.logger.ErrorContext(ctx, "the pool's shared live state is unreachable; this replica runs on state of its own with its share of every limit until it is back",
			"replicas", n, "share", d.share, "error", err)
	}
	return d.local, true
}

// Degraded reports whether the replica runs on state of its own.
func (d *DegradingState) Degraded() bool { return d.degraded.Load() }

// degradingSet prepares refs for both states.
type degradingSet struct {
	refs   []Ref
	shared RefSet
}

func (s *degradingSet) Refs() []Ref { return s.refs }

// Prepare implements State.
func (d *DegradingState) Prepare(refs []Ref) RefSet {
	return &degradingSet{refs: refs, shared: d.shared.Prepare(refs)}
}

func (d *DegradingState) sharedSet(set RefSet) RefSet {
	if ds, ok := set.(*degradingSet); ok {
		return ds.shared
	}
	return set
}

// on runs call on the state in use: the local one while degraded, else
// the shared one, and the local one after the shared one failed with
// ErrStateUnavailable. The shared state's calls that fail that way change
// nothing (a transaction whose outcome is unknown may have; the
// reservation it took then only holds capacity until its lease expires).
func on[T any](ctx context.Context, d *DegradingState, call func(State) (T, error)) (T, error) {
	if l := d.current(); l != nil {
		return call(l)
	}
	v, err := call(d.shared)
	if l, ok := d.fellBack(ctx, err); ok {
		return call(l)
	}
	return v, err
}

// done adapts a call without a result to on.
func done(err error) (struct{}, error) { return struct{}{}, err }

// Read implements State.
func (d *DegradingState) Read(ctx context.Context, set RefSet, fn func(int, Records)) error {
	_, err := on(ctx, d, func(s State) (struct{}, error) {
		if s == d.shared {
			return done(s.Read(ctx, d.sharedSet(set), fn))
		}
		return done(s.Read(ctx, Refs(set.Refs()), fn))
	})
	return err
}

// Update implements State.
func (d *DegradingState) Update(ctx context.Context, r Ref, fn func(*Live) error) error {
	_, err := on(ctx, d, func(s State) (struct{}, error) { return done(s.Update(ctx, r, fn)) })
	return err
}

// Reserve implements State.
func (d *DegradingState) Reserve(ctx context.Context, lease *Lease, fn func(*Live) error) error {
	_, err := on(ctx, d, func(s State) (struct{}, error) { return done(s.Reserve(ctx, lease, fn)) })
	return err
}

// Settle implements State.
func (d *DegradingState) Settle(ctx context.Context, orgID, accountID, leaseID string, fallback Ref, fn func(Lease, LeaseStatus, *Live) error) error {
	_, err := on(ctx, d, func(s State) (struct{}, error) {
		return done(s.Settle(ctx, orgID, accountID, leaseID, fallback, fn))
	})
	return err
}

// ExpireLeases implements State.
func (d *DegradingState) ExpireLeases(ctx context.Context, now time.Time, release func(Lease, *Live)) ([]Lease, error) {
	return on(ctx, d, func(s State) ([]Lease, error) { return s.ExpireLeases(ctx, now, release) })
}

// Share implements State.
func (d *DegradingState) Share() float64 {
	if !d.degraded.Load() {
		return d.shared.Share()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.local == nil {
		return d.shared.Share()
	}
	return d.share
}

// Freed implements State: the channel of the state in use now. A waiter
// whose state changes under it wakes at the time it computed.
func (d *DegradingState) Freed(orgID string) <-chan struct{} {
	if l := d.current(); l != nil {
		return l.Freed(orgID)
	}
	return d.shared.Freed(orgID)
}

// NextCursor implements State.
func (d *DegradingState) NextCursor(ctx context.Context, orgID string) (uint64, error) {
	return on(ctx, d, func(s State) (uint64, error) { return s.NextCursor(ctx, orgID) })
}

// SessionAccount implements State.
func (d *DegradingState) SessionAccount(ctx context.Context, orgID, sessionID string, now time.Time, ttl time.Duration) (string, error) {
	return on(ctx, d, func(s State) (string, error) { return s.SessionAccount(ctx, orgID, sessionID, now, ttl) })
}

// PinSession implements State.
func (d *DegradingState) PinSession(ctx context.Context, orgID, sessionID, accountID string, now time.Time, ttl time.Duration, maxPins int) error {
	_, err := on(ctx, d, func(s State) (struct{}, error) {
		return done(s.PinSession(ctx, orgID, sessionID, accountID, now, ttl, maxPins))
	})
	return err
}

// UnpinSession implements State.
func (d *DegradingState) UnpinSession(ctx context.Context, orgID, sessionID, accountID string) error {
	_, err := on(ctx, d, func(s State) (struct{}, error) { return done(s.UnpinSession(ctx, orgID, sessionID, accountID)) })
	return err
}
