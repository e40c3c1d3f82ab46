package store

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAbandonReason(t *testing.T) {
	deadline := time.Date(2031, 3, 4, 5, 6, 7, 120000000, time.FixedZone("CET", 3600))
	require.Equal(t, "abandoned: no completion by the deadline 2031-03-04T04:06:07.120000Z plus grace 30s", AbandonReason(deadline, 30*time.Second))
	for d, want := range map[time.Duration]string{
		0:                                 "0s",
		time.Microsecond:                  "0.000001s",
		1500 * time.Millisecond:           "1.5s",
		90 * time.Second:                  "90s",
		2*time.Hour + 10*time.Microsecond: "7200.00001s",
	} {
		require.Equal(t, want, seconds(d), "%v", d)
	}
}
