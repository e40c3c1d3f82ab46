package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// testState is the contract every State implementation must meet; a Redis
// implementation runs it too.
func testState(t *testing.T, newState func(t *testing.T) State) {
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ref := Ref{OrgID: "org", AccountID: "acct", QuotaKey: "a:acct", Family: FamilySonnet}

	t.Run("UpdateKeepsChangesOnlyOnSuccess", func(t *testing.T) {
		s := newState(t)
		require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
			l.Breaker.Failures = 3
			l.Cooldown = Cooldown{Until: t0, Reason: CooldownRateLimited}
			return nil
		}))
		boom := errors.New("boom")
		require.ErrorIs(t, s.Update(ctx, ref, func(l *Live) error {
			l.Breaker.Failures = 99
			return boom
		}), boom)
		got, err := snapshot(ctx, s, ref)
		require.NoError(t, err)
		require.Equal(t, int32(3), got[0].Breaker.Failures)
		require.Equal(t, t0, got[0].Cooldown.Until)
	})

	t.Run("RecordsAreKeyedAsDocumented", func(t *testing.T) {
		s := newState(t)
		require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
			l.Breaker.Failures = 1
			l.Cooldown.Until = t0
			l.Buckets.Input = Bucket{Level: 5, At: t0}
			return nil
		}))
		sameGroupOtherAccount := Ref{OrgID: "org", AccountID: "other", QuotaKey: "a:acct", Family: FamilySonnet}
		otherFamily := Ref{OrgID: "org", AccountID: "acct", QuotaKey: "a:acct", Family: FamilyOpus}
		otherOrg := Ref{OrgID: "org2", AccountID: "acct", QuotaKey: "a:acct", Family: FamilySonnet}
		got, err := snapshot(ctx, s, sameGroupOtherAccount, otherFamily, otherOrg)
		require.NoError(t, err)
		require.Equal(t, Live{Cooldown: Cooldown{Until: t0}, Buckets: Buckets{Input: Bucket{Level: 5, At: t0}}}, got[0], "quota records are shared, the breaker is not")
		require.Equal(t, Live{Breaker: Breaker{Failures: 1}, Cooldown: Cooldown{Until: t0}}, got[1], "buckets are per family")
		require.Equal(t, Live{}, got[2], "nothing is shared across organizations")
	})

	t.Run("ReadVisitsEveryRefInOrder", func(t *testing.T) {
		s := newState(t)
		a := Ref{OrgID: "org", AccountID: "a", QuotaKey: "a:a", Family: FamilySonnet}
		b := Ref{OrgID: "org", AccountID: "b", QuotaKey: "a:b", Family: FamilySonnet}
		never := Ref{OrgID: "org", AccountID: "c", QuotaKey: "a:c", Family: FamilySonnet}
		for i, r := range []Ref{a, b} {
			require.NoError(t, s.Update(ctx, r, func(l *Live) error {
				l.Breaker.Failures = int32(i + 1)
				return nil
			}))
		}
		var seen []int32
		require.NoError(t, s.Read(ctx, []Ref{b, never, a}, func(i int, r Records) {
			require.Len(t, seen, i)
			seen = append(seen, r.Breaker.Failures)
		}))
		require.Equal(t, []int32{2, 0, 1}, seen)
		require.NoError(t, s.Read(ctx, []Ref{{OrgID: "nobody", AccountID: "x", QuotaKey: "a:x"}}, func(_ int, r Records) {
			require.Equal(t, Live{}, Live{Breaker: *r.Breaker, Cooldown: *r.Cooldown, Buckets: *r.Buckets})
		}))
	})

	t.Run("LeaseSettlesOnce", func(t *testing.T) {
		s := newState(t)
		l := Lease{ID: "lease-1", Ref: ref, Reserved: Amount{1, 2, 3}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.AddLease(ctx, l))
		_, st, err := s.SettleLease(ctx, "org2", "acct", "lease-1")
		require.NoError(t, err)
		require.Equal(t, LeaseUnknown, st, "another organization cannot settle it")
		_, st, _ = s.SettleLease(ctx, "org", "other", "lease-1")
		require.Equal(t, LeaseUnknown, st, "nor another account")
		got, st, err := s.SettleLease(ctx, "org", "acct", "lease-1")
		require.NoError(t, err)
		require.Equal(t, LeaseOpen, st)
		require.Equal(t, l, got)
		_, st, _ = s.SettleLease(ctx, "org", "acct", "lease-1")
		require.Equal(t, LeaseSettled, st)
		expired, err := s.ExpireLeases(ctx, t0.Add(time.Hour))
		require.NoError(t, err)
		require.Empty(t, expired, "a settled lease never expires")
	})

	t.Run("LeasesExpireThenAreForgotten", func(t *testing.T) {
		s := newState(t)
		l := Lease{ID: "lease-2", Ref: ref, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.AddLease(ctx, l))
		expired, err := s.ExpireLeases(ctx, t0.Add(59*time.Second))
		require.NoError(t, err)
		require.Empty(t, expired)
		expired, err = s.ExpireLeases(ctx, t0.Add(time.Minute))
		require.NoError(t, err)
		require.Equal(t, []Lease{l}, expired)
		expired, err = s.ExpireLeases(ctx, t0.Add(90*time.Second))
		require.NoError(t, err)
		require.Empty(t, expired, "expired once")

		_, st, _ := s.SettleLease(ctx, "org", "acct", "lease-2")
		require.Equal(t, LeaseExpired, st, "a late settle learns the reservation is gone")
		_, st, _ = s.SettleLease(ctx, "org", "acct", "lease-2")
		require.Equal(t, LeaseSettled, st)

		_, err = s.ExpireLeases(ctx, t0.Add(2*time.Minute))
		require.NoError(t, err)
		_, st, _ = s.SettleLease(ctx, "org", "acct", "lease-2")
		require.Equal(t, LeaseUnknown, st, "forgotten one lifetime after expiry")
	})

	t.Run("SessionPins", func(t *testing.T) {
		s := newState(t)
		const ttl = time.Hour
		got := func(org, session string, at time.Time) string {
			t.Helper()
			acct, err := s.SessionAccount(ctx, org, session, at, ttl)
			require.NoError(t, err)
			return acct
		}
		require.Empty(t, got("org", "s1", t0))
		require.NoError(t, s.PinSession(ctx, "org", "s1", "acct-a", t0, ttl, 10))
		require.Equal(t, "acct-a", got("org", "s1", t0.Add(59*time.Minute)), "a hit marks the pin used")
		require.Equal(t, "acct-a", got("org", "s1", t0.Add(118*time.Minute)), "so the idle time restarts")
		require.Empty(t, got("org2", "s1", t0), "pins are per organization")
		require.Empty(t, got("org", "s1", t0.Add(178*time.Minute)), "idle for the TTL: gone")

		require.NoError(t, s.PinSession(ctx, "org", "s1", "acct-a", t0, ttl, 10))
		require.NoError(t, s.PinSession(ctx, "org", "s1", "acct-b", t0, ttl, 10))
		require.Equal(t, "acct-b", got("org", "s1", t0), "a new pin replaces the old")
		require.NoError(t, s.UnpinSession(ctx, "org", "s1", "acct-a"))
		require.Equal(t, "acct-b", got("org", "s1", t0), "un-pinning another account leaves the pin")
		require.NoError(t, s.UnpinSession(ctx, "org", "s1", "acct-b"))
		require.Empty(t, got("org", "s1", t0))

		// At most maxPins per organization, least recently used out first.
		for i := range 5 {
			require.NoError(t, s.PinSession(ctx, "org", fmt.Sprint("s", i), "acct", t0.Add(time.Duration(i)*time.Second), ttl, 3))
		}
		require.Equal(t, "acct", got("org", "s2", t0.Add(10*time.Second))) // s2 is now the most recent
		require.NoError(t, s.PinSession(ctx, "org", "s5", "acct", t0.Add(11*time.Second), ttl, 3))
		var kept []string
		for i := range 6 {
			if got("org", fmt.Sprint("s", i), t0.Add(12*time.Second)) != "" {
				kept = append(kept, fmt.Sprint("s", i))
			}
		}
		require.Equal(t, []string{"s2", "s4", "s5"}, kept)
	})

	t.Run("CursorAdvancesPerOrganization", func(t *testing.T) {
		s := newState(t)
		for want := range uint64(3) {
			c, err := s.NextCursor(ctx, "org")
			require.NoError(t, err)
			require.Equal(t, want, c)
		}
		c, err := s.NextCursor(ctx, "org2")
		require.NoError(t, err)
		require.Zero(t, c)
	})
}

