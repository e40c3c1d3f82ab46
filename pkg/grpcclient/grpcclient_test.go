package grpcclient_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
)

// flaky answers List with UNAVAILABLE until it has failed failures times.
type flaky struct {
	healthpb.UnimplementedHealthServer
	failures int32
	calls    atomic.Int32
}

func (f *flaky) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	if f.calls.Add(1) <= f.failures {
		return nil, status.Error(codes.Unavailable, "try again")
	}
	return &healthpb.HealthListResponse{}, nil
}

func serve(t *testing.T, srv *flaky) string {
	t.Helper()
	return serveOn(t, "127.0.0.1:0", srv)
}

func serveOn(t *testing.T, addr string, srv *flaky) string {
	t.Helper()
	s, err := grpcserver.New(grpcserver.Config{Addr: addr, Name: "flaky", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		func(r grpc.ServiceRegistrar) {
			r.RegisterService(&grpc.ServiceDesc{
				ServiceName: "test.v1.Flaky",
				HandlerType: (*healthpb.HealthServer)(nil),
				Methods: []grpc.MethodDesc{{MethodName: "List", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
					req := &healthpb.HealthListRequest{}
					if err := dec(req); err != nil {
						return nil, err
					}
					return srv.(healthpb.HealthServer).List(ctx, req)
				}}},
			}, srv)
		})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s.Addr().String()
}

func call(t *testing.T, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return conn.Invoke(ctx, "/test.v1.Flaky/List", &healthpb.HealthListRequest{}, &healthpb.HealthListResponse{})
}

func TestRetryUnavailableRetriesOnlyTheNamedMethods(t *testing.T) {
	retried := &flaky{failures: 2}
	conn, err := grpcclient.Dial(grpcclient.Config{Target: serve(t, retried), RetryUnavailable: []string{"/test.v1.Flaky/List"}})
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, call(t, conn), "two UNAVAILABLE answers are retried away")
	require.EqualValues(t, 3, retried.calls.Load())

	plain := &flaky{failures: 1}
	conn2, err := grpcclient.Dial(grpcclient.Config{Target: serve(t, plain)})
	require.NoError(t, err)
	defer conn2.Close()
	require.Equal(t, codes.Unavailable, status.Code(call(t, conn2)), "methods not named are not retried")
	require.EqualValues(t, 1, plain.calls.Load())

	_, err = grpcclient.Dial(grpcclient.Config{Target: "127.0.0.1:1", RetryUnavailable: []string{"List"}})
	require.Error(t, err)
}

// A peer that was down for several seconds is used again about a second
// after it comes back. gRPC's default backoff (1s growing by 1.6x to 2min)
// would next try about 3.3s after this peer's return.
func TestReconnectsSoonAfterThePeerReturns(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // the peer is down

	conn, err := grpcclient.Dial(grpcclient.Config{Target: addr})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	conn.Connect()
	time.Sleep(6 * time.Second) // an outage long enough for the default backoff to reach 4s

	srv := &flaky{}
	back := serveOn(t, addr, srv)
	require.Equal(t, addr, back)
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).List(ctx, &healthpb.HealthListRequest{}, grpc.WaitForReady(true))
	require.NoError(t, err, "the connection came back within 2.5s of the peer")
}
