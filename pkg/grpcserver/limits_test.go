package grpcserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
)

const checkMethod = "/grpc.health.v1.Health/Check"

// startLimited serves a bare server (health and reflection only) with the
// given limits and admission check until the test ends.
func startLimited(t *testing.T, limits grpcserver.Limits, admit func(string, metadata.MD) error) *grpcserver.Server {
	t.Helper()
	srv, err := grpcserver.New(grpcserver.Config{
		Addr: "127.0.0.1:0", Name: "limits", Logger: slog.New(slog.DiscardHandler),
		Limits: limits, Admit: admit, ShutdownGrace: time.Second,
	}, func(grpc.ServiceRegistrar) {})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	srv.SetServing(true)
	return srv
}

func dialTest(t *testing.T, srv *grpcserver.Server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// stalledCall opens a call to a unary method and sends its headers but
// never its request: what an attacker does to pin a server's memory.
func stalledCall(ctx context.Context, conn *grpc.ClientConn) (grpc.ClientStream, error) {
	return conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, checkMethod)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// The stalled-streams attack, bounded: calls past MaxStreams are refused
// before their body is read, and once the attacker leaves, the server is
// back to its baseline goroutines and heap.
func TestStalledCallsPastTheCapAreRefusedAndMemoryReturnsToBaseline(t *testing.T) {
	const maxCalls, perConn, conns = 200, 100, 3
	srv := startLimited(t, grpcserver.Limits{MaxStreams: maxCalls, MaxConcurrentStreams: perConn, RequestReadTimeout: -1}, nil)
	// A first call warms up the server's pools, so the baseline is fair.
	warm := dialTest(t, srv)
	_, err := healthpb.NewHealthClient(warm).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.NoError(t, warm.Close())
	require.Eventually(t, func() bool { return srv.OpenConnections() == 0 }, 5*time.Second, 10*time.Millisecond)
	baseGoroutines, baseHeap := runtime.NumGoroutine(), heapInUse()

	attack, stop := context.WithCancel(context.Background())
	var (
		refused atomic.Int64
		wg      sync.WaitGroup
		clients []*grpc.ClientConn
	)
	for range conns {
		conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		clients = append(clients, conn)
		for range perConn {
			s, err := stalledCall(attack, conn)
			require.NoError(t, err)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var resp healthpb.HealthCheckResponse
				if err := s.RecvMsg(&resp); status.Code(err) == codes.ResourceExhausted {
					refused.Add(1)
				}
			}()
		}
	}
	require.Eventually(t, func() bool { return refused.Load() == conns*perConn-maxCalls },
		10*time.Second, 10*time.Millisecond, "the calls past the cap are refused")
	require.Equal(t, maxCalls, srv.CallsInFlight(), "the calls within the cap are held, no more")

	// A legitimate caller meets the cap too, with a code that says so.
	legit := dialTest(t, srv)
	_, err = healthpb.NewHealthClient(legit).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.NoError(t, legit.Close())

	stop()
	wg.Wait()
	for _, c := range clients {
		require.NoError(t, c.Close())
	}
	require.Eventually(t, func() bool { return srv.CallsInFlight() == 0 && srv.OpenConnections() == 0 },
		10*time.Second, 10*time.Millisecond, "every slot is released when the attacker leaves")
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseGoroutines+5 },
		10*time.Second, 20*time.Millisecond, "goroutines back to the baseline of %d", baseGoroutines)
	// The heap is back within a megabyte of where it was (300 stalled
	// calls held several).
	require.Eventually(t, func() bool { return heapInUse() <= baseHeap+1<<20 },
		10*time.Second, 50*time.Millisecond, "heap back to the baseline of %d bytes", baseHeap)

	// And the server serves again.
	_, err = healthpb.NewHealthClient(dialTest(t, srv)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
}

// A call whose request never arrives is cancelled after RequestReadTimeout
// and gives its slot back.
func TestStalledUnaryCallIsCancelledAfterTheReadTimeout(t *testing.T) {
	srv := startLimited(t, grpcserver.Limits{RequestReadTimeout: 200 * time.Millisecond}, nil)
	s, err := stalledCall(context.Background(), dialTest(t, srv))
	require.NoError(t, err)
	var resp healthpb.HealthCheckResponse
	err = s.RecvMsg(&resp)
	require.Error(t, err)
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "the server's timeout, not the client's cancel: %v", err)
	require.Eventually(t, func() bool { return srv.CallsInFlight() == 0 }, 5*time.Second, 10*time.Millisecond)
}

// rawConn is a TCP connection to srv that speaks HTTP/2 frames directly,
// as an attacker would, ignoring what the server asks of it.
func rawConn(t *testing.T, srv *grpcserver.Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedByServer reads until the server closes c, failing after limit.
func closedByServer(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(limit)))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s", limit)
	}
}

// 1,100 connections that sent only the preface once took every file
// descriptor: now each is closed when its handshake time runs out.
func TestPrefaceOnlyConnectionsAreClosedAfterTheHandshakeTimeout(t *testing.T) {
	srv := startLimited(t, grpcserver.Limits{HandshakeTimeout: 200 * time.Millisecond}, nil)
	var conns []net.Conn
	for range 20 {
		c := rawConn(t, srv)
		_, err := io.WriteString(c, http2.ClientPreface)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	for _, c := range conns {
		closedByServer(t, c, 10*time.Second)
	}
	require.Eventually(t, func() bool { return srv.OpenConnections() == 0 }, 5*time.Second, 10*time.Millisecond)
}

// A connection that completed its handshake but makes no calls is closed
// (with GOAWAY) after MaxConnectionIdle.
func TestIdleConnectionsAreClosed(t *testing.T) {
	srv := startLimited(t, grpcserver.Limits{MaxConnectionIdle: 200 * time.Millisecond}, nil)
	c := rawConn(t, srv)
	_, err := io.WriteString(c, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(c, c)
	require.NoError(t, fr.WriteSettings())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	sawGoAway := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the idle connection was kept open")
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				require.NoError(t, fr.WriteSettingsAck())
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				require.NoError(t, fr.WritePing(true, f.Data))
			}
		case *http2.GoAwayFrame:
			sawGoAway = true
		}
	}
	require.True(t, sawGoAway, "the server says why it closes")
}

