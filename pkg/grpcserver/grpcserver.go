// Package grpcserver assembles the gRPC server every Switchyard service runs:
// OpenTelemetry stats handler (spans and rpc.server.* metrics, health and
// reflection left out), the go-grpc-middleware v2 interceptor chain (access
// logging with trace ids, at debug for calls that end as expected — see
// accessLogLevel —, panic recovery), transport limits (Limits: connections,
// streams, headers, message sizes, idle and read time, checked before a
// call's body is read), health and server reflection, and graceful
// shutdown. Services only register their handlers.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// Config configures a server. The zero value of every field but Addr,
// Logger and Telemetry is a sensible default.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:50051"; port 0
	// picks a free port (see Server.Addr).
	Addr string
	// Name identifies the server in its own start and stop logs; the
	// Logger should already carry the service's identity.
	Name      string
	Logger    *slog.Logger
	Telemetry telemetry.Providers
	// Limits bounds connections, streams, headers, messages and idle time
	// for every caller; see Limits for the defaults.
	Limits Limits
	// Admit, when set, is asked about every call but health and
	// reflection as soon as its headers arrive, before its body is read:
	// a non-nil error (a gRPC status, e.g. Unauthenticated) refuses the
	// call there. It runs on the connection's reader, so it must be quick
	// and must not block — a token-table lookup (auth.Tokens.Admit), not
	// a database read.
	Admit func(method string, md metadata.MD) error
	// ShutdownGrace is how long in-flight calls may finish after the
	// context is cancelled before they are cut; default 10s. Health and
	// reflection streams do not count: they are ended as soon as the
	// shutdown begins.
	ShutdownGrace time.Duration
	// UnaryInterceptors run after logging and recovery, in order.
	UnaryInterceptors []grpc.UnaryServerInterceptor
	// StreamInterceptors run after logging and recovery, in order.
	StreamInterceptors []grpc.StreamServerInterceptor
	// TLS, when set, serves TLS only (see pkg/tlsconfig for mutual TLS).
	// Without it New refuses an Addr that is not loopback
	// (tlsconfig.IsLoopbackAddr), unless InsecurePlaintext is set.
	TLS *tls.Config
	// InsecurePlaintext allows serving without TLS on an address other
	// machines reach, where bearer tokens (and, from the AccountPool,
	// decrypted API keys) then cross the network in cleartext. It is
	// logged at warn when it takes effect. For a network that is
	// protected otherwise (a service mesh's mTLS, say).
	InsecurePlaintext bool
	// DefaultTimeout bounds calls that arrive without a deadline; zero
	// leaves them unbounded.
	DefaultTimeout time.Duration
	// Watches names the service's open-ended server streams (full method
	// names, "/pkg.Service/Method"): streams that run until the client
	// leaves, such as a live watch. Like health and reflection streams
	// they are ended as soon as the shutdown begins — their context is
	// cancelled and the client gets Unavailable, to reconnect elsewhere
	// — instead of holding the graceful stop for the whole grace.
	Watches []string
}

// PlaintextOffLoopbackError refuses plaintext on an address other machines
// reach: what crosses it (tokens, API keys) must be encrypted.
type PlaintextOffLoopbackError struct{ Addr string }

func (e PlaintextOffLoopbackError) Error() string {
	return fmt.Sprintf("%s is not a loopback address and no TLS is configured: configure TLS (the tls-cert-file, tls-key-file and tls-ca-file settings; "+
		"`switchyard certs` makes a development set) or, on a network protected otherwise, allow plaintext with the insecure-plaintext setting", e.Addr)
}

// Server is a listening gRPC server.
type Server struct {
	cfg    Config
	lis    net.Listener
	conns  *limitListener
	admit  *admission
	grpc   *grpc.Server
	health *health.Server
	infra  *cuttable
}

