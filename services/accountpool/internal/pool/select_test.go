package pool

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func excluded(ids ...string) func(*SelectRequest) {
	return func(r *SelectRequest) { r.Excluded = ids }
}

func TestLeastLoadedPicksMostHeadroom(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier2")
	b := f.register("b", "tier2")
	c := f.register("c", "tier2")

	// Equal headroom: the tie goes to the first by name, every time.
	sel := f.mustSelect()
	require.Equal(t, a.Account.ID, sel.AccountID)
	require.Equal(t, store.StrategyLeastLoaded, sel.Strategy)
	f.record(sel, store.OutcomeSuccess)

	// Load a heavily and b lightly (leases left open).
	f.mustSelect(allowed(a.Account.ID), estimate(300_000, 0))
	f.mustSelect(allowed(b.Account.ID), estimate(100_000, 0))

	sel = f.mustSelect()
	require.Equal(t, c.Account.ID, sel.AccountID)
	ca, cb, cc := candidate(sel.Candidates, a.Account.ID), candidate(sel.Candidates, b.Account.ID), candidate(sel.Candidates, c.Account.ID)
	require.True(t, cc.Chosen)
	require.False(t, ca.Chosen || cb.Chosen)
	require.Empty(t, ca.SkipReason+cb.SkipReason+cc.SkipReason, "eligible accounts carry no skip reason")
	require.Greater(t, cc.Headroom, cb.Headroom)
	require.Greater(t, cb.Headroom, ca.Headroom)
	require.InDelta(t, (150_000.0-100)/450_000, ca.Headroom, 1e-9, "headroom is the tightest bucket's fraction after the reservation")

	// Now load c most: b has the most headroom.
	f.mustSelect(allowed(c.Account.ID), estimate(400_000, 0))
	require.Equal(t, b.Account.ID, f.mustSelect().AccountID)
}

func TestRoundRobinCyclesEvenly(t *testing.T) {
	f := newFixture(t)
	names := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		names[f.register(n, "tier4").Account.ID] = n
	}
	_, err := f.pool.UpdateSettings(f.ctx, f.org, store.StrategyRoundRobin)
	require.NoError(t, err)

	var got []string
	for range 9 {
		sel := f.mustSelect()
		require.Equal(t, store.StrategyRoundRobin, sel.Strategy)
		got = append(got, names[sel.AccountID])
		f.record(sel, store.OutcomeSuccess)
	}
	require.Equal(t, []string{"a", "b", "c", "a", "b", "c", "a", "b", "c"}, got)
}

func TestStrategyOverridePerRequest(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	b := f.register("b", "tier4")
	rr := func(r *SelectRequest) { r.Strategy = store.StrategyRoundRobin }
	first, second := f.mustSelect(rr), f.mustSelect(rr)
	require.Equal(t, store.StrategyRoundRobin, first.Strategy)
	require.ElementsMatch(t, []string{a.Account.ID, b.Account.ID}, []string{first.AccountID, second.AccountID})

	_, err := f.pool.Select(f.ctx, f.selectReq(func(r *SelectRequest) { r.Strategy = "random" }))
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "strategy", fe.Field)
}

func TestExcludedAndAllowed(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	b := f.register("b", "tier4")
	c := f.register("c", "tier4")

	for range 10 {
		sel := f.mustSelect(excluded(a.Account.ID))
		require.NotEqual(t, a.Account.ID, sel.AccountID)
		require.Equal(t, "excluded", candidate(sel.Candidates, a.Account.ID).SkipReason)
		f.record(sel, store.OutcomeSuccess)
	}
	for range 5 {
		sel := f.mustSelect(allowed(b.Account.ID))
		require.Equal(t, b.Account.ID, sel.AccountID)
		require.Equal(t, "not allowed", candidate(sel.Candidates, c.Account.ID).SkipReason)
		f.record(sel, store.OutcomeSuccess)
	}

	ex := f.exhausted(allowed(a.Account.ID), excluded(a.Account.ID))
	require.Zero(t, ex.RetryAfter, "nothing frees up by itself when every account is excluded or not allowed")
	require.Equal(t, "excluded", candidate(ex.Candidates, a.Account.ID).SkipReason)
	require.Equal(t, "not allowed", candidate(ex.Candidates, b.Account.ID).SkipReason)
	require.Contains(t, ex.Error(), "a ("+a.Account.ID+"): excluded")
}

