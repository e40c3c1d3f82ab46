// Package statetest is the contract every pool.State implementation must
// meet, as a test suite: MemState runs it always, RedisState whenever a
// Redis is configured for tests.
package statetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
)

// Run runs the suite. newState returns a State that holds nothing and
// looks for due leases on every ExpireLeases call; states returned for one
// test may share a backend as long as they share no records (a key prefix
// per call, say). Every test uses organizations of its own besides.
func Run(t *testing.T, newState func(t *testing.T) pool.State) {
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	refIn := func(org string) pool.Ref {
		return pool.Ref{OrgID: org, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
	}

	t.Run("UpdateKeepsChangesOnlyOnSuccess", func(t *testing.T) {
		s, ref := newState(t), refIn(newOrg())
		require.NoError(t, s.Update(ctx, ref, func(l *pool.Live) error {
			l.Breaker.Failures = 3
			l.Cooldown = pool.Cooldown{Until: t0, Reason: pool.CooldownRateLimited}
			return nil
		}))
		boom := errors.New("boom")
		require.ErrorIs(t, s.Update(ctx, ref, func(l *pool.Live) error {
			l.Breaker.Failures = 99
			return boom
		}), boom)
		got := Snapshot(t, s, ref)
		require.Equal(t, int32(3), got[0].Breaker.Failures)
		require.True(t, t0.Equal(got[0].Cooldown.Until))
		require.Equal(t, pool.CooldownRateLimited, got[0].Cooldown.Reason)
	})

	t.Run("EveryFieldRoundTrips", func(t *testing.T) {
		s, ref := newState(t), refIn(newOrg())
		want := pool.Live{
			Breaker:  pool.Breaker{Open: true, Failures: 7, Opens: 2, OpenUntil: t0.Add(time.Second), ProbeLease: "lease-x", ProbeUntil: t0.Add(2 * time.Second)},
			Cooldown: pool.Cooldown{Until: t0.Add(3 * time.Second), Reason: pool.CooldownSpendLimited},
			Buckets: pool.Buckets{
				Requests: pool.Bucket{Level: 12.5, At: t0.Add(time.Nanosecond), Limit: 50, Reserved: 3},
				Input:    pool.Bucket{Level: -400.25, At: t0, Limit: 0, Reserved: 1 << 40},
				Output:   pool.Bucket{Level: 1e9, At: t0.Add(-time.Hour), Limit: 1 << 50, Reserved: 0},
			},
		}
		require.NoError(t, s.Update(ctx, ref, func(l *pool.Live) error { *l = want; return nil }))
		requireLive(t, want, Snapshot(t, s, ref)[0])
		var inUpdate pool.Live
		require.NoError(t, s.Update(ctx, ref, func(l *pool.Live) error { inUpdate = *l; return nil }))
		requireLive(t, want, inUpdate)
	})

	t.Run("RecordsAreKeyedAsDocumented", func(t *testing.T) {
		s, org, org2 := newState(t), newOrg(), newOrg()
		ref := refIn(org)
		require.NoError(t, s.Update(ctx, ref, func(l *pool.Live) error {
			l.Breaker.Failures = 1
			l.Cooldown.Until = t0
			l.Buckets.Input = pool.Bucket{Level: 5, At: t0}
			return nil
		}))
		sameGroupOtherAccount := pool.Ref{OrgID: org, AccountID: "other", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		otherFamily := pool.Ref{OrgID: org, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilyOpus}
		otherOrg := pool.Ref{OrgID: org2, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		got := Snapshot(t, s, sameGroupOtherAccount, otherFamily, otherOrg)
		requireLive(t, pool.Live{Cooldown: pool.Cooldown{Until: t0}, Buckets: pool.Buckets{Input: pool.Bucket{Level: 5, At: t0}}}, got[0], "quota records are shared, the breaker is not")
		requireLive(t, pool.Live{Breaker: pool.Breaker{Failures: 1}, Cooldown: pool.Cooldown{Until: t0}}, got[1], "buckets are per family")
		requireLive(t, pool.Live{}, got[2], "nothing is shared across organizations")
	})

	t.Run("ReadVisitsEveryRefInOrder", func(t *testing.T) {
		s, org := newState(t), newOrg()
		a := pool.Ref{OrgID: org, AccountID: "a", QuotaKey: "a:a", Family: pool.FamilySonnet}
		b := pool.Ref{OrgID: org, AccountID: "b", QuotaKey: "a:b", Family: pool.FamilySonnet}
		never := pool.Ref{OrgID: org, AccountID: "c", QuotaKey: "a:c", Family: pool.FamilySonnet}
		for i, r := range []pool.Ref{a, b} {
			require.NoError(t, s.Update(ctx, r, func(l *pool.Live) error {
				l.Breaker.Failures = int32(i + 1)
				return nil
			}))
		}
		for _, set := range []pool.RefSet{pool.Refs{b, never, a}, s.Prepare([]pool.Ref{b, never, a})} {
			// Twice: a prepared set may remember where records are.
			for range 2 {
				var seen []int32
				require.NoError(t, s.Read(ctx, set, func(i int, r pool.Records) {
					require.Len(t, seen, i)
					seen = append(seen, r.Breaker.Failures)
				}))
				require.Equal(t, []int32{2, 0, 1}, seen)
			}
		}
		set := s.Prepare([]pool.Ref{a})
		require.NoError(t, s.Update(ctx, a, func(l *pool.Live) error { *l = pool.Live{}; return nil }))
		require.NoError(t, s.Read(ctx, set, func(_ int, r pool.Records) {
			require.Zero(t, r.Breaker.Failures, "a prepared set sees records dropped after it was made")
		}))
		require.NoError(t, s.Update(ctx, a, func(l *pool.Live) error { l.Breaker.Failures = 9; return nil }))
		require.NoError(t, s.Read(ctx, set, func(_ int, r pool.Records) {
			require.Equal(t, int32(9), r.Breaker.Failures, "and records written after")
		}))
		require.NoError(t, s.Read(ctx, pool.Refs{{OrgID: newOrg(), AccountID: "x", QuotaKey: "a:x"}}, func(_ int, r pool.Records) {
			requireLive(t, pool.Live{}, pool.Live{Breaker: *r.Breaker, Cooldown: *r.Cooldown, Buckets: *r.Buckets})
		}))
	})

	t.Run("ReserveRecordsTheLeaseOnlyOnSuccess", func(t *testing.T) {
		s, org := newState(t), newOrg()
		ref := refIn(org)
		refused := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		no := errors.New("no")
		require.ErrorIs(t, s.Reserve(ctx, &refused, func(l *pool.Live) error {
			l.Buckets.Requests.Reserved = 1
			return no
		}), no)
		require.Zero(t, Snapshot(t, s, ref)[0].Buckets.Requests.Reserved)
		requireStatus(t, s, org, "acct", refused.ID, pool.LeaseUnknown)

		l := pool.Lease{ID: newID(), Ref: ref, AccountName: "a", Tier: "t", Limits: pool.Limits{RPM: 5, InputTPM: 6, OutputTPM: 7}, Reserved: pool.Amount{Requests: 1, Input: 2, Output: 3}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.Reserve(ctx, &l, func(live *pool.Live) error {
			live.Buckets.Requests.Reserved++
			l.Probe = true
			return nil
		}))
		require.Equal(t, int64(1), Snapshot(t, s, ref)[0].Buckets.Requests.Reserved)
		var got pool.Lease
		var seen pool.Live
		require.NoError(t, s.Settle(ctx, org, "acct", l.ID, pool.Ref{}, func(lease pool.Lease, was pool.LeaseStatus, live *pool.Live) error {
			require.Equal(t, pool.LeaseOpen, was)
			got, seen = lease, *live
			live.Buckets.Requests.Reserved--
			return nil
		}))
		requireLease(t, l, got, "the lease as fn left it")
		require.Equal(t, int64(1), seen.Buckets.Requests.Reserved, "settle runs on the lease's records")
		require.Zero(t, Snapshot(t, s, ref)[0].Buckets.Requests.Reserved)
	})

	t.Run("LeaseSettlesOnce", func(t *testing.T) {
		s, org, org2 := newState(t), newOrg(), newOrg()
		ref := refIn(org)
		l := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1, Input: 2, Output: 3}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.Reserve(ctx, &l, func(*pool.Live) error { return nil }))
		fallback := pool.Ref{OrgID: org2, AccountID: "acct", QuotaKey: "a:fallback", Family: pool.FamilyHaiku}
		require.Equal(t, pool.LeaseUnknown, settle(t, s, org2, "acct", l.ID, fallback), "another organization cannot settle it")
		requireLive(t, pool.Live{Breaker: pool.Breaker{Failures: 1}}, Snapshot(t, s, fallback)[0], "an unknown lease settles on the fallback records")
		require.Equal(t, pool.LeaseUnknown, settle(t, s, org, "other", l.ID, pool.Ref{OrgID: org, AccountID: "other", QuotaKey: "a:other"}), "nor another account")
		boom := errors.New("boom")
		require.ErrorIs(t, s.Settle(ctx, org, "acct", l.ID, fallback, func(pool.Lease, pool.LeaseStatus, *pool.Live) error { return boom }), boom)
		require.Equal(t, pool.LeaseOpen, settle(t, s, org, "acct", l.ID, fallback), "a settle that failed changed nothing")
		require.Equal(t, pool.LeaseSettled, settle(t, s, org, "acct", l.ID, fallback))
		require.Equal(t, int32(2), Snapshot(t, s, ref)[0].Breaker.Failures, "both settles ran on the lease's records")
		expired, err := s.ExpireLeases(ctx, t0.Add(time.Hour), func(pool.Lease, *pool.Live) { t.Error("released a settled lease") })
		require.NoError(t, err)
		require.Empty(t, expired, "a settled lease never expires")
	})

	t.Run("LeasesExpireThenAreForgotten", func(t *testing.T) {
		s, org := newState(t), newOrg()
		ref := refIn(org)
		l := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.Reserve(ctx, &l, func(live *pool.Live) error { live.Buckets.Requests.Reserved = 1; return nil }))
		release := func(lease pool.Lease, live *pool.Live) { live.Buckets.Requests.Reserved -= lease.Reserved.Requests }
		expired, err := s.ExpireLeases(ctx, t0.Add(59*time.Second), release)
		require.NoError(t, err)
		require.Empty(t, expired)
		expired = expireUntil(t, s, t0.Add(time.Minute), release)
		require.Len(t, expired, 1)
		requireLease(t, l, expired[0])
		require.Zero(t, Snapshot(t, s, ref)[0].Buckets.Requests.Reserved, "released with the expiry")
		expired = expireUntil(t, s, t0.Add(90*time.Second), release)
		require.Empty(t, expired, "expired once")

		require.Equal(t, pool.LeaseExpired, settle(t, s, org, "acct", l.ID, ref), "a late settle learns the reservation is gone")
		require.Equal(t, pool.LeaseSettled, settle(t, s, org, "acct", l.ID, ref))

		expireUntil(t, s, t0.Add(2*time.Minute), release)
		require.Equal(t, pool.LeaseUnknown, settle(t, s, org, "acct", l.ID, ref), "forgotten one lifetime after expiry")
	})

	t.Run("FreedWakesWaiters", func(t *testing.T) {
		s, org := newState(t), newOrg()
		ref := refIn(org)
		l := pool.Lease{ID: newID(), Ref: ref, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.Reserve(ctx, &l, func(*pool.Live) error { return nil }))
		woken := s.Freed(org)
		settle(t, s, org, "acct", l.ID, ref)
		requireClosed(t, woken, "a settle wakes the organization's waiters")
		woken = s.Freed(org)
		require.NoError(t, s.Update(ctx, ref, func(live *pool.Live) error { live.Breaker = pool.Breaker{}; return nil }))
		requireClosed(t, woken, "an update wakes them")
		l2 := pool.Lease{ID: newID(), Ref: ref, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, s.Reserve(ctx, &l2, func(*pool.Live) error { return nil }))
		woken = s.Freed(org)
		expireUntil(t, s, t0.Add(time.Minute), func(pool.Lease, *pool.Live) {})
		requireClosed(t, woken, "an expiry wakes them")
	})

	t.Run("SessionPins", func(t *testing.T) {
		s, org, org2 := newState(t), newOrg(), newOrg()
		const ttl = time.Hour
		got := func(org, session string, at time.Time) string {
			t.Helper()
			acct, err := s.SessionAccount(ctx, org, session, at, ttl)
			require.NoError(t, err)
			return acct
		}
		require.Empty(t, got(org, "s1", t0))
		require.NoError(t, s.PinSession(ctx, org, "s1", "acct-a", t0, ttl, 10))
		require.Equal(t, "acct-a", got(org, "s1", t0.Add(59*time.Minute)), "a hit marks the pin used")
		require.Equal(t, "acct-a", got(org, "s1", t0.Add(118*time.Minute)), "so the idle time restarts")
		require.Empty(t, got(org2, "s1", t0), "pins are per organization")
		require.Empty(t, got(org, "s1", t0.Add(178*time.Minute)), "idle for the TTL: gone")

		require.NoError(t, s.PinSession(ctx, org, "s1", "acct-a", t0, ttl, 10))
		require.NoError(t, s.PinSession(ctx, org, "s1", "acct-b", t0, ttl, 10))
		require.Equal(t, "acct-b", got(org, "s1", t0), "a new pin replaces the old")
		require.NoError(t, s.UnpinSession(ctx, org, "s1", "acct-a"))
		require.Equal(t, "acct-b", got(org, "s1", t0), "un-pinning another account leaves the pin")
		require.NoError(t, s.UnpinSession(ctx, org, "s1", "acct-b"))
		require.Empty(t, got(org, "s1", t0))

		// At most maxPins per organization, least recently used out first.
		for i := range 5 {
			require.NoError(t, s.PinSession(ctx, org, fmt.Sprint("s", i), "acct", t0.Add(time.Duration(i)*time.Second), ttl, 3))
		}
		require.Equal(t, "acct", got(org, "s2", t0.Add(10*time.Second))) // s2 is now the most recent
		require.NoError(t, s.PinSession(ctx, org, "s5", "acct", t0.Add(11*time.Second), ttl, 3))
		var kept []string
		for i := range 6 {
			if got(org, fmt.Sprint("s", i), t0.Add(12*time.Second)) != "" {
				kept = append(kept, fmt.Sprint("s", i))
			}
		}
		require.Equal(t, []string{"s2", "s4", "s5"}, kept)
	})

	t.Run("CursorAdvancesPerOrganization", func(t *testing.T) {
		s, org := newState(t), newOrg()
		for want := range uint64(3) {
			c, err := s.NextCursor(ctx, org)
			require.NoError(t, err)
			require.Equal(t, want, c)
		}
		c, err := s.NextCursor(ctx, newOrg())
		require.NoError(t, err)
		require.Zero(t, c)
	})

	t.Run("Concurrency", func(t *testing.T) {
		t.Run("ReservationsNeverOverdrawABucket", func(t *testing.T) {
			// 16 goroutines race to reserve one unit each from a bucket of
			// 50; the check runs inside Reserve, as Select's does.
			s, org := newState(t), newOrg()
			ref := refIn(org)
			const capacity, workers, tries = 50, 16, 10
			var admitted, refused atomic.Int64
			var wg sync.WaitGroup
			full := errors.New("full")
			for range workers {
				wg.Go(func() {
					for range tries {
						l := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
						err := s.Reserve(ctx, &l, func(live *pool.Live) error {
							if live.Buckets.Requests.Reserved >= capacity {
								return full
							}
							live.Buckets.Requests.Reserved++
							return nil
						})
						switch {
						case err == nil:
							admitted.Add(1)
						case errors.Is(err, full):
							refused.Add(1)
						default:
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			require.Equal(t, int64(capacity), admitted.Load(), "exactly the bucket's capacity is admitted")
			require.Equal(t, int64(workers*tries-capacity), refused.Load())
			require.Equal(t, int64(capacity), Snapshot(t, s, ref)[0].Buckets.Requests.Reserved)
		})

		t.Run("SettlesAndUpdatesLoseNoChange", func(t *testing.T) {
			s, org := newState(t), newOrg()
			ref := refIn(org)
			const n = 40
			leases := make([]pool.Lease, n)
			for i := range leases {
				leases[i] = pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
				require.NoError(t, s.Reserve(ctx, &leases[i], func(live *pool.Live) error { live.Buckets.Requests.Reserved++; return nil }))
			}
			var wg sync.WaitGroup
			for i := range leases {
				wg.Go(func() {
					// Each lease settled twice at once: only one of the two
					// gives its reservation back.
					for range 2 {
						err := s.Settle(ctx, org, "acct", leases[i].ID, ref, func(_ pool.Lease, was pool.LeaseStatus, live *pool.Live) error {
							if was == pool.LeaseOpen {
								live.Buckets.Requests.Reserved--
							}
							return nil
						})
						if err != nil {
							t.Error(err)
						}
					}
				})
				wg.Go(func() {
					if err := s.Update(ctx, ref, func(live *pool.Live) error { live.Breaker.Failures++; return nil }); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			got := Snapshot(t, s, ref)[0]
			require.Zero(t, got.Buckets.Requests.Reserved, "every reservation given back exactly once")
			require.Equal(t, int32(n), got.Breaker.Failures, "no update lost")
		})
	})
}

// Snapshot copies the live records of refs out of a State, one Read per
// ref, since one Read takes refs of one organization only.
func Snapshot(t testing.TB, s pool.State, refs ...pool.Ref) []pool.Live {
	t.Helper()
	out := make([]pool.Live, len(refs))
	for i, ref := range refs {
		err := s.Read(context.Background(), pool.Refs{ref}, func(_ int, r pool.Records) {
			out[i] = pool.Live{Breaker: *r.Breaker, Cooldown: *r.Cooldown, Buckets: *r.Buckets}
		})
		require.NoError(t, err)
	}
	return out
}

func newOrg() string { return "org-" + uuid.NewString() }

func newID() string { return uuid.NewString() }

// settle settles a lease, counting one breaker failure on the records it
// runs on, and returns the status the lease had.
func settle(t *testing.T, s pool.State, org, account, leaseID string, fallback pool.Ref) pool.LeaseStatus {
	t.Helper()
	var status pool.LeaseStatus
	require.NoError(t, s.Settle(context.Background(), org, account, leaseID, fallback, func(_ pool.Lease, was pool.LeaseStatus, live *pool.Live) error {
		status = was
		live.Breaker.Failures++
		return nil
	}))
	return status
}

func requireStatus(t *testing.T, s pool.State, org, account, leaseID string, want pool.LeaseStatus) {
	t.Helper()
	var got pool.LeaseStatus
	require.ErrorIs(t, s.Settle(context.Background(), org, account, leaseID, pool.Ref{OrgID: org, AccountID: account, QuotaKey: "a:" + account}, func(_ pool.Lease, was pool.LeaseStatus, _ *pool.Live) error {
		got = was
		return errPeek
	}), errPeek)
	require.Equal(t, want, got)
}

var errPeek = errors.New("peek only")

// expireUntil calls ExpireLeases at now.
func expireUntil(t *testing.T, s pool.State, now time.Time, release func(pool.Lease, *pool.Live)) []pool.Lease {
	t.Helper()
	got, err := s.ExpireLeases(context.Background(), now, release)
	require.NoError(t, err)
	return got
}

func requireClosed(t *testing.T, c <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}

// requireLive compares records with times by instant, not by location: a
// State may hand back times in another time zone than they went in.
func requireLive(t *testing.T, want, got pool.Live, msg ...any) {
	t.Helper()
	require.Equal(t, normLive(want), normLive(got), msg...)
}

func requireLease(t *testing.T, want, got pool.Lease, msg ...any) {
	t.Helper()
	norm := func(l pool.Lease) pool.Lease {
		l.IssueTime, l.ExpireTime = utc(l.IssueTime), utc(l.ExpireTime)
		return l
	}
	require.Equal(t, norm(want), norm(got), msg...)
}

func normLive(l pool.Live) pool.Live {
	l.Breaker.OpenUntil, l.Breaker.ProbeUntil = utc(l.Breaker.OpenUntil), utc(l.Breaker.ProbeUntil)
	l.Cooldown.Until = utc(l.Cooldown.Until)
	for _, b := range []*pool.Bucket{&l.Buckets.Requests, &l.Buckets.Input, &l.Buckets.Output} {
		b.At = utc(b.At)
	}
	return l
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// RunReplicas checks that two States of one deployment share their
// records: newPair returns two States over the same backend (for an
// in-process State, the same one twice).
func RunReplicas(t *testing.T, newPair func(t *testing.T) (pool.State, pool.State)) {
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	t.Run("WritesAreSeenByTheOther", func(t *testing.T) {
		a, b := newPair(t)
		ref := pool.Ref{OrgID: newOrg(), AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		// b reads first, so a replica that remembered what it read would
		// see the old value.
		requireLive(t, pool.Live{}, Snapshot(t, b, ref)[0])
		require.NoError(t, a.Update(ctx, ref, func(l *pool.Live) error {
			l.Cooldown = pool.Cooldown{Until: t0, Reason: pool.CooldownRateLimited}
			l.Breaker.Open = true
			return nil
		}))
		got := Snapshot(t, b, ref)[0]
		require.True(t, got.Breaker.Open, "a breaker opened through one is open on the other")
		require.Equal(t, pool.CooldownRateLimited, got.Cooldown.Reason, "and so is a cool-down")
		require.NoError(t, b.Update(ctx, ref, func(l *pool.Live) error { l.Breaker.Failures = 4; return nil }))
		require.True(t, Snapshot(t, a, ref)[0].Breaker.Open, "b's update started from a's write")
	})

	t.Run("ALeaseIssuedByOneSettlesThroughTheOther", func(t *testing.T) {
		a, b := newPair(t)
		org := newOrg()
		ref := pool.Ref{OrgID: org, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		l := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, a.Reserve(ctx, &l, func(live *pool.Live) error { live.Buckets.Requests.Reserved++; return nil }))
		woken := a.Freed(org)
		require.NoError(t, b.Settle(ctx, org, "acct", l.ID, ref, func(got pool.Lease, was pool.LeaseStatus, live *pool.Live) error {
			require.Equal(t, pool.LeaseOpen, was)
			requireLease(t, l, got)
			live.Buckets.Requests.Reserved--
			return nil
		}))
		requireClosed(t, woken, "a settle through b wakes a's waiters")
		require.Zero(t, Snapshot(t, a, ref)[0].Buckets.Requests.Reserved)
		require.Equal(t, pool.LeaseSettled, settle(t, a, org, "acct", l.ID, ref), "settled once, whichever replica asks")
	})

	t.Run("ALeaseExpiresOnceWhicheverReplicaLooks", func(t *testing.T) {
		a, b := newPair(t)
		org := newOrg()
		ref := pool.Ref{OrgID: org, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		l := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, a.Reserve(ctx, &l, func(live *pool.Live) error { live.Buckets.Requests.Reserved++; return nil }))
		var released atomic.Int64
		release := func(lease pool.Lease, live *pool.Live) {
			released.Add(1)
			live.Buckets.Requests.Reserved -= lease.Reserved.Requests
		}
		var wg sync.WaitGroup
		for _, s := range []pool.State{a, b, a, b} {
			wg.Go(func() {
				if _, err := s.ExpireLeases(ctx, t0.Add(time.Minute), release); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		require.Zero(t, Snapshot(t, b, ref)[0].Buckets.Requests.Reserved)
		require.LessOrEqual(t, released.Load(), int64(4), "release may run again on a conflict")
		require.Equal(t, pool.LeaseExpired, settle(t, b, org, "acct", l.ID, ref), "expired exactly once")
	})

	t.Run("ReservationsOnBothNeverOverdraw", func(t *testing.T) {
		a, b := newPair(t)
		ref := pool.Ref{OrgID: newOrg(), AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		const capacity = 30
		var admitted atomic.Int64
		var wg sync.WaitGroup
		full := errors.New("full")
		for w := range 8 {
			s := []pool.State{a, b}[w%2]
			wg.Go(func() {
				for range 10 {
					l := pool.Lease{ID: newID(), Ref: ref, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
					err := s.Reserve(ctx, &l, func(live *pool.Live) error {
						if live.Buckets.Requests.Reserved >= capacity {
							return full
						}
						live.Buckets.Requests.Reserved++
						return nil
					})
					if err == nil {
						admitted.Add(1)
					} else if !errors.Is(err, full) {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		require.Equal(t, int64(capacity), admitted.Load())
	})

	t.Run("UpdatesAndExpiriesWakeTheOthersWaiters", func(t *testing.T) {
		a, b := newPair(t)
		org := newOrg()
		ref := pool.Ref{OrgID: org, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		woken := b.Freed(org)
		require.NoError(t, a.Update(ctx, ref, func(l *pool.Live) error { l.Breaker = pool.Breaker{}; return nil }))
		requireClosed(t, woken, "an update through one wakes the other's waiters")
		l := pool.Lease{ID: newID(), Ref: ref, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
		require.NoError(t, a.Reserve(ctx, &l, func(*pool.Live) error { return nil }))
		woken = b.Freed(org)
		_, err := a.ExpireLeases(ctx, t0.Add(time.Minute), func(pool.Lease, *pool.Live) {})
		require.NoError(t, err)
		requireClosed(t, woken, "an expiry through one wakes the other's waiters")
	})

	t.Run("SettleRacingExpiryReleasesOnce", func(t *testing.T) {
		a, b := newPair(t)
		org := newOrg()
		ref := pool.Ref{OrgID: org, AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
		const n = 20
		for range n {
			l := pool.Lease{ID: newID(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
			require.NoError(t, a.Reserve(ctx, &l, func(live *pool.Live) error { live.Buckets.Requests.Reserved++; return nil }))
			var wg sync.WaitGroup
			wg.Go(func() {
				err := b.Settle(ctx, org, "acct", l.ID, ref, func(_ pool.Lease, was pool.LeaseStatus, live *pool.Live) error {
					if was == pool.LeaseOpen {
						live.Buckets.Requests.Reserved--
					}
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() {
				_, err := a.ExpireLeases(ctx, t0.Add(time.Minute), func(lease pool.Lease, live *pool.Live) {
					live.Buckets.Requests.Reserved -= lease.Reserved.Requests
				})
				if err != nil {
					t.Error(err)
				}
			})
			wg.Wait()
		}
		require.Zero(t, Snapshot(t, a, ref)[0].Buckets.Requests.Reserved, "each reservation given back exactly once, by the settle or the expiry")
	})

	t.Run("PinsAndCursorsAreShared", func(t *testing.T) {
		a, b := newPair(t)
		org := newOrg()
		require.NoError(t, a.PinSession(ctx, org, "s", "acct", t0, time.Hour, 10))
		got, err := b.SessionAccount(ctx, org, "s", t0, time.Hour)
		require.NoError(t, err)
		require.Equal(t, "acct", got, "a pin made on one is used by the other")
		c0, err := a.NextCursor(ctx, org)
		require.NoError(t, err)
		c1, err := b.NextCursor(ctx, org)
		require.NoError(t, err)
		require.Equal(t, c0+1, c1)
	})
}