// cuttable ends health and reflection streams, and the service's watch
// streams, when the server shuts down: they live as long as their clients
// like (a load balancer's health watch, grpcurl's reflection, a
// dashboard's live view) and would otherwise hold GracefulStop until the
// grace runs out, although no work is left.
type cuttable struct {
	ctx     context.Context // done once the server shuts down
	cutAll  context.CancelFunc
	watches map[string]bool
}

func newCuttable(watches []string) *cuttable {
	ctx, cancel := context.WithCancel(context.Background())
	c := &cuttable{ctx: ctx, cutAll: cancel, watches: map[string]bool{}}
	for _, m := range watches {
		c.watches[m] = true
	}
	return c
}

func (c *cuttable) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !isInfrastructure(info.FullMethod) && !c.watches[info.FullMethod] {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(c.ctx, cancel)()
		err := handler(srv, &cutStream{ServerStream: ss, ctx: ctx})
		if c.ctx.Err() != nil && ss.Context().Err() == nil {
			// Cut by the shutdown, whatever the handler made of its
			// cancelled context: the client should reconnect.
			return status.Error(codes.Unavailable, "the server is shutting down")
		}
		return err
	}
}

// cutStream is a stream whose context ends at shutdown and whose RecvMsg
// returns then, even while the client sends nothing.
type cutStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *cutStream) Context() context.Context { return c.ctx }

func (c *cutStream) RecvMsg(m any) error {
	errc := make(chan error, 1)
	go func() { errc <- c.ServerStream.RecvMsg(m) }()
	select {
	case err := <-errc:
		return err
	case <-c.ctx.Done():
		// The receive goroutine ends when the transport closes the stream.
		return status.Error(codes.Unavailable, "the server is shutting down")
	}
}

// New listens on cfg.Addr and builds the server; register adds the
// service's handlers. Health starts NOT_SERVING for the named services until
// SetServing is called, so a load balancer sends no traffic to a service
// whose store is not ready.
func New(cfg Config, register func(grpc.ServiceRegistrar)) (*Server, error) {
	if cfg.Logger == nil {
		return nil, errors.New("grpcserver: Logger is required")
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.TLS == nil && !tlsconfig.IsLoopbackAddr(cfg.Addr) {
		if !cfg.InsecurePlaintext {
			return nil, fmt.Errorf("%s: %w", cfg.Name, PlaintextOffLoopbackError{Addr: cfg.Addr})
		}
		cfg.Logger.Warn("serving gRPC WITHOUT TLS on an address other machines reach: bearer tokens and API keys cross the network in cleartext",
			"server", cfg.Name, "addr", cfg.Addr)
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	tcp, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for %s: %w", cfg.Addr, cfg.Name, err)
	}
	lis := &limitListener{Listener: tcp, max: int64(cfg.Limits.MaxConnections), userTimeout: cfg.Limits.tcpUserTimeout()}
	admit := &admission{max: int64(cfg.Limits.MaxStreams), readTimeout: cfg.Limits.RequestReadTimeout, admit: cfg.Admit}

	logger := cfg.Logger
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithFieldsFromContext(traceFields),
		logging.WithLevels(accessLogLevel),
	}
	// Request and response payloads are never logged: they carry API keys
	// and prompts.
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "recovered from panic in handler", "panic_type", fmt.Sprintf("%T", p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error; the server logged the details")
	})
	srv := &Server{cfg: cfg, lis: lis, conns: lis, admit: admit, infra: newCuttable(cfg.Watches)}
	if err := registerLimitMetrics(cfg.Telemetry.Meter, cfg.Name, lis, admit); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("registering %s's limit metrics: %w", cfg.Name, err)
	}
	unary := append([]grpc.UnaryServerInterceptor{
		admit.unary(),
		logging.UnaryServerInterceptor(slogAdapter(logger), logOpts...),
		recovery.UnaryServerInterceptor(recoverOpt),
		methodSizes(cfg.Limits.MethodMaxRecvMsgSize),
		defaultTimeout(cfg.DefaultTimeout),
	}, cfg.UnaryInterceptors...)
	stream := append([]grpc.StreamServerInterceptor{
		admit.stream(),
		srv.infra.stream(),
		logging.StreamServerInterceptor(slogAdapter(logger), logOpts...),
		recovery.StreamServerInterceptor(recoverOpt),
	}, cfg.StreamInterceptors...)

	opts := []grpc.ServerOption{
		// Spans and rpc.server.* metrics, health and reflection left out.
		grpc.StatsHandler(otelgrpc.NewServerHandler(telemetry.GRPCOptions(cfg.Telemetry)...)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// Stop waits for the handlers it cancels, so Serve returns only
		// once every call has finished its own bookkeeping.
		grpc.WaitForHandlers(true),
	}
	opts = append(opts, cfg.Limits.serverOptions(admit)...)
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	gs := grpc.NewServer(opts...)
	register(gs)

	hs := health.NewServer()
	for name := range gs.GetServiceInfo() {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	srv.grpc, srv.health = gs, hs
	return srv, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// OpenConnections is the number of connections open now (see
// Limits.MaxConnections).
func (s *Server) OpenConnections() int { return int(s.conns.open.Load()) }

// CallsInFlight is the number of calls admitted and not yet ended (see
// Limits.MaxStreams).
func (s *Server) CallsInFlight() int { return int(s.admit.inFlight.Load()) }

// SetServing marks every registered service (and the server as a whole)
// SERVING or NOT_SERVING on the health service.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for name := range s.grpc.GetServiceInfo() {
		if name == healthpb.Health_ServiceDesc.ServiceName {
			continue
		}
		s.health.SetServingStatus(name, st)
	}
	s.health.SetServingStatus("", st)
}