func TestNoAccountsVersusExhausted(t *testing.T) {
	f := newFixture(t)
	_, err := f.pool.Select(f.ctx, f.selectReq())
	require.ErrorIs(t, err, ErrNoAccounts, "never registered")

	a := f.register("a", "tier1")
	disabled := store.StatusDisabled
	_, err = f.pool.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &disabled})
	require.NoError(t, err)
	b := f.register("b", "tier1")
	require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, b.Account.ID))
	_, err = f.pool.Select(f.ctx, f.selectReq())
	require.ErrorIs(t, err, ErrNoAccounts, "disabled and deleted accounts are not in service")

	c := f.register("c", "tier1")
	f.record(f.mustSelect(), store.OutcomeAuthFailed, func(r *RecordRequest) { r.HTTPStatus = 401 })
	ex := f.exhausted()
	require.Contains(t, candidate(ex.Candidates, c.Account.ID).SkipReason, "invalid")
	require.Equal(t, "disabled", candidate(ex.Candidates, a.Account.ID).SkipReason)
	require.Zero(t, ex.RetryAfter)
}

func TestBreakerOpensAfterFiveCountedFailures(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	b := f.register("b", "tier4")
	id := a.Account.ID

	f.failTimes(id, 4)
	info := f.account(id)
	require.Equal(t, BreakerClosed, info.Breaker.State)
	require.Equal(t, int32(4), info.Breaker.ConsecutiveFailures)

	// Uncounted outcomes neither count nor reset.
	for _, o := range []store.Outcome{store.OutcomeClientError, store.OutcomeCancelled} {
		f.record(f.mustSelect(allowed(id)), o)
	}
	require.Equal(t, int32(4), f.account(id).Breaker.ConsecutiveFailures)

	f.failTimes(id, 1)
	info = f.account(id)
	require.Equal(t, BreakerOpen, info.Breaker.State)
	require.Equal(t, f.clock.Now().Add(5*time.Second), info.Breaker.OpenUntil)

	ex := f.exhausted(allowed(id))
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "breaker open until")
	require.Zero(t, ex.RetryAfter, "an open breaker is never waited for: the task fails at once")
	require.Equal(t, f.clock.Now().Add(5*time.Second), candidate(ex.Candidates, id).FreeAt, "the explanation still says when it half-opens")
	for range 5 {
		sel := f.mustSelect()
		require.Equal(t, b.Account.ID, sel.AccountID, "an open breaker keeps the account out of selection")
		f.record(sel, store.OutcomeSuccess)
	}
}

func TestBreakerSuccessResetsCount(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 4)
	f.record(f.mustSelect(), store.OutcomeSuccess)
	require.Equal(t, int32(0), f.account(id).Breaker.ConsecutiveFailures)
	f.failTimes(id, 4)
	require.Equal(t, BreakerClosed, f.account(id).Breaker.State, "4 + success + 4 is not 5 in a row")
}

