package pool

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func using(s store.Strategy) func(*SelectRequest) {
	return func(r *SelectRequest) { r.Strategy = s }
}

func session(id string) func(*SelectRequest) {
	return func(r *SelectRequest) { r.SessionID = id }
}

func withWeight(w int32) func(*NewAccount)   { return func(n *NewAccount) { n.Weight = w } }
func withPriority(p int32) func(*NewAccount) { return func(n *NewAccount) { n.Priority = p } }

// selectMany runs n selections, each settled at once as a success, and
// counts the accounts chosen by name.
func (f *fixture) selectMany(n int, names map[string]string, mods ...func(*SelectRequest)) map[string]int {
	f.t.Helper()
	got := map[string]int{}
	for range n {
		sel := f.mustSelect(mods...)
		got[names[sel.AccountID]]++
		f.record(sel, store.OutcomeSuccess)
	}
	return got
}

func TestRoundRobinIsEvenOverManySelections(t *testing.T) {
	f := newFixture(t)
	names := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d"} {
		names[f.register(n, "scale").Account.ID] = n
	}
	got := f.selectMany(400, names, using(store.StrategyRoundRobin))
	require.Equal(t, map[string]int{"a": 100, "b": 100, "c": 100, "d": 100}, got)
}

func TestRoundRobinSkipsIneligibleWithoutStalling(t *testing.T) {
	f := newFixture(t)
	names := map[string]string{}
	var ids []string
	for _, n := range []string{"a", "b", "c"} {
		id := f.register(n, "scale").Account.ID
		names[id], ids = n, append(ids, id)
	}
	got := f.selectMany(300, names, using(store.StrategyRoundRobin), excluded(ids[1]))
	require.Equal(t, map[string]int{"a": 150, "c": 150}, got, "even among the accounts that are eligible")
}

func TestWeightedFollowsWeights(t *testing.T) {
	t.Run("ExactWithInjectedRandomness", func(t *testing.T) {
		// A counter as the random source walks [0, total) evenly: each
		// account is chosen exactly weight times per cycle.
		var next int64
		f := newFixture(t, func(c *Config) {
			c.Rand = func(n int64) int64 { v := next % n; next++; return v }
		})
		names := map[string]string{
			f.register("a", "scale", withWeight(1)).Account.ID: "a",
			f.register("b", "scale", withWeight(3)).Account.ID: "b",
			f.register("c", "scale", withWeight(6)).Account.ID: "c",
		}
		got := f.selectMany(1000, names, using(store.StrategyWeighted))
		require.Equal(t, map[string]int{"a": 100, "b": 300, "c": 600}, got)
	})

	t.Run("ProportionalWithRealRandomness", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		f := newFixture(t, func(c *Config) { c.Rand = rng.Int64N })
		names := map[string]string{
			f.register("a", "scale", withWeight(1)).Account.ID: "a",
			f.register("b", "scale", withWeight(4)).Account.ID: "b",
		}
		got := f.selectMany(5000, names, using(store.StrategyWeighted))
		require.InDelta(t, 1000, got["a"], 150)
		require.InDelta(t, 4000, got["b"], 150)
	})

	t.Run("ZeroWeightIsStandby", func(t *testing.T) {
		f := newFixture(t)
		standby := f.register("standby", "scale").Account.ID
		zero := int32(0)
		_, err := f.pool.UpdateAccount(f.ctx, f.org, standby, AccountChanges{Weight: &zero}) // registering defaults 0 to 1
		require.NoError(t, err)
		main := f.register("main", "scale", withWeight(2)).Account.ID
		names := map[string]string{standby: "standby", main: "main"}
		require.Equal(t, map[string]int{"main": 50}, f.selectMany(50, names, using(store.StrategyWeighted)))
		got := f.selectMany(5, names, using(store.StrategyWeighted), excluded(main))
		require.Equal(t, map[string]int{"standby": 5}, got, "weight 0 serves only when no weighted account can")
	})
}

func TestPriorityPrefersLowestNumberThenFailsOver(t *testing.T) {
	f := newFixture(t)
	first := f.register("first", "tier1", withPriority(1)).Account.ID
	second := f.register("second", "tier1", withPriority(2)).Account.ID
	tieA := f.register("tie-a", "tier1", withPriority(3)).Account.ID
	tieB := f.register("tie-b", "tier1", withPriority(3)).Account.ID
	byPriority := using(store.StrategyPriority)

	// first takes everything while it has capacity: 50 RPM.
	for range 50 {
		sel := f.mustSelect(byPriority, estimate(0, 0))
		require.Equal(t, first, sel.AccountID)
		f.record(sel, store.OutcomeSuccess)
	}
	// Then second, as failover, until it is spent too.
	for range 50 {
		sel := f.mustSelect(byPriority, estimate(0, 0))
		require.Equal(t, second, sel.AccountID)
		f.record(sel, store.OutcomeSuccess)
	}
	// Equal priorities go to the one with more headroom.
	f.record(f.mustSelect(allowed(tieA), estimate(10_000, 0)), store.OutcomeSuccess, used(10_000, 0))
	require.Equal(t, tieB, f.mustSelect(byPriority, estimate(0, 0)).AccountID)
	require.Equal(t, tieB, f.mustSelect(byPriority, estimate(0, 0)).AccountID)

	// A refilled first account is preferred again.
	f.clock.Advance(time.Minute)
	require.Equal(t, first, f.mustSelect(byPriority).AccountID)
	// Excluding it (failover within a task) moves to the next priority.
	require.Equal(t, second, f.mustSelect(byPriority, excluded(first)).AccountID)
}

