package grpcserver_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
)

// panicky is a health server whose Check panics, standing in for a buggy
// handler.
type panicky struct {
	healthpb.UnimplementedHealthServer
}

func (panicky) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	panic("handler bug with sk-ant-secret-value in it")
}

func TestServerLifecycleHealthReflectionAndRecovery(t *testing.T) {
	var logs syncbuf.Buffer
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "test", Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		func(r grpc.ServiceRegistrar) {
			r.RegisterService(&grpc.ServiceDesc{
				ServiceName: "test.v1.Panicky",
				HandlerType: (*healthpb.HealthServer)(nil),
				Methods: []grpc.MethodDesc{{MethodName: "List", Handler: func(srv any, ctx context.Context, _ func(any) error, chain grpc.UnaryServerInterceptor) (any, error) {
					call := func(ctx context.Context, req any) (any, error) {
						return srv.(healthpb.HealthServer).List(ctx, req.(*healthpb.HealthListRequest))
					}
					return chain(ctx, &healthpb.HealthListRequest{}, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.v1.Panicky/List"}, call)
				}}},
			}, panicky{})
		})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()

	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)

	resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "test.v1.Panicky"})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus(), "not serving until the service says it is ready")
	srv.SetServing(true)
	resp, err = health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
	refl, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range refl.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	require.Contains(t, names, "test.v1.Panicky")
	require.NoError(t, stream.CloseSend())

	err = conn.Invoke(context.Background(), "/test.v1.Panicky/List", &healthpb.HealthListRequest{}, &healthpb.HealthListResponse{})
	require.Equal(t, codes.Internal, status.Code(err))
	require.NotContains(t, err.Error(), "sk-ant-secret-value", "the panic value stays out of the response")
	require.Contains(t, logs.String(), "recovered from panic")
	require.NotContains(t, logs.String(), "sk-ant-secret-value", "the panic value stays out of the log")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
}

func TestGateHoldsCallsUntilTheCheckPasses(t *testing.T) {
	var ready atomic.Bool
	gate := grpcserver.NewGate(func(context.Context) error {
		if !ready.Load() {
			return errors.New("schema behind: run 'switchyard migrate up'")
		}
		return nil
	})
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "gated", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		UnaryInterceptors: []grpc.UnaryServerInterceptor{gate.UnaryInterceptor()}},
		func(r grpc.ServiceRegistrar) {
			r.RegisterService(&grpc.ServiceDesc{
				ServiceName: "test.v1.Gated",
				HandlerType: (*any)(nil),
				Methods: []grpc.MethodDesc{{MethodName: "Call", Handler: func(srv any, ctx context.Context, _ func(any) error, chain grpc.UnaryServerInterceptor) (any, error) {
					return chain(ctx, &healthpb.HealthCheckRequest{}, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.v1.Gated/Call"},
						func(context.Context, any) (any, error) { return &healthpb.HealthCheckResponse{}, nil })
				}}},
			}, struct{}{})
		})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx) }()
	go gate.Run(ctx, srv, slog.New(slog.NewTextHandler(io.Discard, nil)), 5*time.Millisecond)

	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)

	resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health answers while the gate is closed")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())
	err = conn.Invoke(ctx, "/test.v1.Gated/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "switchyard migrate up")

	ready.Store(true)
	require.Eventually(t, func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, gate.Err())
	require.NoError(t, conn.Invoke(ctx, "/test.v1.Gated/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{}), "calls pass once the gate opens")
}

// slow is a service whose List waits until its context ends or release is
// closed, recording how it ended.
type slow struct {
	healthpb.UnimplementedHealthServer
	release chan struct{}
	started chan struct{}
	ended   chan error
}

func (s *slow) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	close(s.started)
	select {
	case <-s.release:
		s.ended <- nil
		return &healthpb.HealthListResponse{}, nil
	case <-ctx.Done():
		s.ended <- ctx.Err()
		return nil, ctx.Err()
	}
}

func serveSlow(t *testing.T, grace time.Duration) (*slow, *grpc.ClientConn, context.CancelFunc, chan error) {
	t.Helper()
	svc := &slow{release: make(chan struct{}), started: make(chan struct{}), ended: make(chan error, 1)}
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "slow", ShutdownGrace: grace, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		func(r grpc.ServiceRegistrar) {
			r.RegisterService(&grpc.ServiceDesc{
				ServiceName: "test.v1.Slow",
				HandlerType: (*healthpb.HealthServer)(nil),
				Methods: []grpc.MethodDesc{{MethodName: "List", Handler: func(srv any, ctx context.Context, dec func(any) error, chain grpc.UnaryServerInterceptor) (any, error) {
					req := &healthpb.HealthListRequest{}
					if err := dec(req); err != nil {
						return nil, err
					}
					info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.v1.Slow/List"}
					return chain(ctx, req, info, func(ctx context.Context, req any) (any, error) {
						return srv.(healthpb.HealthServer).List(ctx, req.(*healthpb.HealthListRequest))
					})
				}}},
			}, svc)
		})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	srv.SetServing(true)
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return svc, conn, cancel, done
}