func TestHalfOpenAllowsExactlyOneProbe(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	f.clock.Advance(5 * time.Second)
	require.Equal(t, BreakerHalfOpen, f.account(id).Breaker.State)

	const n = 20
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		won   int
		other []error
	)
	for range n {
		wg.Go(func() {
			_, err := f.pool.Select(f.ctx, f.selectReq(allowed(id)))
			mu.Lock()
			defer mu.Unlock()
			var ex *ExhaustedError
			switch {
			case err == nil:
				won++
			case errors.As(err, &ex):
				if candidate(ex.Candidates, id).SkipReason == "" {
					other = append(other, errors.New("exhausted without a skip reason"))
				}
			default:
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	require.Empty(t, other)
	require.Equal(t, 1, won, "a half-open breaker lets exactly one probe through")

	ex := f.exhausted(allowed(id))
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "probe is in flight")
}

func TestProbeSuccessCloses(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	f.clock.Advance(5 * time.Second)
	probe := f.mustSelect(allowed(id))
	f.record(probe, store.OutcomeSuccess)

	info := f.account(id)
	require.Equal(t, BreakerClosed, info.Breaker.State)
	require.Zero(t, info.Breaker.ConsecutiveFailures)
	f.mustSelect(allowed(id))
	f.mustSelect(allowed(id)) // closed: no probe limit any more

	// The next opening starts from the base cool-down again.
	f.failTimes(id, 5)
	require.Equal(t, f.clock.Now().Add(5*time.Second), f.account(id).Breaker.OpenUntil)
}

func TestProbeFailureReopensLonger(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	wait := 5 * time.Second
	for _, next := range want {
		f.clock.Advance(wait)
		probe := f.mustSelect(allowed(id))
		f.record(probe, store.OutcomeUpstreamError)
		info := f.account(id)
		require.Equal(t, BreakerOpen, info.Breaker.State)
		require.Equal(t, f.clock.Now().Add(next), info.Breaker.OpenUntil, "cool-down doubles, capped at 5m")
		require.Equal(t, f.clock.Now().Add(next), candidate(f.exhausted(allowed(id)).Candidates, id).FreeAt)
		wait = next
	}
}

func TestProbeNotCountedFreesSlot(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.LeaseTimeout = 30 * time.Second })
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	f.clock.Advance(5 * time.Second)

	// A probe answered by a client error says nothing: the slot frees.
	f.record(f.mustSelect(allowed(id)), store.OutcomeClientError)
	require.Equal(t, BreakerHalfOpen, f.account(id).Breaker.State)

	// A probe never settled frees its slot when its lease expires.
	f.mustSelect(allowed(id))
	f.exhausted(allowed(id))
	f.clock.Advance(30 * time.Second)
	f.mustSelect(allowed(id))
}

func TestBreakerJitterIsApplied(t *testing.T) {
	var bounds []time.Duration
	f := newFixture(t, func(c *Config) {
		c.Jitter = func(d time.Duration) time.Duration { bounds = append(bounds, d); return d / 4 }
	})
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	require.Equal(t, []time.Duration{5 * time.Second}, bounds)
	require.Equal(t, f.clock.Now().Add(1250*time.Millisecond), f.account(id).Breaker.OpenUntil)

	for range 1000 {
		d := equalJitter(time.Second)
		require.True(t, d >= time.Second/2 && d <= time.Second, "equal jitter stays within [bound/2, bound], got %s", d)
	}
}

func TestAuthFailedMarksInvalidUntilAdminReactivates(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	id := a.Account.ID
	res := f.record(f.mustSelect(), store.OutcomeAuthFailed, func(r *RecordRequest) { r.HTTPStatus = 401 })
	require.NotEmpty(t, res.UsageID, "a failed call is a ledger row")

	stored, err := f.store.GetAccount(f.ctx, f.org, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusInvalid, stored.Status, "INVALID is persisted, so a restart keeps the key out")
	require.Equal(t, store.StatusInvalid, f.account(id).Account.Status)
	require.Equal(t, BreakerClosed, f.account(id).Breaker.State, "auth failures are not breaker failures")
	f.exhausted()

	active := store.StatusActive
	_, err = f.pool.UpdateAccount(f.ctx, f.org, id, AccountChanges{Status: &active})
	require.NoError(t, err)
	require.Equal(t, id, f.mustSelect().AccountID)
}

func TestAdminActiveResetsBreaker(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	require.Equal(t, BreakerOpen, f.account(id).Breaker.State)

	active := store.StatusActive
	info, err := f.pool.UpdateAccount(f.ctx, f.org, id, AccountChanges{Status: &active})
	require.NoError(t, err)
	require.Equal(t, BreakerClosed, info.Breaker.State)
	require.Zero(t, info.Breaker.ConsecutiveFailures)
	f.mustSelect(allowed(id))
}

