package pool

import (
	"context"
	"fmt"
	"time"
)

// releaseLease gives an expired lease's reservation back and frees its
// probe slot; ExpireLeases runs it atomically with the expiry.
func releaseLease(l Lease, live *Live, now time.Time) {
	if l.Limits.valid() {
		live.Buckets.settle(l.Limits, l.Reserved, Amount{}, now)
	}
	if live.Breaker.ProbeLease == l.ID {
		live.Breaker.ProbeLease, live.Breaker.ProbeUntil = "", time.Time{}
	}
}

// RunExpiry expires leases every interval until ctx ends. Selections and
// account reads expire leases anyway before they look; this wakes the
// selections waiting for the capacity an abandoned lease holds, which
// nothing else would (its call will never settle).
func (p *Pool) RunExpiry(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := p.expireLeases(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			p.logger.WarnContext(ctx, "expiring leases failed; retrying every interval", "interval", every, "error", err)
			failing = true
		case err == nil && failing:
			p.logger.InfoContext(ctx, "expiring leases works again")
			failing = false
		}
	}
}

// expireLeases releases every lease that outlived LeaseTimeout unsettled.
// It runs at the start of every selection and account read, which are the
// only consumers of capacity, and every second in RunExpiry.
func (p *Pool) expireLeases(ctx context.Context) error {
	now := p.now()
	expired, err := p.state.ExpireLeases(ctx, now, func(l Lease, live *Live) { releaseLease(l, live, now) })
	p.countLeases(ctx, -int64(len(expired)))
	for _, l := range expired {
		p.changes.Notify(l.Ref.OrgID)
	}
	if err != nil {
		return fmt.Errorf("expiring leases: %w", err)
	}
	return nil
}
