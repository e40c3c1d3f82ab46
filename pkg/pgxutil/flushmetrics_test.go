package pgxutil_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
)

func TestFlushMetricsRecordEachFlushByOutcome(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	m := pgxutil.NewFlushMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), pgxutil.FlushMetricNames{
		Scope: "test", Prefix: "switchyard.test.flush", What: "one test flush", Items: "rows", Unit: "{row}", ItemsDescription: "rows",
	})
	ctx := context.Background()
	m.Observe(ctx, time.Now(), 3, nil)
	m.Observe(ctx, time.Now(), 5, nil)
	m.Observe(ctx, time.Now(), 2, errors.New("down"))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]map[string][2]int64{} // name → outcome → {count, sum}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			got[mt.Name] = map[string][2]int64{}
			switch d := mt.Data.(type) {
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					o, _ := p.Attributes.Value(attribute.Key("switchyard.outcome"))
					got[mt.Name][o.AsString()] = [2]int64{int64(p.Count), p.Sum}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					o, _ := p.Attributes.Value(attribute.Key("switchyard.outcome"))
					got[mt.Name][o.AsString()] = [2]int64{int64(p.Count), 0}
				}
			}
		}
	}
	require.Equal(t, map[string][2]int64{"committed": {2, 8}, "failed": {1, 2}}, got["switchyard.test.flush.rows"])
	require.Equal(t, map[string][2]int64{"committed": {2, 0}, "failed": {1, 0}}, got["switchyard.test.flush.duration"])
}
