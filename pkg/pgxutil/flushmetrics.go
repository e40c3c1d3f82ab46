package pgxutil

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// FlushMetrics are a group commit's instruments: how long each flush took
// and how many items (rows, writes) it carried, both by
// switchyard.outcome (committed, failed).
type FlushMetrics struct {
	duration metric.Float64Histogram
	items    metric.Int64Histogram
}

// FlushMetricNames names a group commit's instruments: Prefix.duration
// (seconds) and Prefix.Items (counted in Unit), with their descriptions.
type FlushMetricNames struct {
	// Scope is the meter's instrumentation scope: the store's package.
	Scope  string
	Prefix string // e.g. switchyard.ledger.flush
	// What the duration measures, e.g. "one usage-ledger group commit".
	What string
	// Items is the second instrument's last name part (rows, writes),
	// Unit its unit ({row}), ItemsDescription its description.
	Items, Unit, ItemsDescription string
}

// NewFlushMetrics creates the instruments on mp (no-ops when mp is nil or
// a constructor fails, which only invalid names make it do).
func NewFlushMetrics(mp metric.MeterProvider, n FlushMetricNames) FlushMetrics {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(n.Scope)
	d, err := m.Float64Histogram(n.Prefix+".duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of "+n.What+", by outcome (committed, failed)."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 10))
	if err != nil {
		d = metricnoop.Float64Histogram{}
	}
	r, err := m.Int64Histogram(n.Prefix+"."+n.Items, metric.WithUnit(n.Unit),
		metric.WithDescription(n.ItemsDescription),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256))
	if err != nil {
		r = metricnoop.Int64Histogram{}
	}
	return FlushMetrics{duration: d, items: r}
}

// Observe records one flush that began at start and carried items; err
// is its failure, if any.
func (m FlushMetrics) Observe(ctx context.Context, start time.Time, items int, err error) {
	outcome := attribute.String("switchyard.outcome", "committed")
	if err != nil {
		outcome = attribute.String("switchyard.outcome", "failed")
	}
	m.duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(outcome))
	m.items.Record(ctx, int64(items), metric.WithAttributes(outcome))
}
