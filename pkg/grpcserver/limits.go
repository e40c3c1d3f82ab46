package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Limits bounds what any caller — authenticated or not — can make a server
// hold: connections, streams, header bytes, message bytes and time. They
// are enforced by the transport, before a handler runs and before the
// request body is read, so the memory an attacker can pin is at most about
// MaxStreams × (a stream's cost, ~15 KiB, + MaxHeaderListSize), whatever
// it sends, and is released when its connections close. The zero value of
// every field is the default its comment names; a negative value turns a
// time limit off.
type Limits struct {
	// MaxConnections caps open connections; past it a new connection is
	// accepted and closed at once, so the client fails fast and tries
	// another replica instead of waiting in the accept queue. Default:
	// DefaultMaxConnections().
	MaxConnections int
	// MaxConcurrentStreams caps the calls in flight on one connection
	// (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); default 128.
	MaxConcurrentStreams uint32
	// MaxStreams caps the calls in flight on the whole server; a call past
	// it is refused with ResourceExhausted before its body is read. A
	// call's slot is released when its stream is done: when it ends, or
	// as soon as the client cancels or the connection drops, which can be
	// shortly before its handler returns. It bounds the streams the
	// transport holds, not handler goroutines (handlers honour their
	// context). Default 8192.
	MaxStreams int
	// MaxHeaderListSize caps a call's header block (HTTP/2
	// SETTINGS_MAX_HEADER_LIST_SIZE): a bearer token, trace context and
	// the organization header need well under 1 KiB. Default 16 KiB.
	MaxHeaderListSize uint32
	// HandshakeTimeout bounds a new connection's TLS and HTTP/2 handshake
	// (preface and first SETTINGS); default 10s.
	HandshakeTimeout time.Duration
	// MaxConnectionIdle closes a connection (with GOAWAY: clients
	// reconnect transparently) after this long without calls; default
	// 5m.
	MaxConnectionIdle time.Duration
	// RequestReadTimeout bounds the time from a call's headers to the end
	// of its request message for unary calls (streams are bounded by
	// their handlers); a call that sends its body slower is ended with
	// DeadlineExceeded. Default 30s.
	RequestReadTimeout time.Duration
	// KeepaliveTime is how long the server waits on a silent connection
	// before pinging it, and KeepaliveTimeout how long it then waits for
	// the ack before closing it; defaults 2m and 20s. They find dead
	// peers that hold calls open.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxRecvMsgSize bounds a request message; default 4 MiB.
	MaxRecvMsgSize int
	// MethodMaxRecvMsgSize bounds the request of the named methods
	// ("/pkg.Service/Method") below MaxRecvMsgSize: a call over it is
	// refused with ResourceExhausted before the handler runs.
	MethodMaxRecvMsgSize map[string]int
}

// Default limits; see Limits.
const (
	DefaultMaxConcurrentStreams = 128
	DefaultMaxStreams           = 8192
	DefaultMaxHeaderListSize    = 16 << 10
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultMaxConnectionIdle    = 5 * time.Minute
	DefaultRequestReadTimeout   = 30 * time.Second
	DefaultKeepaliveTime        = 2 * time.Minute
	DefaultKeepaliveTimeout     = 20 * time.Second
	DefaultMaxRecvMsgSize       = 4 << 20
	// maxDefaultConnections is DefaultMaxConnections' ceiling.
	maxDefaultConnections = 4096
)

// DefaultMaxConnections is half the process's open-file limit, at most
// 4096 and at least 64: the other half stays for the database, Redis, the
// upstream and the other services, so a flood of connections cannot take
// the descriptors the service needs to answer.
func DefaultMaxConnections() int {
	n, ok := openFileLimit()
	if !ok {
		return maxDefaultConnections
	}
	return int(min(max(n/2, 64), maxDefaultConnections))
}

