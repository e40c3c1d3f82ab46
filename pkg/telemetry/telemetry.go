// Package telemetry builds the OpenTelemetry providers that every service
// passes explicitly to its gRPC servers and clients. Nothing here touches
// the otel globals, so several services can run in one process (switchyard
// dev) each under its own service name, and tests can inject an in-memory
// exporter.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Providers are the telemetry handles one service uses.
type Providers struct {
	Tracer     trace.TracerProvider
	Meter      metric.MeterProvider
	Propagator propagation.TextMapPropagator
}

// Propagator is the propagator every hop uses: W3C trace context and baggage.
// It is set explicitly on every server and client rather than read from the
// otel globals, so a missing global setup can never silently break a trace.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Exporter is where finished spans go. Nil exports nothing (spans are still
// created, so trace ids reach logs and downstream services).
type Exporter = sdktrace.SpanExporter

// ExporterFromEnv returns an OTLP/gRPC exporter when
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set,
// configured by the standard OTEL_EXPORTER_OTLP_* variables, and nil
// otherwise.
func ExporterFromEnv(ctx context.Context) (Exporter, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating OTLP trace exporter: %w", err)
	}
	return exp, nil
}

// New returns providers for one service. Spans are batched to exp when it
// is not nil; sampling is parent-based, so a caller's decision is kept
// across hops. The returned shutdown flushes pending spans; it does not shut
// the exporter down, which may be shared by several services.
func New(serviceName string, exp Exporter) (Providers, func(context.Context) error) {
	res := resource.NewSchemaless(semconv.ServiceName(serviceName))
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	}
	if exp != nil {
		opts = append(opts, sdktrace.WithSpanProcessor(sdktrace.NewBatchSpanProcessor(unclosable{exp})))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	p := Providers{Tracer: tp, Meter: metricnoop.NewMeterProvider(), Propagator: Propagator()}
	return p, tp.Shutdown
}

// ShutdownExporter flushes and closes a shared exporter after every
// service using it has shut down.
func ShutdownExporter(ctx context.Context, exp Exporter) error {
	if exp == nil {
		return nil
	}
	return exp.Shutdown(ctx)
}

// unclosable keeps a tracer provider's shutdown from closing a shared
// exporter.
type unclosable struct{ sdktrace.SpanExporter }

func (unclosable) Shutdown(context.Context) error { return nil }

// Join runs every shutdown function and joins their errors.
func Join(fns ...func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		var errs []error
		for _, fn := range fns {
			errs = append(errs, fn(ctx))
		}
		return errors.Join(errs...)
	}
}
