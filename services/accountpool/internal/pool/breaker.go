package pool

import (
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// BreakerState is the state of an account's circuit breaker as callers see
// it.
type BreakerState string

// Breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half-open"
)

// breakerPolicy is the circuit breaker: closed → open after threshold
// consecutive counted failures → half-open after a cool-down → one probe
// lease → closed on success, open again (with a doubled cool-down) on
// failure. Only upstream errors (5xx, 529, timeouts, connection errors)
// count: a 429 is the upstream working as designed, a 4xx is the caller's
// fault, and a cancellation says nothing about the account.
type breakerPolicy struct {
	threshold int32
	base, max time.Duration
	// jitter maps the exponential bound to the actual cool-down (by
	// default equalJitter, uniform in [bound/2, bound]); it spreads the
	// probes of many accounts that failed together.
	jitter func(bound time.Duration) time.Duration
}

func (p breakerPolicy) state(b Breaker, now time.Time) BreakerState {
	switch {
	case !b.Open:
		return BreakerClosed
	case now.Before(b.OpenUntil):
		return BreakerOpen
	default:
		return BreakerHalfOpen
	}
}

// probeInFlight reports whether a half-open breaker's one probe is out.
func probeInFlight(b Breaker, now time.Time) bool {
	return b.ProbeLease != "" && now.Before(b.ProbeUntil)
}

// open trips the breaker; each consecutive opening doubles the bound of the
// cool-down, up to max.
func (p breakerPolicy) open(b *Breaker, now time.Time) {
	bound := p.base
	for i := int32(0); i < b.Opens && bound < p.max; i++ {
		bound *= 2
	}
	bound = min(bound, p.max)
	b.Open = true
	b.Opens++
	b.OpenUntil = now.Add(p.jitter(bound))
	b.ProbeLease, b.ProbeUntil = "", time.Time{}
}

// observe feeds one settled attempt to the breaker. probeLease is the
// settled lease's id when it was issued as a probe, empty otherwise
// (including when the lease is unknown: expired and forgotten, or from
// before a restart).
func (p breakerPolicy) observe(b *Breaker, probeLease string, o store.Outcome, now time.Time) {
	probe := probeLease != "" && b.ProbeLease == probeLease
	if probe {
		b.ProbeLease, b.ProbeUntil = "", time.Time{}
	}
	switch o {
	case store.OutcomeSuccess:
		// While open, a success from a lease issued before the breaker
		// tripped proves little; only the probe closes it.
		if !b.Open || probe {
			*b = Breaker{}
		}
	case store.OutcomeUpstreamError:
		switch {
		case probe:
			b.Failures++
			p.open(b, now)
		case !b.Open:
			b.Failures++
			if b.Failures >= p.threshold {
				p.open(b, now)
			}
		}
		// Stragglers failing while the breaker is open do not extend it.
	}
	// Other outcomes are not counted; a probe that ended in one freed its
	// slot above, so the next selection probes again.
}
