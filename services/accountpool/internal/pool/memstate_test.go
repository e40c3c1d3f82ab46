package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
		got, err := s.Snapshot(ctx, []Ref{ref})
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
		got, err := s.Snapshot(ctx, []Ref{sameGroupOtherAccount, otherFamily, otherOrg})
		require.NoError(t, err)
		require.Equal(t, Live{Cooldown: Cooldown{Until: t0}, Buckets: Buckets{Input: Bucket{Level: 5, At: t0}}}, got[0], "quota records are shared, the breaker is not")
		require.Equal(t, Live{Breaker: Breaker{Failures: 1}, Cooldown: Cooldown{Until: t0}}, got[1], "buckets are per family")
		require.Equal(t, Live{}, got[2], "nothing is shared across organizations")
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
	require.Len(t, s.breakers, 1)
	require.NoError(t, s.Update(ctx, ref, func(l *Live) error {
		*l = Live{}
		return nil
	}))
	require.Empty(t, s.breakers)
	require.Empty(t, s.cooldowns)
	require.Empty(t, s.buckets)
}
