package pool_test

import (
	"testing"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool/statetest"
)

func TestMemState(t *testing.T) {
	statetest.Run(t, func(*testing.T) pool.State { return pool.NewMemState() })
}

func TestMemStateAsItsOwnReplica(t *testing.T) {
	statetest.RunReplicas(t, func(*testing.T) (pool.State, pool.State) {
		s := pool.NewMemState()
		return s, s
	})
}
