package pool

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// The upstream's remaining count cannot include requests it has not seen
// yet. Calibrating to it as if it did would hand their capacity out twice.
func TestCalibrationCountsReservationsStillInFlight(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	var leases []Selection
	for range 10 {
		leases = append(leases, f.mustSelect(estimate(0, 0)))
	}
	require.Equal(t, int64(40), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)

	// The first call comes back; the upstream has seen only it: 49 left.
	// That is no news: the pool counts the 9 others too.
	f.record(leases[0], store.OutcomeSuccess, func(r *RecordRequest) { r.Headers.RequestsRemaining = 49 })
	require.Equal(t, int64(40), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)

	// Someone else used the key: 20 left by the upstream, which has not
	// seen the 9 calls still in flight.
	f.record(leases[1], store.OutcomeSuccess, func(r *RecordRequest) { r.Headers.RequestsRemaining = 20 })
	require.Equal(t, int64(12), capacityOf(f.account(id), FamilySonnet).RequestsRemaining, "20 less the 8 still open")

	// Settling the others changes nothing: they were counted once.
	for _, l := range leases[2:] {
		f.record(l, store.OutcomeSuccess)
	}
	require.Equal(t, int64(12), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)
}

// A reading only lowers the level, and only by more than its resolution;
// a new limit replaces the level.
func TestCalibrationBelievesOnlyNews(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	remaining := func() int64 { return capacityOf(f.account(id), FamilySonnet).RequestsRemaining }
	call := func(h RateLimitHeaders) {
		f.record(f.mustSelect(estimate(0, 0)), store.OutcomeSuccess, func(r *RecordRequest) { r.Headers = h })
	}
	call(RateLimitHeaders{RequestsRemaining: 49})
	require.Equal(t, int64(49), remaining())
	call(RateLimitHeaders{RequestsRemaining: 47}) // one below the pool's 48: within the resolution
	require.Equal(t, int64(48), remaining())
	call(RateLimitHeaders{RequestsRemaining: 30}) // news: usage the pool did not see
	require.Equal(t, int64(30), remaining())
	call(RateLimitHeaders{RequestsRemaining: 45}) // higher: may predate calls already settled
	require.Equal(t, int64(29), remaining())
	call(RateLimitHeaders{RequestsLimit: 1_000, RequestsRemaining: 990}) // a new scale
	c := capacityOf(f.account(id), FamilySonnet)
	require.Equal(t, int64(1_000), c.RequestsLimit)
	require.Equal(t, int64(990), c.RequestsRemaining)
}

// The race calibration must survive: the upstream answers call X, then
// call Y reaches it and is settled here, and only then does X's reading
// (taken before Y) arrive. Believing it would forget Y.
func TestLateHigherReadingDoesNotForgetSettledCalls(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	x := f.mustSelect(estimate(0, 0))
	y := f.mustSelect(estimate(0, 0))
	f.record(y, store.OutcomeSuccess, func(r *RecordRequest) { r.Headers.RequestsRemaining = 48 })
	require.Equal(t, int64(48), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)
	f.record(x, store.OutcomeSuccess, func(r *RecordRequest) { r.Headers.RequestsRemaining = 49 }) // read before y arrived
	require.Equal(t, int64(48), capacityOf(f.account(id), FamilySonnet).RequestsRemaining, "not 49: y is not forgotten")
}

// A bucket with reservations open is never compacted away, so the
// reservations are still known when their leases settle.
func TestOpenReservationsKeepTheirBucket(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.LeaseTimeout = time.Hour })
	id := f.register("a", "tier1").Account.ID
	sel := f.mustSelect(estimate(0, 0))
	f.clock.Advance(10 * time.Minute) // the level is back at the limit
	f.record(f.mustSelect(estimate(0, 0)), store.OutcomeSuccess, func(r *RecordRequest) { r.Headers.RequestsRemaining = 10 })
	require.Equal(t, int64(9), capacityOf(f.account(id), FamilySonnet).RequestsRemaining, "10 less the first lease, still open")
	f.record(sel, store.OutcomeSuccess)
	require.Equal(t, int64(9), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)
}

