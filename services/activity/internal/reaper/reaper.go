// Package reaper runs the Activity service's sweep, so that no activity
// stays RUNNING forever: every interval it has the tracker mark the
// activities whose deadline plus grace has passed as ABANDONED (see the
// tracker package for what that means).
//
// Every replica of the service runs one. Sweeps of several replicas do not
// conflict (each activity is abandoned once, and the stores skip rather than
// wait for rows another sweep holds), so no leader is elected; running one
// replica's reaper or ten only changes how soon after its grace an activity
// is abandoned.
package reaper

import (
	"context"
	"log/slog"
	"time"

	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// Reaper sweeps on a schedule. The zero value is not usable; call New.
type Reaper struct {
	tracker  *tracker.Tracker
	grace    time.Duration
	interval time.Duration
	batch    int
	logger   *slog.Logger
}

// New returns a reaper that abandons activities grace after their
// deadline, sweeping every interval (which must be positive); logger
// receives what each sweep did and why one failed.
func New(t *tracker.Tracker, grace, interval time.Duration, logger *slog.Logger) *Reaper {
	return &Reaper{tracker: t, grace: grace, interval: interval, batch: tracker.AbandonBatch, logger: logger}
}

// Sweep abandons every activity that has expired by now, one bounded batch
// after another until a batch comes back short, so that a backlog (after an
// outage, say) drains in one sweep without one long statement. It returns
// how many it abandoned, also when a batch failed after others succeeded.
func (r *Reaper) Sweep(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.tracker.AbandonExpired(ctx, r.grace, r.batch)
		total += n
		if err != nil || n < r.batch {
			return total, err
		}
	}
}

// Run sweeps at once, then every interval, until ctx is done. A failed
// sweep is logged and tried again at the next tick: the reaper is
// housekeeping, and nothing waits for it.
func (r *Reaper) Run(ctx context.Context) {
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	r.run(ctx, ticker.C)
}

// run is Run on a given schedule: a sweep at once, then one per tick.
func (r *Reaper) run(ctx context.Context, ticks <-chan time.Time) {
	for {
		r.sweepAndLog(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
	}
}

func (r *Reaper) sweepAndLog(ctx context.Context) {
	n, err := r.Sweep(ctx)
	if n > 0 {
		r.logger.InfoContext(ctx, "activity: abandoned activities still running past their deadline plus grace", "count", n, "grace", r.grace)
	}
	if err != nil && ctx.Err() == nil {
		r.logger.ErrorContext(ctx, "activity: abandoning expired activities failed; retrying at the next sweep", "error", err, "retry_in", r.interval)
	}
}