// withDefaults fills in the zero fields.
func (l Limits) withDefaults() Limits {
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConnections()
	}
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if l.MaxStreams == 0 {
		l.MaxStreams = DefaultMaxStreams
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&l.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&l.MaxConnectionIdle, DefaultMaxConnectionIdle)
	def(&l.RequestReadTimeout, DefaultRequestReadTimeout)
	def(&l.KeepaliveTime, DefaultKeepaliveTime)
	def(&l.KeepaliveTimeout, DefaultKeepaliveTimeout)
	if l.MaxRecvMsgSize == 0 {
		l.MaxRecvMsgSize = DefaultMaxRecvMsgSize
	}
	return l
}

// serverOptions are the grpc-go options that enforce l.
func (l Limits) serverOptions(admit *admission) []grpc.ServerOption {
	// grpc-go's "infinity" for the keepalive parameters it takes.
	off := func(d time.Duration) time.Duration {
		if d < 0 {
			return time.Duration(1<<63 - 1)
		}
		return d
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(l.MaxHeaderListSize),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: off(l.MaxConnectionIdle),
			Time:              off(l.KeepaliveTime),
			Timeout:           off(l.KeepaliveTimeout),
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.InTapHandle(admit.tap),
	}
	if l.HandshakeTimeout > 0 {
		//nolint:staticcheck // ConnectionTimeout is the only handshake bound grpc-go offers; it is deprecated as experimental, not replaced.
		opts = append(opts, grpc.ConnectionTimeout(l.HandshakeTimeout))
	}
	return opts
}

// admission runs in grpc-go's tap, when a call's headers have arrived and
// before its body is read or a handler goroutine does any work: it counts
// the call against MaxStreams, starts its request-read clock, and asks the
// service's Admit (its token check) whether the caller may send a body at
// all.
type admission struct {
	max         int64
	inFlight    atomic.Int64
	refused     atomic.Int64
	readTimeout time.Duration
	admit       func(method string, md metadata.MD) error
}

// readDeadlineKey carries a unary call's request-read timer to the
// interceptor that stops it once the request is in.
type readDeadlineKey struct{}

func (a *admission) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if a.admit != nil && !isInfrastructure(info.FullMethodName) {
		if err := a.admit(info.FullMethodName, info.Header); err != nil {
			return nil, err
		}
	}
	if a.inFlight.Add(1) > a.max {
		a.inFlight.Add(-1)
		a.refused.Add(1)
		return nil, status.Errorf(codes.ResourceExhausted, "the server has %d calls in flight, its limit; retry shortly or on another replica", a.max)
	}
	if a.readTimeout <= 0 {
		// The transport cancels the stream's context when the call ends,
		// however it ends (or earlier, on a client's cancel or a dropped
		// connection); the slot is released then.
		context.AfterFunc(ctx, func() { a.inFlight.Add(-1) })
		return ctx, nil
	}
	cctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(a.readTimeout, func() { cancel(errRequestReadTimeout) })
	context.AfterFunc(cctx, func() {
		timer.Stop()
		a.inFlight.Add(-1)
	})
	return context.WithValue(readTimeoutContext{cctx}, readDeadlineKey{}, timer), nil
}

// errRequestReadTimeout is the cause of a call cancelled by its
// request-read timer.
var errRequestReadTimeout = errors.New("grpcserver: the request was not received within the request-read timeout")

// readTimeoutContext reports a context cancelled by the request-read timer
// as context.DeadlineExceeded, which grpc-go sends as DEADLINE_EXCEEDED:
// a plain cancel would reach the client as CANCELLED, which reads as the
// client's own doing. A real deadline cannot serve, because the timer
// stops once the request is in and a deadline cannot be lifted.
type readTimeoutContext struct{ context.Context }

func (c readTimeoutContext) Err() error {
	if err := c.Context.Err(); err == nil || context.Cause(c.Context) != errRequestReadTimeout {
		return err
	}
	return context.DeadlineExceeded
}

// requestReceived stops a unary call's request-read timer: its interceptor
// runs only once the whole request is decoded. Stream handlers read their
// requests themselves, under their own context, so the timer is stopped as
// they start.
func requestReceived(ctx context.Context) {
	if t, ok := ctx.Value(readDeadlineKey{}).(*time.Timer); ok {
		t.Stop()
	}
}

