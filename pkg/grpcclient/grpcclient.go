// Package grpcclient dials the connections services use to call each other,
// with the OpenTelemetry stats handler and the W3C propagator set
// explicitly, so one trace spans every hop.
package grpcclient

import (
	"crypto/tls"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// Config configures a client connection.
type Config struct {
	// Target is a gRPC target such as "127.0.0.1:50052" or "dns:///accountpool:50052".
	Target    string
	Telemetry telemetry.Providers
	// UnaryInterceptors run in order on every call.
	UnaryInterceptors []grpc.UnaryClientInterceptor
	// TLS, when set, connects with TLS (see pkg/tlsconfig for mutual TLS);
	// otherwise the connection is plaintext.
	TLS *tls.Config
	// Credentials, when set, are sent with every call (a bearer token).
	Credentials credentials.PerRPCCredentials
}

// Dial creates a lazily connecting client connection.
func Dial(cfg Config) (*grpc.ClientConn, error) {
	var otelOpts []otelgrpc.Option
	if cfg.Telemetry.Tracer != nil {
		otelOpts = append(otelOpts,
			otelgrpc.WithTracerProvider(cfg.Telemetry.Tracer),
			otelgrpc.WithMeterProvider(cfg.Telemetry.Meter),
			otelgrpc.WithPropagators(cfg.Telemetry.Propagator))
	}
	transport := insecure.NewCredentials()
	if cfg.TLS != nil {
		transport = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelOpts...)),
		grpc.WithChainUnaryInterceptor(cfg.UnaryInterceptors...),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.Credentials != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(cfg.Credentials))
	}
	conn, err := grpc.NewClient(cfg.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating gRPC client for %s: %w", cfg.Target, err)
	}
	return conn, nil
}
