package redisstate_test

import (
	"context"
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
		cfg := redisstate.Config{Client: c, Namespace: ns, ExpiryCheckInterval: -1}
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