func TestDisabledAccountsAreSkipped(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	b := f.register("b", "tier4")
	disabled := store.StatusDisabled
	_, err := f.pool.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &disabled})
	require.NoError(t, err)
	sel := f.mustSelect()
	require.Equal(t, b.Account.ID, sel.AccountID)
	require.Equal(t, "disabled", candidate(sel.Candidates, a.Account.ID).SkipReason)
}

func TestRetryAfterCooldownLaterDeadlineWins(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	b := f.register("b", "tier4")
	id := a.Account.ID
	t0 := f.clock.Now()
	leases := []Selection{f.mustSelect(allowed(id)), f.mustSelect(allowed(id)), f.mustSelect(allowed(id))}
	retry := func(d time.Duration) func(*RecordRequest) {
		return func(r *RecordRequest) { r.Headers.RetryAfter = d }
	}

	res := f.record(leases[0], store.OutcomeRateLimited, retry(30*time.Second))
	require.Empty(t, res.UsageID, "a 429 writes no ledger row")
	require.Equal(t, t0.Add(30*time.Second), f.account(id).CooldownUntil)

	f.record(leases[1], store.OutcomeRateLimited, retry(5*time.Second))
	require.Equal(t, t0.Add(30*time.Second), f.account(id).CooldownUntil, "an earlier deadline never shortens the cool-down")

	ex := f.exhausted(allowed(id))
	require.Equal(t, 30*time.Second, ex.RetryAfter)
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "cooling down until")
	require.Equal(t, b.Account.ID, f.mustSelect().AccountID)

	f.clock.Advance(10 * time.Second)
	f.record(leases[2], store.OutcomeRateLimited, retry(60*time.Second))
	require.Equal(t, t0.Add(70*time.Second), f.account(id).CooldownUntil, "a later deadline wins")

	f.clock.Advance(59 * time.Second)
	f.exhausted(allowed(id))
	f.clock.Advance(time.Second)
	f.mustSelect(allowed(id))
}

func TestSpendLimitExhaustsUntilReset(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4")
	b := f.register("b", "tier4")
	t0 := f.clock.Now()

	f.record(f.mustSelect(allowed(a.Account.ID)), store.OutcomeSpendLimited)
	info := f.account(a.Account.ID)
	require.Equal(t, t0.Add(time.Hour), info.CooldownUntil, "no reset given: one hour")
	require.Equal(t, CooldownSpendLimited, info.CooldownReason)
	require.Contains(t, candidate(f.exhausted(allowed(a.Account.ID)).Candidates, a.Account.ID).SkipReason, "spend limit reached")

	f.record(f.mustSelect(allowed(b.Account.ID)), store.OutcomeSpendLimited, func(r *RecordRequest) {
		r.Headers.InputReset = t0.Add(3 * time.Hour)
		r.Headers.RetryAfter = time.Minute
	})
	require.Equal(t, t0.Add(3*time.Hour), f.account(b.Account.ID).CooldownUntil, "the later of reset and retry-after")
}

func TestQuotaGroupSharesCapacityAndCooldown(t *testing.T) {
	f := newFixture(t)
	inGroup := func(n *NewAccount) { n.QuotaGroup = "anthropic-org-1" }
	a := f.register("a", "tier1", inGroup)
	b := f.register("b", "tier1", inGroup)
	for range 50 {
		f.record(f.mustSelect(estimate(0, 0)), store.OutcomeSuccess)
	}
	ex := f.exhausted(estimate(0, 0))
	require.Contains(t, candidate(ex.Candidates, a.Account.ID).SkipReason, "requests")
	require.Contains(t, candidate(ex.Candidates, b.Account.ID).SkipReason, "requests", "the group's 50 RPM is shared")
	require.Equal(t, 1200*time.Millisecond, ex.RetryAfter, "one request refills in 60s/50")

	// A 429 on one key cools the whole group down.
	f.clock.Advance(time.Minute)
	f.record(f.mustSelect(allowed(a.Account.ID)), store.OutcomeRateLimited, func(r *RecordRequest) { r.Headers.RetryAfter = 10 * time.Second })
	require.Contains(t, candidate(f.exhausted().Candidates, b.Account.ID).SkipReason, "cooling down")
}

