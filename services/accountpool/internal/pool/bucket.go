package pool

import (
	"fmt"
	"time"
)

// Buckets refill continuously at their per-minute limit: a bucket with
// limit L gains L/60 per second up to L. This is how Anthropic meters, so
// reserving against it predicts the upstream's 429s instead of discovering
// them.
//
// A bucket has two parts. Level is the metered part: usage settled by
// RecordRequest, refilling from the moment it was settled. Reserved is held
// by calls in flight, at their estimate, and does not refill: the upstream
// meters a call from when it receives it, which the pool only knows is
// before the answer, so counting a call's refill from its reservation would
// run ahead of the upstream by the time the call took to get there, and
// admit a call the upstream rejects at the edge of a refill. What a new call
// can take is the available part, Level less Reserved. With every call
// reserved before it is sent and settled after it is answered, the pool's
// count of a key is never more optimistic than the upstream's.

const refillWindow = time.Minute

// refillPerNanosecond is the fraction of its limit a bucket regains per
// nanosecond: a multiplication is much cheaper than a division in the
// per-account scan.
const refillPerNanosecond = 1.0 / float64(refillWindow)

func (b Bucket) limit(table int64) float64 {
	if b.Limit > 0 {
		return float64(b.Limit)
	}
	return float64(table)
}

// level is the metered part's level at now.
func (b Bucket) level(table int64, now time.Time) float64 {
	return b.levelAt(b.limit(table), now.UnixNano())
}

// available is what a new call can take at now: the level less what calls
// in flight hold.
func (b Bucket) available(table int64, now time.Time) float64 {
	return b.level(table, now) - float64(b.Reserved)
}

// levelAt is level with the limit resolved and now in Unix nanoseconds: the
// form the per-account scan of Select uses.
func (b *Bucket) levelAt(lim float64, now int64) float64 {
	if b.At.IsZero() {
		return lim
	}
	have := b.Level
	if el := now - b.At.UnixNano(); el > 0 {
		have += lim * float64(el) * refillPerNanosecond
	}
	if have > lim {
		return lim
	}
	return have
}

// refresh brings the stored level up to now, so later arithmetic is plain
// addition. At never moves back: calls settle concurrently, each with its
// own reading of the clock, and one that read it earlier but applies later
// must not make the bucket refill an interval twice. Its usage counts as
// metered at At instead, a little later than it was: the safe side.
func (b *Bucket) refresh(table int64, now time.Time) {
	b.Level = b.level(table, now)
	if now.After(b.At) {
		b.At = now
	}
}

// add adds delta (negative to take) at now, never above the limit.
func (b *Bucket) add(table int64, delta int64, now time.Time) {
	b.refresh(table, now)
	b.Level = min(b.limit(table), b.Level+float64(delta))
	b.compact(table, now)
}

// compact returns a full bucket with no reported limit and no open
// reservation to its zero value, so idle accounts hold no live records.
func (b *Bucket) compact(table int64, now time.Time) {
	if b.Limit == 0 && b.Reserved == 0 && b.level(table, now) >= b.limit(table) {
		*b = Bucket{}
	}
}

// need is how much must be in the bucket to take amount: the amount, capped
// at the limit, so an estimate larger than the whole bucket waits for a
// full bucket instead of never fitting.
func need(amount int64, lim float64) float64 {
	if a := float64(amount); a < lim {
		return a
	}
	return lim
}

// wait is how long until want is available, and whether refilling alone
// can ever make it so. Reservations do not refill: when what calls in
// flight hold leaves less than want even in a full bucket (held), only
// their settling frees it, at a time the bucket cannot know; wait is then
// how long the bucket takes to fill, a lower bound. Otherwise wait is
// exact if the calls in flight held their reservations that long and
// settled with exactly their estimate; a call that settles sooner, or
// uses less, frees its part sooner.
func (b Bucket) wait(table int64, want float64, now time.Time) (wait time.Duration, held bool) {
	have := b.available(table, now)
	if have >= want {
		return 0, false
	}
	lim := b.limit(table)
	rate := lim / refillWindow.Seconds()
	if want > lim-float64(b.Reserved) {
		return time.Duration(max(0, lim-b.level(table, now)) / rate * float64(time.Second)), true
	}
	return time.Duration((want - have) / rate * float64(time.Second)), false
}

// dimensionNames names the three buckets, in the fixed order of the arrays
// below, so explanations name the same bucket first every time. Arrays
// rather than closures keep the per-account scan in Select free of
// allocations.
func dimensionNames() [3]string { return [3]string{"requests", "input tokens", "output tokens"} }

func (bs *Buckets) all() [3]*Bucket { return [3]*Bucket{&bs.Requests, &bs.Input, &bs.Output} }

func (l Limits) all() [3]int64 { return [3]int64{l.RPM, l.InputTPM, l.OutputTPM} }

func (a Amount) all() [3]int64 { return [3]int64{a.Requests, a.Input, a.Output} }

// shortfall describes the first bucket short of an amount.
type shortfall struct {
	dim        int8 // index into dimensionNames
	need, have int64
	refill     time.Duration
	// held: calls in flight hold what the amount needs (see Bucket.wait).
	held bool
}

func (s shortfall) String() string {
	if s.held {
		return fmt.Sprintf("%s: need %d, have %d, held by calls in flight until they settle", dimensionNames()[s.dim], s.need, s.have)
	}
	return fmt.Sprintf("%s: need %d, have %d, refills in %s", dimensionNames()[s.dim], s.need, s.have, s.refill.Round(time.Millisecond))
}

