package anthropicsim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucketRefillsContinuously(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newBucket(50, t0) // 50/min: one token every 1.2s
	require.EqualValues(t, 50, b.remaining())
	require.Equal(t, t0, b.fullAt(t0))

	b.take(50)
	require.EqualValues(t, 0, b.remaining())
	require.Equal(t, 1200*time.Millisecond, b.wait(1))
	require.Equal(t, 12*time.Second, b.wait(10))
	require.Equal(t, t0.Add(time.Minute), b.fullAt(t0))

	b.refill(t0.Add(1199 * time.Millisecond))
	require.EqualValues(t, 0, b.remaining())
	require.Equal(t, time.Millisecond, b.wait(1))
	b.refill(t0.Add(1200 * time.Millisecond))
	require.EqualValues(t, 1, b.remaining(), "exact arithmetic: no float drift")
	require.Zero(t, b.wait(1))

	b.refill(t0) // a clock going backwards adds nothing
	require.EqualValues(t, 1, b.remaining())

	b.refill(t0.Add(time.Hour))
	require.EqualValues(t, 50, b.remaining(), "never above the limit")

	// More than the capacity is never admitted, even when full.
	require.Positive(t, b.wait(51))
}

func TestUnlimitedBucket(t *testing.T) {
	b := newBucket(0, time.Now())
	require.True(t, b.unlimited())
	require.Zero(t, b.wait(1<<40))
	b.take(1 << 40)
	require.Zero(t, b.wait(1<<40))
}

func TestFormatResetRoundsUp(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)
	require.Equal(t, "2026-01-01T00:00:05Z", formatReset(t0))
	require.Equal(t, "2026-01-01T00:00:06Z", formatReset(t0.Add(time.Nanosecond)))
	require.Equal(t, "2026-01-01T00:00:05Z", formatReset(t0.In(time.FixedZone("x", 3600))))
}

func TestRetryAfterSeconds(t *testing.T) {
	require.EqualValues(t, 1, retryAfterSeconds(time.Microsecond))
	require.EqualValues(t, 1, retryAfterSeconds(time.Second))
	require.EqualValues(t, 2, retryAfterSeconds(1200*time.Millisecond))
	require.EqualValues(t, 30, retryAfterSeconds(30*time.Second))
}

func TestSimPrefix(t *testing.T) {
	for key, want := range map[string]string{
		"sk-ant-sim-429-x":   "429",
		"sk-ant-sim-tier1-":  "tier1",
		"sk-ant-sim-tier1":   "",
		"sk-ant-sim--x":      "",
		"sk-ant-api03-429-x": "",
	} {
		got, ok := simPrefix(key)
		require.Equal(t, want, got, key)
		require.Equal(t, want != "", ok, key)
	}
}

func TestFingerprintHidesKey(t *testing.T) {
	fp := fingerprint("sk-ant-secret-key")
	require.Len(t, fp, 8)
	require.NotContains(t, "sk-ant-secret-key", fp)
	require.Equal(t, fp, fingerprint("sk-ant-secret-key"))
}