func TestExhaustedCarriesEarliestFreeTime(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier1")
	b := f.register("b", "tier1")
	c := f.register("c", "tier1")

	f.record(f.mustSelect(allowed(a.Account.ID)), store.OutcomeRateLimited, func(r *RecordRequest) { r.Headers.RetryAfter = 30 * time.Second })
	f.failTimes(b.Account.ID, 5)
	f.record(f.mustSelect(allowed(c.Account.ID), estimate(30_000, 0)), store.OutcomeSuccess, used(30_000, 0)) // drains c's input bucket

	ex := f.exhausted(estimate(6_000, 0))
	require.Equal(t, 12*time.Second, ex.RetryAfter, "b's breaker half-opens first, but is not waited for: c refills 6,000 input tokens at 500/s")
	require.Contains(t, candidate(ex.Candidates, a.Account.ID).SkipReason, "cooling down")
	require.Contains(t, candidate(ex.Candidates, b.Account.ID).SkipReason, "breaker open")
	require.Contains(t, candidate(ex.Candidates, c.Account.ID).SkipReason, "no headroom for the estimate: input tokens")

	ex = f.exhausted(estimate(6_000, 0), excluded(c.Account.ID))
	require.Equal(t, 30*time.Second, ex.RetryAfter, "without c, a's cool-down ends first")

	f.clock.Advance(12 * time.Second)
	require.Equal(t, c.Account.ID, f.mustSelect(estimate(6_000, 0), excluded(b.Account.ID)).AccountID)
}

func TestEstimateLargerThanBucketWaitsForFullBucket(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	sel := f.mustSelect(estimate(100_000, 0)) // more than the 30k ITPM
	require.Equal(t, id, sel.AccountID)
	// The call in flight holds 100,000: nothing fits until it settles, at
	// the latest when its lease expires.
	ex := f.exhausted(estimate(100_000, 0))
	require.Equal(t, 2*time.Minute, ex.RetryAfter)
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "need 30000, have -70000, held by calls in flight until they settle")
	// Settled at its estimate, the bucket is 70,000 in debt and refills to
	// full (30,000) at 500/s.
	f.record(sel, store.OutcomeSuccess, used(100_000, 0))
	require.Equal(t, 200*time.Second, f.exhausted(estimate(100_000, 0)).RetryAfter)
}

func TestConcurrentReservationsNeverOverdraw(t *testing.T) {
	f := newFixture(t)
	inGroup := func(n *NewAccount) { n.QuotaGroup = "shared" }
	a := f.register("a", "tier1", inGroup)
	f.register("b", "tier1", inGroup)

	const n = 200
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		granted  int
		failures []error
	)
	for range n {
		wg.Go(func() {
			_, err := f.pool.Select(f.ctx, f.selectReq(estimate(500, 100)))
			mu.Lock()
			defer mu.Unlock()
			var ex *ExhaustedError
			switch {
			case err == nil:
				granted++
			case !errors.As(err, &ex):
				failures = append(failures, err)
			}
		})
	}
	wg.Wait()
	require.Empty(t, failures)
	require.Equal(t, 50, granted, "the group's 50 RPM bounds the grants exactly")
	c := capacityOf(f.account(a.Account.ID), FamilySonnet)
	require.Equal(t, int64(0), c.RequestsRemaining)
	require.Equal(t, int64(30_000-50*500), c.InputRemaining)
	require.Equal(t, int64(8_000-50*100), c.OutputRemaining)
}