// fit says whether the bucket holds amount now (in Unix nanoseconds), and
// the fraction of it left after taking the amount.
func (b *Bucket) fit(table, amount int64, now int64) (headroom float64, fits bool) {
	lim := float64(table)
	if b.Limit > 0 {
		lim = float64(b.Limit)
	}
	have, a := b.levelAt(lim, now)-float64(b.Reserved), float64(amount)
	if headroom = (have - a) / lim; headroom < 0 {
		headroom = 0
	}
	return headroom, have >= need(amount, lim)
}

// fits is check without the explanation: whether amt fits now (in Unix
// nanoseconds) and the headroom it leaves. It runs for every account on
// every selection, so it is plain comparisons and no arrays of pointers.
func (bs *Buckets) fits(lim *Limits, amt *Amount, now int64) (headroom float64, ok bool) {
	hr, okR := bs.Requests.fit(lim.RPM, amt.Requests, now)
	hi, okI := bs.Input.fit(lim.InputTPM, amt.Input, now)
	ho, okO := bs.Output.fit(lim.OutputTPM, amt.Output, now)
	headroom = hr
	if hi < headroom {
		headroom = hi
	}
	if ho < headroom {
		headroom = ho
	}
	return headroom, okR && okI && okO
}

func (bs *Buckets) shortfall(lim Limits, amt Amount, now time.Time) (wait time.Duration, held bool, short shortfall) {
	buckets, tables, amounts := bs.all(), lim.all(), amt.all()
	first := true
	for i, b := range buckets {
		l := b.limit(tables[i])
		want := need(amounts[i], l)
		if have := b.available(tables[i], now); have < want {
			w, h := b.wait(tables[i], want, now)
			wait, held = max(wait, w), held || h
			if first {
				short, first = shortfall{dim: int8(i), need: int64(want), have: int64(have), refill: w, held: h}, false
			}
		}
	}
	return wait, held, short
}

// reserve holds amt for a new lease.
func (bs *Buckets) reserve(amt Amount) {
	bs.Requests.Reserved += amt.Requests
	bs.Input.Reserved += amt.Input
	bs.Output.Reserved += amt.Output
}

// settle ends a lease's reservation: what it held is released and what the
// call actually used is metered, refilling from now. A released lease used
// nothing.
func (bs *Buckets) settle(lim Limits, reserved, used Amount, now time.Time) {
	tables, res, act := lim.all(), reserved.all(), used.all()
	for i, b := range bs.all() {
		b.Reserved = max(0, b.Reserved-res[i])
		b.add(tables[i], -act[i], now)
	}
}

// charge takes usage that had no reservation (its lease expired, or is
// unknown to this process).
func (bs *Buckets) charge(lim Limits, used Amount, now time.Time) {
	tables, act := lim.all(), used.all()
	for i, b := range bs.all() {
		b.add(tables[i], -act[i], now)
	}
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

// scaled is h as one replica's share of it: the limits and remaining
// counts times share, so a replica on state of its own calibrates its part
// of the buckets, not the whole.
func (h RateLimitHeaders) scaled(share float64) RateLimitHeaders {
	f := func(v int64) int64 {
		if v <= 0 {
			return v
		}
		return max(1, int64(float64(v)*share))
	}
	h.RequestsLimit, h.RequestsRemaining = f(h.RequestsLimit), f(h.RequestsRemaining)
	h.InputLimit, h.InputRemaining = f(h.InputLimit), f(h.InputRemaining)
	h.OutputLimit, h.OutputRemaining = f(h.OutputLimit), f(h.OutputRemaining)
	return h
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

// calibrate applies the headers to the buckets.
//
// A reported limit replaces the table's. A reported remaining count and
// reset time give the upstream's level, the reading: the lower of the count
// and the level from which steady refill reaches the limit exactly at the
// reset.
//
// The pool's count is never more optimistic than the upstream's for the
// pool's own calls (see the top of this file), so a reading can only tell
// the pool about usage it did not see: another client on the key, a
// restart, an estimate below the real usage. Only a reading lower than what
// the pool has available by more than the reading's error is such news: one
// unit of the count, one second of refill for the reset (rounded to the
// second), and the refill since the reading was taken, which is at most the
// age of the call it came with (age): the answer may have waited before it
// was recorded, while other calls settled. Then the level becomes the reading, and what is
// available the reading less the reservations still open: the upstream had
// not seen some of those calls when it answered, and counting the ones it
// had seen twice errs on the safe side. A higher reading is never taken: it
// was read when the upstream answered, and calls that reached the upstream
// after that and settled here before the reading arrived are neither in it
// nor among the open reservations; believing it would hand their capacity
// out again.
//
// A new limit changes the scale of the level, so the reading (less the
// open reservations) replaces it whatever its value.
func (bs *Buckets) calibrate(lim Limits, h RateLimitHeaders, age time.Duration, now time.Time) {
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
		b.refresh(table, now)
		before := b.limit(table)
		if r.limit > 0 {
			b.Limit = r.limit
		}
		l := b.limit(table)
		if r.remaining == 0 && r.reset.IsZero() {
			b.Level = min(b.Level, l)
			b.compact(table, now)
			continue
		}
		level := min(float64(r.remaining), l)
		if r.reset.After(now) {
			level = min(level, l-l*r.reset.Sub(now).Seconds()/refillWindow.Seconds())
		}
		resolution := 1 + l*(time.Second+max(0, age)).Seconds()/refillWindow.Seconds()
		if l != before || level < b.Level-float64(b.Reserved)-resolution {
			// The level becomes the reading, so what is available is the
			// reading less the reservations still open.
			b.Level = level
		}
		b.compact(table, now)
	}
}
