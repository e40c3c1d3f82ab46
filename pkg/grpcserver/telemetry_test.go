package grpcserver_test

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// echoOutcomes are the test.v1.Echo methods and the code each answers.
var echoOutcomes = map[string]codes.Code{"Ok": codes.OK, "Missing": codes.NotFound, "Broken": codes.Internal}

// registerEcho registers test.v1.Echo, whose methods answer echoOutcomes.
func registerEcho(r grpc.ServiceRegistrar) {
	desc := &grpc.ServiceDesc{ServiceName: "test.v1.Echo", HandlerType: (*any)(nil)}
	for name, code := range echoOutcomes {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: name,
			Handler: func(srv any, ctx context.Context, dec func(any) error, chain grpc.UnaryServerInterceptor) (any, error) {
				req := &emptypb.Empty{}
				if err := dec(req); err != nil {
					return nil, err
				}
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.v1.Echo/" + name}
				return chain(ctx, req, info, func(context.Context, any) (any, error) {
					if code != codes.OK {
						return nil, status.Error(code, "as asked")
					}
					return &emptypb.Empty{}, nil
				})
			}})
	}
	r.RegisterService(desc, struct{}{})
}

// Health and reflection make no span and no RPC metric; the service's
// calls do. The access log has a line per call only at debug, except for
// a failure that needs attention.
func TestInfrastructureCallsAreNotInstrumentedAndAccessLogsAreDebug(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	tel, shutdown := telemetry.New("svc", spans, telemetry.WithMetricReader(reader))
	defer func() { _ = shutdown(context.Background()) }()
	var debugLogs, infoLogs syncbuf.Buffer
	logger := slog.New(teeHandler{
		slog.NewTextHandler(&debugLogs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewTextHandler(&infoLogs, &slog.HandlerOptions{Level: slog.LevelInfo}),
	})
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "echo", Logger: logger, Telemetry: tel}, registerEcho)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	srv.SetServing(true)

	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}))
	_, err = refl.Recv()
	require.NoError(t, err)
	require.NoError(t, refl.CloseSend())
	for name, code := range echoOutcomes {
		err := conn.Invoke(ctx, "/test.v1.Echo/"+name, &emptypb.Empty{}, &emptypb.Empty{})
		require.Equal(t, code, status.Code(err), name)
	}
	_, err = refl.Recv() // the stream has ended on the server
	require.Error(t, err)

	// The server records a call once it has ended on its side, which may
	// be just after the client has the answer.
	want := []string{"test.v1.Echo/Ok", "test.v1.Echo/Missing", "test.v1.Echo/Broken"}
	var names, methods []string
	require.Eventually(t, func() bool {
		require.NoError(t, tel.Tracer.(*sdktrace.TracerProvider).ForceFlush(ctx))
		names = nil
		for _, s := range spans.GetSpans() {
			names = append(names, s.Name)
		}
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(ctx, &rm))
		methods = nil
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "rpc.server.call.duration" {
					continue
				}
				for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					v, _ := dp.Attributes.Value("rpc.method")
					methods = append(methods, v.AsString())
				}
			}
		}
		return len(names) >= len(want) && len(methods) >= len(want)
	}, 5*time.Second, 10*time.Millisecond)
	require.ElementsMatch(t, want, names, "one span per service call; none for health or reflection")
	require.ElementsMatch(t, want, methods, "rpc.server.call.duration has the service calls only")

	finished := regexp.MustCompile(`level=(\w+) msg="finished call".*grpc\.method=(\w+)`)
	levels := map[string]string{}
	for _, l := range strings.Split(debugLogs.String(), "\n") {
		if m := finished.FindStringSubmatch(l); m != nil {
			levels[m[2]] = m[1]
		}
	}
	require.Equal(t, map[string]string{"Check": "DEBUG", "ServerReflectionInfo": "DEBUG", "Ok": "DEBUG", "Missing": "DEBUG", "Broken": "ERROR"}, levels)
	require.Equal(t, 1, strings.Count(infoLogs.String(), `msg="finished call"`), "at info only the failure that needs attention is logged:\n%s", infoLogs.String())
}

// teeHandler sends every record to each handler that is enabled for it.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t teeHandler) WithGroup(name string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(name)
	}
	return out
}
