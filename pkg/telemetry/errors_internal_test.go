package telemetry

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimiterLetsAMessageThroughOncePerInterval(t *testing.T) {
	l := &limiter{every: time.Minute, last: map[string]limitState{}}
	t0 := time.Unix(1_000_000, 0)
	n, ok := l.allow("collector down", t0)
	require.True(t, ok)
	require.Zero(t, n)
	for i := range 3 {
		_, ok = l.allow("collector down", t0.Add(time.Duration(i+1)*time.Second))
		require.False(t, ok)
	}
	_, ok = l.allow("another error", t0.Add(time.Second))
	require.True(t, ok, "each message has its own interval")
	n, ok = l.allow("collector down", t0.Add(time.Minute))
	require.True(t, ok)
	require.Equal(t, 3, n, "the next line says how many were left out")
}