// Serve serves until ctx is cancelled, then stops gracefully: health turns
// NOT_SERVING, new calls are refused, health and reflection streams end,
// in-flight calls get ShutdownGrace to finish, and calls still running
// then are cancelled (Serve waits for their handlers to return). It
// returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	s.cfg.Logger.Info("serving gRPC", "server", s.cfg.Name, "addr", s.Addr().String(), "limits", s.cfg.Limits.String())

	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", s.cfg.Name, err)
	case <-ctx.Done():
	}
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	s.infra.cutAll()
	grace := time.NewTimer(s.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		s.cfg.Logger.Warn("graceful stop timed out; cancelling the calls still running", "server", s.cfg.Name, "grace", s.cfg.ShutdownGrace)
		s.grpc.Stop()
		<-stopped
	}
	<-errc
	return nil
}

// defaultTimeout gives calls without a deadline one, so a stuck dependency
// cannot hold a handler forever.
func defaultTimeout(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if _, ok := ctx.Deadline(); ok || d <= 0 {
			return handler(ctx, req)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return handler(ctx, req)
	}
}

// accessLogLevel is the level of a call's "finished call" line. Calls that
// end as the API promises — OK, and the answers about the request or the
// state it met (InvalidArgument, NotFound, AlreadyExists,
// FailedPrecondition, Aborted, OutOfRange, ResourceExhausted, Canceled) —
// log at debug: the rpc.server.call.duration metric counts them by code, and
// an info-level log has no line per call. A caller refused for its token or
// its organization (Unauthenticated, PermissionDenied) logs at info, being
// rare and worth seeing; a dependency that is down or slow
// (Unavailable, DeadlineExceeded) or a method that does not exist
// (Unimplemented) at warn; a bug (Unknown, Internal, DataLoss) at error.
func accessLogLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.FailedPrecondition, codes.Aborted, codes.OutOfRange, codes.ResourceExhausted:
		return logging.LevelDebug
	case codes.Unauthenticated, codes.PermissionDenied:
		return logging.LevelInfo
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unimplemented:
		return logging.LevelWarn
	default:
		return logging.LevelError
	}
}

func traceFields(ctx context.Context) logging.Fields {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return logging.Fields{"trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String()}
}

// slogAdapter lets go-grpc-middleware log through slog.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
