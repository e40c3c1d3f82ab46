package fakeclock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
)

func TestClockMovesOnlyWhenAdvanced(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := fakeclock.New(start)
	require.Equal(t, start, c.Now())
	require.Equal(t, start, c.Now())
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { c.Advance(time.Second) })
	}
	wg.Wait()
	require.Equal(t, start.Add(10*time.Second), c.Now())
}
