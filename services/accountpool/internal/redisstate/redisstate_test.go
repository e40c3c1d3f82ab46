package redisstate_test

import (
	"testing"

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