// Past MaxConnections a new connection is closed at once; a slot freed is
// usable again.
func TestConnectionsPastTheCapAreClosed(t *testing.T) {
	srv := startLimited(t, grpcserver.Limits{MaxConnections: 2}, nil)
	a, b := rawConn(t, srv), rawConn(t, srv)
	require.Eventually(t, func() bool { return srv.OpenConnections() == 2 }, 5*time.Second, 10*time.Millisecond)
	closedByServer(t, rawConn(t, srv), 5*time.Second)
	require.NoError(t, a.Close())
	require.Eventually(t, func() bool { return srv.OpenConnections() == 1 }, 5*time.Second, 10*time.Millisecond)
	_, err := healthpb.NewHealthClient(dialTest(t, srv)).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_ = b
}

// Headers larger than MaxHeaderListSize are refused by the transport: the
// admission check (the token lookup) never sees them.
func TestOversizedHeadersAreRefusedBeforeAuthentication(t *testing.T) {
	var admitted atomic.Int64
	admit := func(string, metadata.MD) error {
		admitted.Add(1)
		return status.Error(codes.Unauthenticated, "unknown bearer token")
	}
	srv := startLimited(t, grpcserver.Limits{MaxHeaderListSize: 16 << 10}, admit)
	c := rawConn(t, srv)
	_, err := io.WriteString(c, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(c, c)
	require.NoError(t, fr.WriteSettings())

	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: "/test.v1.Any/Call"},
		{Name: ":authority", Value: "x"}, {Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		{Name: "authorization", Value: "Bearer " + strings.Repeat("A", 1<<20)},
	} {
		require.NoError(t, enc.WriteField(f))
	}
	const frameSize = 16 << 10
	chunks := block.Bytes()
	first := chunks[:frameSize]
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true}))
	for rest := chunks[frameSize:]; len(rest) > 0; {
		n := min(frameSize, len(rest))
		if err := fr.WriteContinuation(1, n == len(rest), rest[:n]); err != nil {
			break // the server may close first
		}
		rest = rest[n:]
	}
	// The server answers the stream with an error, or closes the
	// connection; it never hands the headers to the admission check.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	refused := false
	for !refused {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server neither answered nor closed")
			refused = true
			break
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			refused = true
		case *http2.HeadersFrame:
			refused = f.StreamEnded()
		}
	}
	require.Zero(t, admitted.Load(), "the oversized headers reached the admission check")

	// Ordinary headers are admitted — and refused by the check, as asked.
	err = dialTest(t, srv).Invoke(context.Background(), "/test.v1.Any/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.EqualValues(t, 1, admitted.Load())
}

// Admit refuses a call at its headers: no interceptor or handler runs, and
// health stays exempt.
func TestAdmitRefusesBeforeTheHandler(t *testing.T) {
	admit := func(method string, md metadata.MD) error {
		if len(md.Get("authorization")) == 0 {
			return status.Error(codes.Unauthenticated, "missing bearer token")
		}
		return nil
	}
	srv := startLimited(t, grpcserver.Limits{}, admit)
	conn := dialTest(t, srv)
	_, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health is exempt")
	big := &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 3<<20)}
	err = conn.Invoke(context.Background(), "/test.v1.Any/Call", big, &healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer t")
	err = conn.Invoke(ctx, "/test.v1.Any/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "admitted, then no such method: %v", err)
	require.Eventually(t, func() bool { return srv.CallsInFlight() == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestMethodMessageSizeLimit(t *testing.T) {
	srv := startLimited(t, grpcserver.Limits{MethodMaxRecvMsgSize: map[string]int{checkMethod: 64}}, nil)
	health := healthpb.NewHealthClient(dialTest(t, srv))
	_, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 100)})
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "at most 64")
	_, err = health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
}

func TestPlaintextIsRefusedOffLoopback(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	_, err := grpcserver.New(grpcserver.Config{Addr: "0.0.0.0:0", Name: "pool", Logger: logger}, func(grpc.ServiceRegistrar) {})
	var refusal grpcserver.PlaintextOffLoopbackError
	require.ErrorAs(t, err, &refusal)
	require.Contains(t, err.Error(), "insecure-plaintext")

	srv, err := grpcserver.New(grpcserver.Config{Addr: "0.0.0.0:0", Name: "pool", Logger: logger, InsecurePlaintext: true}, func(grpc.ServiceRegistrar) {})
	require.NoError(t, err)
	require.Contains(t, logs.String(), "WITHOUT TLS", "the insecure setting is logged")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, srv.Serve(ctx))
}

func TestMethodLimitsNamesEveryUnaryMethod(t *testing.T) {
	m := grpcserver.MethodLimits(healthpb.Health_ServiceDesc, 10)
	require.Equal(t, map[string]int{checkMethod: 10, "/grpc.health.v1.Health/List": 10}, m)
}