// A call in flight holds its reservation without refilling: the upstream
// meters it from when it arrives, which may be later than the reservation.
// Its usage refills from when it is settled.
func TestReservationsRefillOnlyOnceSettled(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.LeaseTimeout = time.Hour })
	id := f.register("a", "tier1").Account.ID
	var leases []Selection
	for range 50 {
		leases = append(leases, f.mustSelect(estimate(0, 0)))
	}
	f.clock.Advance(time.Minute)
	ex := f.exhausted(estimate(0, 0))
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "requests: need 1, have 0", "a minute later, the 50 calls still hold their requests")

	for _, l := range leases {
		f.record(l, store.OutcomeSuccess)
	}
	require.Equal(t, int64(0), capacityOf(f.account(id), FamilySonnet).RequestsRemaining, "settled just now: the upstream may have metered them just now")
	f.clock.Advance(1200 * time.Millisecond)
	require.Equal(t, int64(1), capacityOf(f.account(id), FamilySonnet).RequestsRemaining, "one request refills in 60s/50 after the settlement")
}

// An account deleted with a call in flight: its own records are gone, but a
// quota group's shared bucket must still see the call settle, or its
// reservation would be held for good.
func TestDeletedGroupMemberStillSettlesTheGroup(t *testing.T) {
	f := newFixture(t)
	inGroup := func(n *NewAccount) { n.QuotaGroup = "org-1" }
	a := f.register("a", "tier1", inGroup).Account.ID
	b := f.register("b", "tier1", inGroup).Account.ID
	sel := f.mustSelect(allowed(a), estimate(10_000, 0))
	require.Equal(t, int64(20_000), capacityOf(f.account(b), FamilySonnet).InputRemaining)
	require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, a))
	f.record(sel, store.OutcomeSuccess, used(1_000, 0))
	require.Equal(t, int64(29_000), capacityOf(f.account(b), FamilySonnet).InputRemaining, "the reservation is released, the usage metered")
}

// A reading is as old as the call it came with, at most: a call answered
// long ago and recorded only now brings a reading that missed the refill
// since, which is no news.
func TestOldReadingIsJudgedByItsAge(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.LeaseTimeout = time.Hour })
	id := f.register("a", "tier1").Account.ID
	x := f.mustSelect(estimate(0, 0))
	for range 40 {
		f.record(f.mustSelect(estimate(0, 0)), store.OutcomeSuccess)
	}
	f.clock.Advance(30 * time.Second) // 25 requests refill
	require.Equal(t, int64(34), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)
	// The upstream answered x right after the 40 others, when 9 were left.
	f.record(x, store.OutcomeSuccess, func(r *RecordRequest) { r.Headers.RequestsRemaining = 9 })
	require.Equal(t, int64(34), capacityOf(f.account(id), FamilySonnet).RequestsRemaining)
}

// Calls settle concurrently, each with its own reading of the clock: one
// that read it earlier but is applied later must not make the bucket
// refill the interval between the two readings twice.
func TestSettlingWithAnEarlierClockDoesNotRefillTwice(t *testing.T) {
	lim := Limits{RPM: 60, InputTPM: 60, OutputTPM: 60} // one a second
	t0 := newClock().Now()
	one := Amount{Requests: 1}
	var bs Buckets
	bs.reserve(Amount{Requests: 2})
	bs.settle(lim, one, one, t0.Add(2*time.Second))
	bs.settle(lim, one, one, t0.Add(time.Second)) // read the clock first, applied second
	require.InDelta(t, 58, bs.Requests.level(lim.RPM, t0.Add(2*time.Second)), 1e-9)
	require.InDelta(t, 59, bs.Requests.level(lim.RPM, t0.Add(3*time.Second)), 1e-9)
}
