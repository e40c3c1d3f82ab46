package pool

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// gauge returns the value of the int gauge or sum name at the point whose
// attributes include want.
func metricValue(t *testing.T, rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) (float64, bool) {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			match := func(set attribute.Set) bool {
				for _, kv := range want {
					if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
						return false
					}
				}
				return true
			}
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return float64(p.Value), true
					}
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return p.Value, true
					}
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return float64(p.Value), true
					}
				}
			}
		}
	}
	return 0, false
}

func TestPoolMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	f := newFixture(t, func(c *Config) { c.Meter = mp })
	a := f.register("a", "tier1").Account.ID
	b := f.register("b", "tier1").Account.ID
	collect := func() metricdata.ResourceMetrics {
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(context.Background(), &rm))
		return rm
	}
	acct := func(id string) attribute.KeyValue { return attribute.String("account.id", id) }

	sel := f.mustSelect(allowed(a), estimate(10_000, 0))
	rm := collect()
	open, ok := metricValue(t, rm, "switchyard.leases.open")
	require.True(t, ok)
	require.Equal(t, 1.0, open)
	in, ok := metricValue(t, rm, "switchyard.account.capacity.remaining", acct(a),
		attribute.String("switchyard.model_family", "sonnet"), attribute.String("switchyard.dimension", "input_tokens"))
	require.True(t, ok)
	require.Equal(t, 20_000.0, in, "the reservation is held")
	lim, _ := metricValue(t, rm, "switchyard.account.capacity.limit", acct(a),
		attribute.String("switchyard.model_family", "sonnet"), attribute.String("switchyard.dimension", "input_tokens"))
	require.Equal(t, 30_000.0, lim)

	f.record(sel, store.OutcomeRateLimited, func(r *RecordRequest) { r.Headers.RetryAfter = 30 * time.Second })
	f.failTimes(b, 5)
	rm = collect()
	open, _ = metricValue(t, rm, "switchyard.leases.open")
	require.Zero(t, open, "every lease settled")
	cd, _ := metricValue(t, rm, "switchyard.account.cooldown.remaining", acct(a))
	require.Equal(t, 30.0, cd)
	st, _ := metricValue(t, rm, "switchyard.account.breaker.state", acct(b))
	require.Equal(t, 2.0, st, "open")
	st, _ = metricValue(t, rm, "switchyard.account.breaker.state", acct(a))
	require.Zero(t, st, "closed")
}