// snapshot copies the live records of refs out of a State, one Read per
// ref, since one Read takes refs of one organization only.
func snapshot(ctx context.Context, s State, refs ...Ref) ([]Live, error) {
	out := make([]Live, len(refs))
	for i, ref := range refs {
		err := s.Read(ctx, []Ref{ref}, func(_ int, r Records) {
			out[i] = Live{Breaker: *r.Breaker, Cooldown: *r.Cooldown, Buckets: *r.Buckets}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func TestMemState(t *testing.T) {
	testState(t, func(*testing.T) State { return NewMemState() })
}

func TestMemStateDropsZeroRecords(t *testing.T) {
	s := NewMemState()
	ref := Ref{OrgID: "org", AccountID: "acct", QuotaKey: "a:acct", Family: FamilySonnet}
	ctx := context.Background()
	require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
		l.Breaker.Failures, l.Cooldown.Reason, l.Buckets.Requests.Level = 1, CooldownRateLimited, 1
		return nil
	}))
	o := s.orgs["org"]
	require.Len(t, o.breakers, 1)
	require.Len(t, o.quotas, 1)
	require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
		*l = Live{}
		return nil
	}))
	require.Empty(t, o.breakers)
	require.Empty(t, o.quotas)
}

// The lease queue pops in due order whatever order it was pushed in, also
// when pops and pushes interleave and its front is reclaimed.
func TestLeaseQueueIsOrdered(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var q leaseQueue
		var model []int64
		for range rapid.IntRange(0, 500).Draw(t, "steps") {
			if len(model) > 0 && rapid.IntRange(0, 2).Draw(t, "pop") == 0 {
				d, ok := q.peek()
				require.True(t, ok)
				slices.Sort(model)
				require.Equal(t, model[0], d.due)
				q.pop()
				model = model[1:]
				continue
			}
			due := int64(rapid.IntRange(0, 1_000).Draw(t, "due"))
			q.push(leaseDue{due: due})
			model = append(model, due)
		}
		for range model {
			_, ok := q.peek()
			require.True(t, ok)
			q.pop()
		}
		_, ok := q.peek()
		require.False(t, ok)
	})
}
