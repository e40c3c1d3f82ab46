// Package grpcclient dials the connections services use to call each other,
// with the OpenTelemetry stats handler and the W3C propagator set
// explicitly, so one trace spans every hop.
//
// A connection may reach several replicas of a service: its target is one
// host:port, a comma-separated list of them, or a dns:/// name (see
// CheckTarget), and every connection balances its calls over the replicas
// it reaches with gRPC's round_robin policy. round_robin keeps a
// subchannel to every replica and picks only among the ready ones, so a
// replica that is down gets no new calls once its connection has failed.
//
// A call that fails on a replica that went away is retried on another one
// in two cases only. gRPC retries transparently, for every method, a call
// that never reached a server (the connection was already closing, or the
// server refused the stream unprocessed). And a method named in
// Config.RetryUnavailable is retried on UNAVAILABLE, also when the server
// had it (the connection broke mid-call, or the replica answered
// UNAVAILABLE); each retry is a new round_robin pick, so it goes to the
// next ready replica. Anything else fails with the first attempt's error:
// name only idempotent methods.
package grpcclient

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// Config configures a client connection.
type Config struct {
	// Target is the server or servers to call: "127.0.0.1:50052", a
	// comma-separated list "10.0.0.1:50052,10.0.0.2:50052", or
	// "dns:///accountpool:50052" (see CheckTarget). Calls are balanced over
	// every server it reaches (round_robin).
	Target    string
	Telemetry telemetry.Providers
	// UnaryInterceptors run in order on every call.
	UnaryInterceptors []grpc.UnaryClientInterceptor
	// TLS, when set, connects with TLS (see pkg/tlsconfig for mutual TLS);
	// otherwise the connection is plaintext, which Dial refuses for a
	// target that is not loopback (see PlaintextOffLoopback) unless
	// InsecurePlaintext is set.
	TLS *tls.Config
	// InsecurePlaintext allows a plaintext connection to servers on other
	// machines: bearer tokens and API keys then cross the network in
	// cleartext. The caller should log that it is set.
	InsecurePlaintext bool
	// Credentials, when set, are sent with every call (a bearer token).
	Credentials credentials.PerRPCCredentials
	// RetryUnavailable lists full method names ("/pkg.Service/Method") that
	// gRPC retries on UNAVAILABLE (up to 4 attempts, 100ms to 1s backoff),
	// each attempt on the next ready server of Target. Name only idempotent
	// methods: a retried call may have taken effect (the first server may
	// have committed it and died before answering).
	RetryUnavailable []string
}

// reconnectParams is how a connection comes back after its peer was down.
// gRPC's default backoff grows to two minutes, so a peer restarted after a
// 30 s outage was used again only after a further 13 s; between services on
// one network a reconnect attempt is cheap, so attempts are at most a
// second apart and a restarted service is used again within about a second.
func reconnectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  100 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   time.Second,
		},
		MinConnectTimeout: 5 * time.Second,
	}
}

// PlaintextOffLoopback reports whether a plaintext connection to target
// would leave this machine: a target CheckTarget refuses counts as leaving.
func PlaintextOffLoopback(target string) bool {
	tgt, err := parseTarget(target)
	return err != nil || !tgt.loopback()
}

// Dial creates a lazily connecting client connection. It fails at once
// when cfg.Target is not a target CheckTarget accepts.
func Dial(cfg Config) (*grpc.ClientConn, error) {
	tgt, err := parseTarget(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("grpcclient: target: %w", err)
	}
	if cfg.TLS == nil && !cfg.InsecurePlaintext && !tgt.loopback() {
		return nil, fmt.Errorf("grpcclient: %s reaches beyond this machine and no TLS is configured: configure TLS (the tls-cert-file, tls-key-file and tls-ca-file settings; "+
			"`switchyard certs` makes a development set) or, on a network protected otherwise, allow plaintext with the insecure-plaintext setting", cfg.Target)
	}
	sc, err := serviceConfig(cfg.RetryUnavailable)
	if err != nil {
		return nil, err
	}
	transport := insecure.NewCredentials()
	if cfg.TLS != nil {
		transport = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		// Spans and rpc.client.* metrics, health and reflection left out.
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(telemetry.GRPCOptions(cfg.Telemetry)...)),
		grpc.WithChainUnaryInterceptor(cfg.UnaryInterceptors...),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(reconnectParams()),
		// The service config is this package's alone: one a DNS TXT
		// record carried could change the balancing or the retries.
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithDisableServiceConfig(),
	}
	if cfg.Credentials != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(cfg.Credentials))
	}
	if tgt.list != nil {
		opts = append(opts, grpc.WithResolvers(newListResolver(tgt.list)))
	}
	conn, err := grpc.NewClient(tgt.dial, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating gRPC client for %s: %w", cfg.Target, err)
	}
	return conn, nil
}

// serviceConfig is the gRPC service config of every connection: the
// round_robin balancer, and a retry policy on UNAVAILABLE for the methods.
func serviceConfig(methods []string) (string, error) {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	names := make([]name, 0, len(methods))
	for _, m := range methods {
		svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
		if !ok || svc == "" || method == "" {
			return "", fmt.Errorf("grpcclient: %q is not a full method name (/pkg.Service/Method)", m)
		}
		names = append(names, name{Service: svc, Method: method})
	}
	sc := map[string]any{"loadBalancingConfig": []any{map[string]any{"round_robin": map[string]any{}}}}
	if len(names) > 0 {
		sc["methodConfig"] = []any{map[string]any{
			"name": names,
			"retryPolicy": map[string]any{
				"maxAttempts":          4,
				"initialBackoff":       "0.1s",
				"maxBackoff":           "1s",
				"backoffMultiplier":    2,
				"retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}}
	}
	b, err := json.Marshal(sc)
	return string(b), err
}