func TestLeaseExpiryReleasesCapacity(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.LeaseTimeout = 10 * time.Second })
	id := f.register("a", "tier1").Account.ID
	stale := f.mustSelect(estimate(30_000, 0))
	require.Equal(t, f.clock.Now().Add(10*time.Second), stale.ExpireTime)
	f.exhausted(estimate(30_000, 0))

	// 10s of refill is 5,000 tokens; only the release makes room for 30,000.
	f.clock.Advance(10 * time.Second)
	fresh := f.mustSelect(estimate(30_000, 0))

	// The expired lease, settled late, charges its real usage and refunds
	// nothing a second time.
	f.record(stale, store.OutcomeSuccess, func(r *RecordRequest) { r.Tokens.Input = 1_000 })
	f.record(fresh, store.OutcomeSuccess)
	require.Equal(t, int64(29_000), capacityOf(f.account(id), FamilySonnet).InputRemaining)
}

func TestSettleTwiceIsNoop(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier2").Account.ID
	sel := f.mustSelect(estimate(1_000, 500))
	c := capacityOf(f.account(id), FamilySonnet)
	require.Equal(t, int64(449_000), c.InputRemaining)
	require.Equal(t, int64(89_500), c.OutputRemaining)

	tokens := func(r *RecordRequest) {
		r.RequestID, r.Tokens = "req-1", Tokens{Input: 200, Output: 100}
	}
	first := f.record(sel, store.OutcomeSuccess, tokens)
	require.False(t, first.Duplicate)
	settled := capacityOf(f.account(id), FamilySonnet)
	require.Equal(t, int64(449_800), settled.InputRemaining, "the unused estimate is refunded")
	require.Equal(t, int64(89_900), settled.OutputRemaining)
	require.Equal(t, int64(999), settled.RequestsRemaining)

	again := f.record(sel, store.OutcomeSuccess, tokens)
	require.True(t, again.Duplicate)
	require.Equal(t, first.UsageID, again.UsageID)
	require.Equal(t, first.CostUSD, again.CostUSD)
	require.Equal(t, settled, capacityOf(f.account(id), FamilySonnet))

	// The same lease under another request id writes its row but settles
	// nothing twice.
	f.record(sel, store.OutcomeSuccess, func(r *RecordRequest) { r.Tokens.Input = 50_000 })
	require.Equal(t, settled, capacityOf(f.account(id), FamilySonnet))

	// A duplicate failure is not counted twice by the breaker.
	fail := f.mustSelect()
	failReq := func(r *RecordRequest) { r.RequestID = "req-2" }
	f.record(fail, store.OutcomeUpstreamError, failReq)
	require.True(t, f.record(fail, store.OutcomeUpstreamError, failReq).Duplicate)
	require.Equal(t, int32(1), f.account(id).Breaker.ConsecutiveFailures)

	// A rate-limited attempt has no row; its settled lease dedupes it.
	rl := f.mustSelect()
	require.False(t, f.record(rl, store.OutcomeRateLimited).Duplicate)
	require.True(t, f.record(rl, store.OutcomeRateLimited).Duplicate)
}

func TestHeadersCalibrateBuckets(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	now := f.clock.Now()
	f.record(f.mustSelect(), store.OutcomeSuccess, func(r *RecordRequest) {
		r.Headers = RateLimitHeaders{
			RequestsLimit: 200, RequestsRemaining: 150, RequestsReset: now.Add(15 * time.Second),
			InputRemaining: 0, InputReset: now.Add(30 * time.Second),
		}
	})
	info := f.account(id)
	c := capacityOf(info, FamilySonnet)
	require.Equal(t, int64(200), c.RequestsLimit, "the upstream's limit overrides the table")
	require.Equal(t, int64(150), c.RequestsRemaining)
	require.Equal(t, int64(30_000), c.InputTokensLimit)
	require.Equal(t, int64(0), c.InputRemaining, "remaining 0 with a reset is a reading, not an absent header")
	require.Equal(t, int64(50), capacityOf(info, FamilyOpus).RequestsLimit, "other families keep the table")
	require.Contains(t, candidate(f.exhausted().Candidates, id).SkipReason, "input tokens")

	// A reset far away puts the bucket in debt until then.
	f.record(f.mustSelect(estimate(0, 0), func(r *SelectRequest) { r.Model = "claude-opus-4-5" }), store.OutcomeSuccess, func(r *RecordRequest) {
		r.Model = "claude-opus-4-5"
		r.Headers = RateLimitHeaders{OutputRemaining: 4_000, OutputReset: now.Add(5 * time.Minute)}
	})
	// Level 8,000 − 8,000×300s/60s = −32,000, refilling at 8,000/60 per
	// second: one output token is available after 32,001×60/8,000 s.
	ex := f.exhausted(estimate(0, 1), func(r *SelectRequest) { r.Model = "claude-opus-4-5" })
	require.InDelta(t, 32_001*60.0/8_000, ex.RetryAfter.Seconds(), 0.001)
}

