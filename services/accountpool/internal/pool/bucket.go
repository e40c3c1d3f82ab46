package pool

import (
	"fmt"
	"time"
)

// Buckets refill continuously at their per-minute limit: a bucket with
// limit L gains L/60 per second up to L. This is how Anthropic meters, so
// reserving against it predicts the upstream's 429s instead of discovering
// them.

const refillWindow = time.Minute

func (b Bucket) limit(table int64) float64 {
	if b.Limit > 0 {
		return float64(b.Limit)
	}
	return float64(table)
}

// level is the bucket's level at now.
func (b Bucket) level(table int64, now time.Time) float64 {
	lim := b.limit(table)
	if b.At.IsZero() {
		return lim
	}
	elapsed := now.Sub(b.At)
	if elapsed < 0 {
		elapsed = 0
	}
	return min(lim, b.Level+lim*elapsed.Seconds()/refillWindow.Seconds())
}

// refresh brings the stored level up to now, so later arithmetic is plain
// addition.
func (b *Bucket) refresh(table int64, now time.Time) {
	b.Level = b.level(table, now)
	b.At = now
}

// add adds delta (negative to take) at now, never above the limit.
func (b *Bucket) add(table int64, delta int64, now time.Time) {
	b.refresh(table, now)
	b.Level = min(b.limit(table), b.Level+float64(delta))
	b.compact(table, now)
}

// compact returns a full bucket with no reported limit to its zero value, so
// idle accounts hold no live records.
func (b *Bucket) compact(table int64, now time.Time) {
	if b.Limit == 0 && b.level(table, now) >= b.limit(table) {
		*b = Bucket{}
	}
}

// need is how much must be in the bucket to take amount: the amount, capped
// at the limit, so an estimate larger than the whole bucket waits for a
// full bucket instead of never fitting.
func need(amount int64, lim float64) float64 { return min(float64(amount), lim) }

// wait is how long until the bucket holds want.
func (b Bucket) wait(table int64, want float64, now time.Time) time.Duration {
	have := b.level(table, now)
	if have >= want {
		return 0
	}
	rate := b.limit(table) / refillWindow.Seconds()
	return time.Duration((want - have) / rate * float64(time.Second))
}

// The three buckets in a fixed order, so explanations name the same bucket
// first every time. Arrays rather than closures keep the per-account scan in
// Select free of allocations.
func dimensionNames() [3]string { return [3]string{"requests", "input tokens", "output tokens"} }

func (bs *Buckets) all() [3]*Bucket { return [3]*Bucket{&bs.Requests, &bs.Input, &bs.Output} }

func (l Limits) all() [3]int64 { return [3]int64{l.RPM, l.InputTPM, l.OutputTPM} }

func (a Amount) all() [3]int64 { return [3]int64{a.Requests, a.Input, a.Output} }

// capacity is what the three buckets say about one amount at one instant.
type capacity struct {
	fits     bool
	headroom float64       // smallest fraction left after taking the amount, 0..1
	wait     time.Duration // until every bucket holds what the amount needs
	short    string        // the first bucket that is short, explained
}

func (bs Buckets) check(lim Limits, amt Amount, now time.Time) capacity {
	c := capacity{fits: true, headroom: 1}
	buckets, tables, amounts, names := bs.all(), lim.all(), amt.all(), dimensionNames()
	for i, b := range buckets {
		table, a := tables[i], amounts[i]
		l, have := b.limit(table), b.level(table, now)
		c.headroom = min(c.headroom, max(0, (have-float64(a))/l))
		want := need(a, l)
		if have < want {
			w := b.wait(table, want, now)
			c.wait = max(c.wait, w)
			if c.fits {
				c.short = fmt.Sprintf("%s: need %d, have %d, refills in %s", names[i], int64(want), int64(have), w.Round(time.Millisecond))
			}
			c.fits = false
		}
	}
	return c
}

// take reserves amt.
func (bs *Buckets) take(lim Limits, amt Amount, now time.Time) {
	tables, amounts := lim.all(), amt.all()
	for i, b := range bs.all() {
		b.add(tables[i], -amounts[i], now)
	}
}

// give returns amt (a refund; negative amounts charge).
func (bs *Buckets) give(lim Limits, amt Amount, now time.Time) {
	tables, amounts := lim.all(), amt.all()
	for i, b := range bs.all() {
		b.add(tables[i], amounts[i], now)
	}
}

func (a Amount) minus(b Amount) Amount {
	return Amount{a.Requests - b.Requests, a.Input - b.Input, a.Output - b.Output}
}

// RateLimitHeaders are the upstream's anthropic-ratelimit-* and retry-after
// headers. Zero means absent, except that a remaining count of zero is
// taken as present when its reset time is (Anthropic sends them together,
// and zero remaining is the reading that matters most).
type RateLimitHeaders struct {
	RequestsLimit, RequestsRemaining int64
	RequestsReset                    time.Time
	InputLimit, InputRemaining       int64
	InputReset                       time.Time
	OutputLimit, OutputRemaining     int64
	OutputReset                      time.Time
	RetryAfter                       time.Duration
}

// latestReset is the latest reset time reported, zero if none.
func (h RateLimitHeaders) latestReset() time.Time {
	var t time.Time
	for _, r := range []time.Time{h.RequestsReset, h.InputReset, h.OutputReset} {
		if r.After(t) {
			t = r
		}
	}
	return t
}

// calibrate applies the headers to the buckets: a reported limit replaces
// the table's; a reported remaining count and reset time set the level to
// the lower of the count and the level from which steady refill reaches the
// limit exactly at the reset (the upstream's view is the truth, and the
// lower reading is the safe one).
func (bs *Buckets) calibrate(lim Limits, h RateLimitHeaders, now time.Time) {
	type reading struct {
		limit, remaining int64
		reset            time.Time
	}
	readings := [3]reading{
		{h.RequestsLimit, h.RequestsRemaining, h.RequestsReset},
		{h.InputLimit, h.InputRemaining, h.InputReset},
		{h.OutputLimit, h.OutputRemaining, h.OutputReset},
	}
	tables := lim.all()
	for i, b := range bs.all() {
		r, table := readings[i], tables[i]
		if r.limit < 0 || r.remaining < 0 {
			continue
		}
		if r.limit > 0 {
			b.Limit = r.limit
		}
		if r.remaining == 0 && r.reset.IsZero() {
			continue
		}
		b.refresh(table, now)
		l := b.limit(table)
		level := min(float64(r.remaining), l)
		if r.reset.After(now) {
			level = min(level, l-l*r.reset.Sub(now).Seconds()/refillWindow.Seconds())
		}
		b.Level = level
		b.compact(table, now)
	}
}