func (a *admission) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		requestReceived(ctx)
		return handler(ctx, req)
	}
}

func (a *admission) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		requestReceived(ss.Context())
		return handler(srv, ss)
	}
}

// methodSizes refuses requests over their method's own size limit.
func methodSizes(limits map[string]int) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if n, ok := limits[info.FullMethod]; ok {
			if m, isProto := req.(proto.Message); isProto {
				if size := proto.Size(m); size > n {
					return nil, status.Errorf(codes.ResourceExhausted, "the request is %d bytes; %s accepts at most %d", size, info.FullMethod, n)
				}
			}
		}
		return handler(ctx, req)
	}
}

// limitListener accepts at most max connections at once and closes the
// ones past it as soon as they are accepted. It sets TCP_USER_TIMEOUT to
// userTimeout (when positive) on each connection it hands out, which
// grpc-go cannot do through the wrapper.
type limitListener struct {
	net.Listener
	max         int64
	userTimeout time.Duration
	open        atomic.Int64
	refused     atomic.Int64
}

// tcpUserTimeout is the TCP_USER_TIMEOUT grpc-go would set for l: the
// keepalive timeout, when keepalive pings are on.
func (l Limits) tcpUserTimeout() time.Duration {
	if l.KeepaliveTime <= 0 || l.KeepaliveTimeout <= 0 {
		return 0
	}
	return l.KeepaliveTimeout
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refused.Add(1)
			_ = c.Close()
			continue
		}
		if l.userTimeout > 0 {
			setTCPUserTimeout(c, l.userTimeout)
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

type countedConn struct {
	net.Conn
	l      *limitListener
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}

// String describes the limits for the start-up log.
func (l Limits) String() string {
	return fmt.Sprintf("connections=%d streams_per_connection=%d streams=%d header_bytes=%d handshake=%s idle=%s request_read=%s recv_msg_bytes=%d",
		l.MaxConnections, l.MaxConcurrentStreams, l.MaxStreams, l.MaxHeaderListSize, l.HandshakeTimeout, l.MaxConnectionIdle, l.RequestReadTimeout, l.MaxRecvMsgSize)
}

// registerLimitMetrics reports the connections and calls the limits hold,
// and how many they refused, so an operator sees a limit being reached
// before callers report it.
func registerLimitMetrics(mp metric.MeterProvider, name string, conns *limitListener, admit *admission) error {
	if mp == nil {
		return nil
	}
	m := mp.Meter("github.com/switchyard-dev/switchyard/pkg/grpcserver")
	open, err1 := m.Int64ObservableGauge("switchyard.grpc.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Open gRPC connections, by server."))
	connRefused, err2 := m.Int64ObservableCounter("switchyard.grpc.connections.refused", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections closed at once because the server was at its connection limit, by server."))
	calls, err3 := m.Int64ObservableGauge("switchyard.grpc.calls", metric.WithUnit("{call}"),
		metric.WithDescription("gRPC calls in flight, by server."))
	callRefused, err4 := m.Int64ObservableCounter("switchyard.grpc.calls.refused", metric.WithUnit("{call}"),
		metric.WithDescription("Calls refused with ResourceExhausted because the server was at its in-flight limit, by server."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	set := metric.WithAttributes(attribute.String("switchyard.server", name))
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(open, conns.open.Load(), set)
		o.ObserveInt64(connRefused, conns.refused.Load(), set)
		o.ObserveInt64(calls, admit.inFlight.Load(), set)
		o.ObserveInt64(callRefused, admit.refused.Load(), set)
		return nil
	}, open, connRefused, calls, callRefused)
	return err
}

// MethodLimits gives every unary method of desc the request size limit n,
// for Limits.MethodMaxRecvMsgSize: a service none of whose requests
// carries a prompt bounds them all well below the server's message limit.
func MethodLimits(desc grpc.ServiceDesc, n int) map[string]int {
	m := make(map[string]int, len(desc.Methods))
	for _, md := range desc.Methods {
		m["/"+desc.ServiceName+"/"+md.MethodName] = n
	}
	return m
}