func TestCacheReadsDoNotCountTowardInput(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	res := f.record(f.mustSelect(estimate(0, 0)), store.OutcomeSuccess, func(r *RecordRequest) {
		r.Tokens = Tokens{Input: 100, CacheCreation: 50, CacheRead: 10_000, Output: 10}
	})
	c := capacityOf(f.account(id), FamilySonnet)
	require.Equal(t, int64(30_000-150), c.InputRemaining)
	require.Equal(t, int64(8_000-10), c.OutputRemaining)
	require.Equal(t, int64(49), c.RequestsRemaining)
	require.InDelta(t, (100*3+10*15+50*3.75+10_000*0.3)/1e6, res.CostUSD, 1e-12)
}

func TestRecordAfterDeleteStillWritesUsage(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier1")
	sel := f.mustSelect()
	require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, a.Account.ID))
	res := f.record(sel, store.OutcomeSuccess, func(r *RecordRequest) { r.Tokens.Input = 10 })
	require.NotEmpty(t, res.UsageID)
	rep, err := f.pool.Usage(f.ctx, f.org, UsageQuery{IncludeRecords: true, PageSize: 10})
	require.NoError(t, err)
	require.Len(t, rep.Records, 1)
	require.Equal(t, "a", rep.Records[0].AccountName)

	_, err = f.pool.Record(f.ctx, RecordRequest{OrgID: f.org, LeaseID: uuid.NewString(), AccountID: uuid.NewString(), RequestID: "x", Attempt: 1, Outcome: store.OutcomeSuccess})
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestLegacyRecordWritesOnlyTheLedgerRow(t *testing.T) {
	f := newFixture(t)
	legacy := RecordRequest{OrgID: f.org, RequestID: "req-legacy", Attempt: 1, Outcome: store.OutcomeSuccess,
		Model: "claude-sonnet-4-5", Tokens: Tokens{Input: 1000, Output: 100}}
	res, err := f.pool.Record(f.ctx, legacy)
	require.NoError(t, err)
	require.NotEmpty(t, res.UsageID)
	require.InDelta(t, 0.0045, res.CostUSD, 1e-9, "1000 × $3/M + 100 × $15/M")

	again, err := f.pool.Record(f.ctx, legacy)
	require.NoError(t, err)
	require.True(t, again.Duplicate)

	limited := legacy
	limited.RequestID, limited.Outcome = "req-limited", store.OutcomeRateLimited
	res, err = f.pool.Record(f.ctx, limited)
	require.NoError(t, err)
	require.Empty(t, res.UsageID, "a 429 writes no row in legacy mode either")

	rep, err := f.pool.Usage(f.ctx, f.org, UsageQuery{IncludeRecords: true, PageSize: 10})
	require.NoError(t, err)
	require.Len(t, rep.Records, 1)
	require.Equal(t, EnvironmentKeyAccountName, rep.Records[0].AccountName, "an unspecified legacy key is the environment key")
	require.Empty(t, rep.Records[0].AccountID)
}