func callSlow(conn *grpc.ClientConn) error {
	return conn.Invoke(context.Background(), "/test.v1.Slow/List", &healthpb.HealthListRequest{}, &healthpb.HealthListResponse{})
}

// A health watch lives as long as its client: it must not hold a shutdown
// that has no work left to wait for.
func TestShutdownIsNotHeldByInfrastructureStreams(t *testing.T) {
	_, conn, cancel, done := serveSlow(t, time.Hour)
	watch, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = watch.Recv()
	require.NoError(t, err)
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(context.Background())
	require.NoError(t, err)
	require.NoError(t, refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
	_, err = refl.Recv()
	require.NoError(t, err) // the reflection stream now idles in Recv on the server

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve waited for the health watch and the reflection stream (the grace is an hour)")
	}
}

// A work call finishes within the grace; past it, it is cancelled, and
// Serve returns only once its handler has returned.
func TestShutdownWaitsForWorkWithinTheGrace(t *testing.T) {
	t.Run("finishes", func(t *testing.T) {
		svc, conn, cancel, done := serveSlow(t, time.Hour)
		callErr := make(chan error, 1)
		go func() {
			callErr <- callSlow(conn)
		}()
		<-svc.started
		cancel()
		select {
		case <-done:
			t.Fatal("Serve returned while a call was in flight")
		case <-time.After(200 * time.Millisecond):
		}
		close(svc.release)
		require.NoError(t, <-svc.ended)
		require.NoError(t, <-done)
		require.NoError(t, <-callErr)
	})
	t.Run("cancelled past the grace", func(t *testing.T) {
		svc, conn, cancel, done := serveSlow(t, 100*time.Millisecond)
		go func() { _ = callSlow(conn) }()
		<-svc.started
		cancel()
		require.NoError(t, <-done)
		select {
		case err := <-svc.ended:
			require.ErrorIs(t, err, context.Canceled, "the handler saw its context cancelled before Serve returned")
		default:
			t.Fatal("Serve returned before the cancelled handler did")
		}
	})
}

// A declared watch stream runs until its client leaves; at shutdown it is
// cut at once, and its client is told to reconnect (Unavailable), however
// the handler ended.
func TestShutdownCutsDeclaredWatches(t *testing.T) {
	const method = "/test.v1.Watcher/Watch"
	watching := make(chan struct{})
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "watcher", ShutdownGrace: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Watches: []string{method}},
		func(r grpc.ServiceRegistrar) {
			r.RegisterService(&grpc.ServiceDesc{
				ServiceName: "test.v1.Watcher",
				HandlerType: (*any)(nil),
				Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
					if err := ss.RecvMsg(&healthpb.HealthCheckRequest{}); err != nil {
						return err
					}
					close(watching)
					<-ss.Context().Done()
					return ss.Context().Err()
				}}},
			}, struct{}{})
		})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })

	stream, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, method)
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(&healthpb.HealthCheckRequest{}))
	require.NoError(t, stream.CloseSend())
	<-watching

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve waited for the watch (the grace is an hour)")
	}
	err = stream.RecvMsg(&healthpb.HealthCheckResponse{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
}
