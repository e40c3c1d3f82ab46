// Package telemetry builds the OpenTelemetry providers that every service
// passes explicitly to its gRPC servers and clients and to its PostgreSQL
// pool. Nothing here sets the otel provider globals, so several services can
// run in one process (switchyard dev) each under its own service name, and
// tests can inject an in-memory exporter.
//
// A process calls Start once: it reads the standard OTEL_* variables (see
// Start), creates the exporters, the process's Prometheus registry and
// /metrics endpoint, and the Go runtime metrics, and installs the one otel
// error handler of the process. Each service in the process then takes its
// Providers from Process.Service. Tests that need no environment use New.
package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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

// Option adjusts the providers New builds.
type Option func(*options)

type options struct {
	readers []sdkmetric.Reader
}

// WithMetricReader gives New's providers a real MeterProvider that r reads
// (a sdkmetric.ManualReader in tests). Without one the Meter is a no-op.
func WithMetricReader(r sdkmetric.Reader) Option {
	return func(o *options) { o.readers = append(o.readers, r) }
}

// New returns providers for one service from explicit parts, reading no
// environment: spans are batched to exp when it is not nil, sampling is
// parent-based always-on (so a caller's decision is kept across hops), and
// metrics go to the WithMetricReader readers. The returned shutdown flushes pending spans and shuts the meter
// provider (and so its readers) down; it does not shut exp down, which may
// be shared by several services. Processes use Start and Process.Service.
func New(serviceName string, exp Exporter, opts ...Option) (Providers, func(context.Context) error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	res := resource.NewSchemaless(builtinAttributes(serviceName)...)
	var processors []sdktrace.SpanProcessor
	if exp != nil {
		processors = append(processors, sdktrace.NewBatchSpanProcessor(unclosable{exp}))
	}
	return newProviders(res, nil, processors, o.readers)
}

// newProviders assembles one service's providers.
func newProviders(res *resource.Resource, sampler sdktrace.Sampler, processors []sdktrace.SpanProcessor, readers []sdkmetric.Reader) (Providers, func(context.Context) error) {
	if sampler == nil {
		sampler = defaultSampler()
	}
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	for _, p := range processors {
		topts = append(topts, sdktrace.WithSpanProcessor(p))
	}
	tp := sdktrace.NewTracerProvider(topts...)
	p := Providers{Tracer: tp, Meter: metricnoop.NewMeterProvider(), Propagator: Propagator()}
	if len(readers) == 0 {
		return p, tp.Shutdown
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	for _, r := range readers {
		mopts = append(mopts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	p.Meter = mp
	return p, Join(tp.Shutdown, mp.Shutdown)
}

// defaultSampler keeps the caller's decision and samples every new trace.
func defaultSampler() sdktrace.Sampler { return sdktrace.ParentBased(sdktrace.AlwaysSample()) }

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