func TestOrganizationIsolation(t *testing.T) {
	f := newFixture(t)
	shared := func(n *NewAccount) { n.QuotaGroup = "same-name" }
	a := f.register("a", "tier1", shared)
	sel := f.mustSelect()

	other := newFixture(t)
	other.pool, other.store, other.clock = f.pool, f.store, f.clock // same pool, another organization
	_, err := f.pool.GetAccount(f.ctx, other.org, a.Account.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = f.pool.Select(f.ctx, other.selectReq())
	require.ErrorIs(t, err, ErrNoAccounts)
	_, err = f.pool.Record(f.ctx, RecordRequest{OrgID: other.org, LeaseID: sel.LeaseID, AccountID: a.Account.ID, RequestID: "r", Attempt: 1, Outcome: store.OutcomeSuccess})
	require.ErrorIs(t, err, store.ErrNotFound)
	name := "stolen"
	_, err = f.pool.UpdateAccount(f.ctx, other.org, a.Account.ID, AccountChanges{Name: &name})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, f.pool.DeleteAccount(f.ctx, other.org, a.Account.ID), store.ErrNotFound)

	// Quota groups are per organization even when their names match.
	b := other.register("b", "tier1", shared)
	for range 49 {
		f.mustSelect(estimate(0, 0))
	}
	f.exhausted(estimate(0, 0))
	require.Equal(t, b.Account.ID, other.mustSelect(estimate(0, 0)).AccountID)
}

func TestUndecryptableKeyIsSkippedAndReleased(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier1").Account.ID
	// A second pool on the same store whose keyring lacks version 1.
	keys, err := crypto.ParseKeyring("2:" + base64.StdEncoding.EncodeToString(make([]byte, crypto.KeySize)))
	require.NoError(t, err)
	other, err := New(Config{Store: f.store, Keys: keys, Now: f.clock.Now, Logger: f.pool.logger})
	require.NoError(t, err)
	_, err = other.Select(f.ctx, f.selectReq())
	var ex *ExhaustedError
	require.ErrorAs(t, err, &ex)
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "key cannot be decrypted")
	info, err := other.GetAccount(f.ctx, f.org, id)
	require.NoError(t, err)
	require.Equal(t, int64(50), capacityOf(info, FamilySonnet).RequestsRemaining, "the reservation was released")
}

func TestSelectionRevealsKeyOnlyThroughReveal(t *testing.T) {
	f := newFixture(t)
	f.register("a", "tier1")
	sel := f.mustSelect()
	require.Equal(t, "sk-ant-a", sel.APIKey.Reveal())
	require.NotContains(t, fmt.Sprintf("%v %+v %#v", sel, sel, sel), "sk-ant-a")
	info := f.account(sel.AccountID)
	require.Nil(t, info.Account.KeyCiphertext, "admin reads never carry the ciphertext")
}

// hookState runs a function once, right after the next Read: another
// selection (or another replica) acting between a selection's read and its
// reservation.
type hookState struct {
	State
	afterRead func()
}

func (h *hookState) Read(ctx context.Context, refs RefSet, fn func(int, Records)) error {
	err := h.State.Read(ctx, refs, fn)
	if f := h.afterRead; f != nil {
		h.afterRead = nil
		f()
	}
	return err
}

func TestReservationRechecksAfterRead(t *testing.T) {
	hs := &hookState{State: NewMemState()}
	f := newFixture(t, func(c *Config) { c.State = hs })
	id := f.register("a", "tier1").Account.ID

	// Capacity: the competitor drains the bucket the read saw full.
	hs.afterRead = func() { f.record(f.mustSelect(estimate(30_000, 0)), store.OutcomeSuccess, used(30_000, 0)) }
	ex := f.exhausted(estimate(30_000, 0))
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "no headroom for the estimate: input tokens")
	require.Equal(t, time.Minute, ex.RetryAfter)

	// Breaker: the competitor takes the one probe the snapshot saw free.
	f.clock.Advance(time.Minute)
	f.failTimes(id, 5)
	f.clock.Advance(5 * time.Second)
	hs.afterRead = func() { f.mustSelect() }
	ex = f.exhausted()
	require.Contains(t, candidate(ex.Candidates, id).SkipReason, "probe is in flight")
}
