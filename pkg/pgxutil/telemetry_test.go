package pgxutil_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

func TestWithTelemetryTracesQueriesWithoutParametersAndReportsThePool(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.All()...)
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	tel, shutdown := telemetry.New("svc", spans, telemetry.WithMetricReader(reader))
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	ctx := context.Background()
	pool, err := pgxutil.Connect(ctx, schema.AppURL, "pgxutil-telemetry-test", pgxutil.WithTelemetry(tel))
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	const org = "org-with-a-secret-looking-id"
	require.NoError(t, pgxutil.InTenantTx(ctx, pool, org, func(tx pgx.Tx) error { return insertActivity(ctx, tx, org) }),
		"outside a traced call: no span")
	callCtx, call := tel.Tracer.Tracer("test").Start(ctx, "call")
	require.NoError(t, pgxutil.InTenantTx(callCtx, pool, org, func(tx pgx.Tx) error {
		n, err := countActivities(callCtx, tx)
		require.Equal(t, 1, n)
		return err
	}))
	call.End()
	require.NoError(t, tel.Tracer.(*sdktrace.TracerProvider).ForceFlush(ctx))

	var queries []string
	for _, s := range spans.GetSpans() {
		if s.Name == "call" {
			continue
		}
		require.Equal(t, call.SpanContext().TraceID(), s.SpanContext.TraceID(), "%s: a child of the call", s.Name)
		for _, kv := range s.Attributes {
			require.NotContains(t, kv.Value.String(), org, "%s: no query parameter in any attribute", s.Name)
			if kv.Key == "db.query.text" {
				queries = append(queries, kv.Value.AsString())
			}
		}
	}
	require.NotEmpty(t, queries)
	joined := strings.Join(queries, "\n")
	require.Contains(t, joined, "set_config", "the tenant setting is traced, its value is not")
	require.Contains(t, joined, "SELECT count(*) FROM activities")
	require.NotContains(t, joined, "INSERT", "the untraced insert made no span")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	got := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = true
			if m.Name == "pgxpool.acquires" {
				dp := m.Data.(metricdata.Sum[int64]).DataPoints[0]
				require.GreaterOrEqual(t, dp.Value, int64(2))
				name, _ := dp.Attributes.Value("db.client.connection.pool.name")
				require.Equal(t, "pgxutil-telemetry-test", name.AsString())
			}
		}
	}
	for _, name := range []string{"pgxpool.acquires", "pgxpool.acquire_duration", "pgxpool.acquired_connections", "pgxpool.idle_connections",
		"pgxpool.total_connections", "pgxpool.max_connections", "pgxpool.empty_acquire", "db.client.operation.duration"} {
		require.True(t, got[name], "metric %s", name)
	}
}
