package telemetry_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

func TestExporterOnlyWhenConfigured(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	exp, err := telemetry.ExporterFromEnv(context.Background())
	require.NoError(t, err)
	require.Nil(t, exp, "no endpoint, no exporter")

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	exp, err = telemetry.ExporterFromEnv(context.Background())
	require.NoError(t, err)
	require.NotNil(t, exp, "an endpoint turns OTLP export on")
	require.NoError(t, exp.Shutdown(context.Background()))
}

func TestProvidersShareAnExporterWithoutClosingIt(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	a, shutdownA := telemetry.New("svc-a", exp)
	b, shutdownB := telemetry.New("svc-b", exp)
	_, span := a.Tracer.Tracer("t").Start(context.Background(), "from-a")
	span.End()
	require.NoError(t, shutdownA(context.Background()))

	_, span = b.Tracer.Tracer("t").Start(context.Background(), "from-b")
	span.End()
	require.NoError(t, shutdownB(context.Background()))

	names := map[string]string{}
	for _, s := range exp.GetSpans() {
		svc, _ := s.Resource.Set().Value("service.name")
		names[s.Name] = svc.AsString()
	}
	require.Equal(t, map[string]string{"from-a": "svc-a", "from-b": "svc-b"}, names,
		"each service names itself, and one shutting down does not close the shared exporter")
}
