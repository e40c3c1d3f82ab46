package telemetry

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// GRPCOptions are the otelgrpc options of every server and client
// (pkg/grpcserver, pkg/grpcclient): p's providers, never the otel globals
// (a nil one is a no-op), and no span and no RPC metric for the
// infrastructure services, grpc.health.v1.Health (a load balancer's probes)
// and grpc.reflection.* (grpcurl), which would drown the real calls.
func GRPCOptions(p Providers) []otelgrpc.Option {
	tp, mp, prop := p.Tracer, p.Meter, p.Propagator
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	if prop == nil {
		prop = Propagator()
	}
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithMeterProvider(mp),
		otelgrpc.WithPropagators(prop),
		otelgrpc.WithFilter(filters.None(filters.HealthCheck(), filters.ServicePrefix("grpc.reflection."))),
	}
}
