package outbox

// The background delivery loop and the outbox's statistics.

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// TargetStats is what waits for one target.
type TargetStats struct {
	Target string
	// Records waiting, and the enqueue time of the oldest (zero when none).
	Records int
	Oldest  time.Time
	// Failures counts the deliveries to it that failed since the process
	// started.
	Failures uint64
}

// TargetStats reports, per target, what waits and how many deliveries
// failed, in target order. It walks every lane: for metrics scrapes, not
// the hot path.
func (o *Outbox) TargetStats() []TargetStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	by := map[string]*TargetStats{}
	get := func(t string) *TargetStats {
		st, ok := by[t]
		if !ok {
			st = &TargetStats{Target: t, Failures: o.failures[t]}
			by[t] = st
		}
		return st
	}
	for t := range o.failures {
		get(t)
	}
	for _, l := range o.lanes {
		st := get(l.target)
		st.Records += len(l.records)
		if len(l.records) > 0 && (st.Oldest.IsZero() || l.records[0].Enqueued.Before(st.Oldest)) {
			st.Oldest = l.records[0].Enqueued
		}
	}
	out := make([]TargetStats, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b TargetStats) int { return strings.Compare(a.Target, b.Target) })
	return out
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run delivers pending records until ctx ends, and logs the outbox's
// depth and age while it is not empty.
func (o *Outbox) Run(ctx context.Context) {
	sem := make(chan struct{}, o.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	report := time.NewTicker(o.cfg.ReportInterval)
	defer report.Stop()
	for {
		next := o.dispatch(ctx, sem, &wg)
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-o.wake:
		case <-timer.C:
		case <-report.C:
			o.report()
		}
		timer.Stop()
	}
}

// dispatch starts deliveries for ready lanes of targets that are not
// backing off, as far as workers are free, and returns how long until a
// backed-off target may be tried again.
func (o *Outbox) dispatch(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	next := time.Minute
	for _, t := range o.targets {
		if now.Before(t.downUntil) {
			next = min(next, t.downUntil.Sub(now))
			continue
		}
		for len(t.ready) > 0 {
			select {
			case sem <- struct{}{}:
			default:
				return min(next, 10*time.Millisecond) // workers busy: look again soon
			}
			l := t.ready[0]
			t.ready = t.ready[1:]
			l.queued, l.busy = false, true
			wg.Go(func() {
				defer func() { <-sem }()
				o.deliver(ctx, l)
			})
			if t.backoff > 0 {
				break // a backed-off target gets one probe, not the whole backlog
			}
		}
	}
	return next
}

func (o *Outbox) report() {
	depth, oldest, dropped := o.Stats()
	if depth == 0 {
		return
	}
	o.cfg.Logger.Warn("outbox: bookkeeping records are waiting for AccountPool or Activity",
		"pending", depth, "oldest_age", o.cfg.Now().Sub(oldest).Round(time.Second), "dropped", dropped, "durable", o.Durable())
}

// Stats returns the pending records, when the oldest was enqueued, and how
// many records were dropped as permanently refused.
func (o *Outbox) Stats() (depth int, oldest time.Time, dropped int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range o.lanes {
		if len(l.records) > 0 && (oldest.IsZero() || l.records[0].Enqueued.Before(oldest)) {
			oldest = l.records[0].Enqueued
		}
	}
	return o.depth, oldest, o.dropped
}