func TestSessionAffinityStaysUntilRateLimited(t *testing.T) {
	f := newFixture(t)
	names := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		names[f.register(n, "scale").Account.ID] = n
	}
	sticky := using(store.StrategySessionAffinity)

	// Least-loaded would rotate over the three accounts; the session
	// stays on its first one.
	first := f.mustSelect(sticky, session("s1"))
	f.record(first, store.OutcomeSuccess)
	got := f.selectMany(30, names, sticky, session("s1"))
	require.Equal(t, map[string]int{names[first.AccountID]: 30}, got)

	// Another session is pinned on its own; without a session there is
	// nothing to stick to.
	other := f.mustSelect(sticky, session("s2"))
	f.record(other, store.OutcomeSuccess)
	require.NotEqual(t, first.AccountID, other.AccountID, "least-loaded picked the new session's account")
	require.Zero(t, f.selectMany(3, names, sticky)["a"], "no session: nothing sticks, least-loaded avoids the busiest")

	// Failover never waits for the pin: excluding the pinned account
	// selects another one, which becomes the pin.
	moved := f.mustSelect(sticky, session("s1"), excluded(first.AccountID))
	require.NotEqual(t, first.AccountID, moved.AccountID)
	f.record(moved, store.OutcomeSuccess)
	require.Equal(t, moved.AccountID, f.mustSelect(sticky, session("s1")).AccountID)

	// A 429 on the pinned account un-pins the session: the next call goes
	// elsewhere and stays there.
	limited := f.mustSelect(sticky, session("s1"))
	f.record(limited, store.OutcomeRateLimited, func(r *RecordRequest) {
		r.SessionID, r.Headers.RetryAfter = "s1", time.Second
	})
	after := f.mustSelect(sticky, session("s1"))
	require.NotEqual(t, limited.AccountID, after.AccountID)
	f.record(after, store.OutcomeSuccess)
	f.clock.Advance(2 * time.Second) // the cool-down is over
	require.Equal(t, after.AccountID, f.mustSelect(sticky, session("s1")).AccountID, "re-pinned, not bounced back")
}

func TestSessionAffinityFallsThroughWithoutHeadroom(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier1").Account.ID
	b := f.register("b", "tier1").Account.ID
	sticky := using(store.StrategySessionAffinity)

	first := f.mustSelect(sticky, session("s"), estimate(20_000, 0))
	require.Equal(t, a, first.AccountID)
	// a has 10,000 input tokens left: not enough for 20,000, so the
	// session moves to b rather than wait, and is pinned there.
	second := f.mustSelect(sticky, session("s"), estimate(20_000, 0))
	require.Equal(t, b, second.AccountID)
	require.Equal(t, b, f.mustSelect(sticky, session("s"), estimate(100, 0)).AccountID)
}

func TestSessionPinsExpireWhenIdle(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SessionPinTTL = time.Minute })
	big := f.register("big", "scale").Account.ID // least-loaded's choice, always
	small := f.register("small", "tier1").Account.ID
	sticky := using(store.StrategySessionAffinity)

	f.record(f.mustSelect(sticky, session("s"), excluded(big)), store.OutcomeSuccess) // pinned to small
	f.clock.Advance(59 * time.Second)
	require.Equal(t, small, f.mustSelect(sticky, session("s")).AccountID, "used within the TTL: still pinned")
	f.clock.Advance(time.Minute)
	require.Equal(t, big, f.mustSelect(sticky, session("s")).AccountID, "idle for the TTL: least-loaded again")
}

func TestStrategySettingRoundTrips(t *testing.T) {
	f := newFixture(t)
	for _, s := range store.Strategies() {
		got, err := f.pool.UpdateSettings(f.ctx, f.org, s)
		require.NoError(t, err)
		require.Equal(t, s, got.SelectionStrategy)
		stored, err := f.store.GetSettings(f.ctx, f.org)
		require.NoError(t, err)
		require.Equal(t, s, stored.SelectionStrategy)
	}
	_, err := f.pool.UpdateSettings(f.ctx, f.org, "random")
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Contains(t, fe.Problem, "session-affinity")
}

func TestExplainIsOptional(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier4").Account.ID
	f.register("b", "tier4")
	quiet := f.mustSelect(func(r *SelectRequest) { r.Explain = false })
	require.Nil(t, quiet.Candidates)
	require.Equal(t, a, quiet.AccountID)
	require.InDelta(t, 1-1.0/4_000, quiet.Headroom, 1e-9, "the chosen account's headroom comes without an explanation")

	// Exhaustion always explains.
	ex := f.exhausted(func(r *SelectRequest) { r.Explain = false }, estimate(0, 0), excluded(a), allowed(a))
	require.Len(t, ex.Candidates, 2)
}
