package anthropicsim

import "time"

// unitsPerToken scales bucket levels so that refilling limit/60 tokens per
// second is exact integer arithmetic at microsecond resolution: a bucket with a
// per-minute limit L gains L units per microsecond and one token is
// time.Minute/time.Microsecond units. Limits up to about 1.5e11 per minute fit
// in an int64.
const unitsPerToken = int64(time.Minute / time.Microsecond)

// bucket is a continuously refilled token bucket holding at most limit tokens
// and refilling limit/60 tokens per second. A bucket with limit <= 0 is
// unlimited. The zero value is unlimited.
type bucket struct {
	limit int64     // per minute
	level int64     // units, 0..limit*unitsPerToken
	last  time.Time // time of the last refill
}

func newBucket(perMinute int64, now time.Time) bucket {
	if perMinute <= 0 {
		return bucket{}
	}
	return bucket{limit: perMinute, level: perMinute * unitsPerToken, last: now}
}

func (b *bucket) unlimited() bool { return b.limit <= 0 }

func (b *bucket) capacity() int64 { return b.limit * unitsPerToken }

// refill brings the level up to date with now. A clock that goes backwards adds
// nothing.
func (b *bucket) refill(now time.Time) {
	if b.unlimited() {
		return
	}
	elapsed := now.Sub(b.last)
	if elapsed <= 0 {
		return
	}
	if elapsed >= time.Minute { // an empty bucket fills in one minute
		b.level, b.last = b.capacity(), now
		return
	}
	us := int64(elapsed / time.Microsecond)
	b.level = min(b.capacity(), b.level+us*b.limit)
	b.last = b.last.Add(time.Duration(us) * time.Microsecond) // keep the sub-µs remainder
}

// wait reports how long until the bucket holds n tokens, or 0 if it does now.
// When n exceeds the capacity it reports the time until the bucket is full (at
// least 1µs, so that the answer is never "now").
func (b *bucket) wait(n int64) time.Duration {
	if b.unlimited() || n*unitsPerToken <= b.level {
		return 0
	}
	target := min(n*unitsPerToken, b.capacity())
	return max(time.Microsecond, time.Duration(ceilDiv(target-b.level, b.limit))*time.Microsecond)
}

// take removes n tokens; callers check wait(n) == 0 first.
func (b *bucket) take(n int64) {
	if !b.unlimited() {
		b.level = max(0, b.level-n*unitsPerToken)
	}
}

// refund gives back n tokens taken earlier, up to the bucket's capacity.
func (b *bucket) refund(n int64) {
	if !b.unlimited() && n > 0 {
		b.level = min(b.capacity(), b.level+n*unitsPerToken)
	}
}

// remaining is the whole tokens available now.
func (b *bucket) remaining() int64 { return b.level / unitsPerToken }

// fullAt is when the bucket will be full again if nothing is taken.
func (b *bucket) fullAt(now time.Time) time.Time {
	return now.Add(time.Duration(ceilDiv(b.capacity()-b.level, b.limit)) * time.Microsecond)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
