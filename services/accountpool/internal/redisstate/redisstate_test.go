package redisstate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/redistest"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool/statetest"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/redisstate"
)

// newState returns a State in a namespace of its own, whose keys are
// deleted when the test ends, and a function that returns more States on
// the same namespace: replicas of one deployment.
func newState(t testing.TB, c *redis.Client, mod ...func(*redisstate.Config)) (*redisstate.State, func() *redisstate.State) {
	t.Helper()
	ns := redistest.Namespace(t, c)
	replica := func() *redisstate.State {
		cfg := redisstate.Config{Client: c, Namespace: ns, ExpiryCheckInterval: -1, Logger: quiet()}
		for _, m := range mod {
			m(&cfg)
		}
		s, err := redisstate.New(cfg)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return replica(), replica
}

func TestState(t *testing.T) {
	c := redistest.Client(t)
	statetest.Run(t, func(t *testing.T) pool.State {
		s, _ := newState(t, c)
		return s
	})
}

func TestReplicasShareState(t *testing.T) {
	c := redistest.Client(t)
	statetest.RunReplicas(t, func(t *testing.T) (pool.State, pool.State) {
		s, replica := newState(t, c)
		return s, replica()
	})
}

// A lease whose key is gone (its idle expiry passed, or Redis lost it)
// leaves the set of open leases at the next expiry check.
func TestALostLeaseLeavesTheExpirySet(t *testing.T) {
	c := redistest.Client(t)
	s, _ := newState(t, c)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ref := pool.Ref{OrgID: "org-lost", AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
	l := pool.Lease{ID: uuid.NewString(), Ref: ref, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
	require.NoError(t, s.Reserve(ctx, &l, func(*pool.Live) error { return nil }))
	members, err := c.ZRange(ctx, s.Namespace()+":leases", 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, members, 1)
	require.NoError(t, c.Del(ctx, members[0]).Err())
	// The release may run on an attempt that is not committed: what
	// counts is what the state holds afterwards.
	expired, err := s.ExpireLeases(ctx, t0.Add(time.Hour), func(_ pool.Lease, l *pool.Live) { l.Breaker.Failures++ })
	require.NoError(t, err)
	require.Empty(t, expired)
	require.Zero(t, statetest.Snapshot(t, s, ref)[0].Breaker.Failures, "nothing was released")
	n, err := c.ZCard(ctx, s.Namespace()+":leases").Result()
	require.NoError(t, err)
	require.Zero(t, n)
}

// Leases that cannot be read (a newer version's, or damaged) do not hold
// up the expiry of the others, however many there are.
func TestUnreadableLeasesDoNotBlockExpiry(t *testing.T) {
	c := redistest.Client(t)
	s, _ := newState(t, c)
	ctx := context.Background()
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 300 {
		k := fmt.Sprintf("%s:{org-bad}:l:bad-%d", s.Namespace(), i)
		require.NoError(t, c.Set(ctx, k, "\x09garbage", time.Hour).Err())
		require.NoError(t, c.ZAdd(ctx, s.Namespace()+":leases", redis.Z{Score: float64(t0.Add(-time.Hour).UnixMicro()), Member: k}).Err())
	}
	ref := pool.Ref{OrgID: "org-good", AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
	l := pool.Lease{ID: uuid.NewString(), Ref: ref, Reserved: pool.Amount{Requests: 1}, IssueTime: t0, ExpireTime: t0.Add(time.Minute)}
	require.NoError(t, s.Reserve(ctx, &l, func(live *pool.Live) error { live.Buckets.Requests.Reserved = 1; return nil }))
	release := func(lease pool.Lease, live *pool.Live) { live.Buckets.Requests.Reserved -= lease.Reserved.Requests }
	var expired []pool.Lease
	for range 3 {
		got, err := s.ExpireLeases(ctx, t0.Add(2*time.Minute), release)
		require.NoError(t, err, "unreadable leases are passed over, not an error for every selection")
		expired = append(expired, got...)
	}
	require.Len(t, expired, 1)
	require.Equal(t, l.ID, expired[0].ID)
	require.Zero(t, statetest.Snapshot(t, s, ref)[0].Buckets.Requests.Reserved)
	v, err := c.Get(ctx, fmt.Sprintf("%s:{org-bad}:l:bad-7", s.Namespace())).Result()
	require.NoError(t, err)
	require.Equal(t, "\x09garbage", v, "left for a version that can read it")
}

// A transaction never writes over a value it cannot read.
func TestTransactionsRefuseUnreadableRecords(t *testing.T) {
	c := redistest.Client(t)
	s, _ := newState(t, c)
	ctx := context.Background()
	ref := pool.Ref{OrgID: "org-x", AccountID: "acct", QuotaKey: "a:acct", Family: pool.FamilySonnet}
	k := s.Namespace() + ":{org-x}:b:acct"
	require.NoError(t, c.Set(ctx, k, "\x02from-the-future", time.Hour).Err())
	err := s.Update(ctx, ref, func(l *pool.Live) error { l.Breaker.Failures++; return nil })
	require.ErrorContains(t, err, "cannot read")
	require.ErrorContains(t, err, k)
	l := pool.Lease{ID: uuid.NewString(), Ref: ref, IssueTime: time.Now(), ExpireTime: time.Now().Add(time.Minute)}
	require.ErrorContains(t, s.Reserve(ctx, &l, func(*pool.Live) error { return nil }), "cannot read")
	v, err := c.Get(ctx, k).Result()
	require.NoError(t, err)
	require.Equal(t, "\x02from-the-future", v)
	// A read, which writes nothing, sees it as empty.
	require.Zero(t, statetest.Snapshot(t, s, ref)[0].Breaker.Failures)
}
