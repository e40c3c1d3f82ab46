package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// cleanEnv unsets every variable Start reads, so the machine's environment
// does not leak into a test.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{
		"OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
		"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
		"OTEL_EXPORTER_PROMETHEUS_HOST", "OTEL_EXPORTER_PROMETHEUS_PORT",
	} {
		t.Setenv(k, "")
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestProvidersShareAnExporterWithoutClosingIt(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	a, shutdownA := telemetry.New("svc-a", exp)
	b, shutdownB := telemetry.New("svc-b", exp)
	_, span := a.Tracer.Tracer("t").Start(context.Background(), "from-a")
	span.End()
	require.NoError(t, shutdownA(context.Background()))

	_, span = b.Tracer.Tracer("t").Start(context.Background(), "from-b")
	span.End()
	require.NoError(t, shutdownB(context.Background()))

	names := map[string]string{}
	for _, s := range exp.GetSpans() {
		svc, _ := s.Resource.Set().Value("service.name")
		names[s.Name] = svc.AsString()
	}
	require.Equal(t, map[string]string{"from-a": "svc-a", "from-b": "svc-b"}, names,
		"each service names itself, and one shutting down does not close the shared exporter")
}

func TestParseSampler(t *testing.T) {
	for _, c := range []struct{ name, arg, want string }{
		{"", "", "ParentBased{root:AlwaysOnSampler"},
		{"parentbased_always_on", "", "ParentBased{root:AlwaysOnSampler"},
		{"always_on", "", "AlwaysOnSampler"},
		{" Always_Off ", "", "AlwaysOffSampler"},
		{"parentbased_always_off", "", "ParentBased{root:AlwaysOffSampler"},
		{"traceidratio", "0.25", "TraceIDRatioBased{0.25}"},
		{"traceidratio", "", "TraceIDRatioBased{1}"},
		{"parentbased_traceidratio", "0.5", "ParentBased{root:TraceIDRatioBased{0.5}"},
	} {
		s, err := telemetry.ParseSampler(c.name, c.arg)
		require.NoError(t, err, c.name)
		require.True(t, strings.HasPrefix(s.Description(), c.want), "%q %q: %s", c.name, c.arg, s.Description())
	}
	for _, c := range []struct{ name, arg string }{
		{"jaeger_remote", ""}, {"sometimes", ""}, {"traceidratio", "1.5"}, {"traceidratio", "-0.1"}, {"parentbased_traceidratio", "half"},
	} {
		_, err := telemetry.ParseSampler(c.name, c.arg)
		require.Error(t, err, "%q %q", c.name, c.arg)
	}
}

// startProcess starts a process's telemetry with spans going to exp.
func startProcess(t *testing.T, cfg telemetry.Config) *telemetry.Process {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	p, err := telemetry.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

func oneSpan(t *testing.T, p *telemetry.Process, tel telemetry.Providers, name string) {
	t.Helper()
	_, span := tel.Tracer.Tracer("test").Start(context.Background(), name)
	span.End()
	require.NoError(t, p.ForceFlush(context.Background()))
}

func TestSamplerFromTheEnvironment(t *testing.T) {
	cleanEnv(t)
	exp := tracetest.NewInMemoryExporter()
	p := startProcess(t, telemetry.Config{Name: "test", SpanExporter: exp})
	oneSpan(t, p, p.Service("svc"), "sampled")
	require.Len(t, exp.GetSpans(), 1, "the default samples every new trace")

	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	exp.Reset()
	p = startProcess(t, telemetry.Config{Name: "test", SpanExporter: exp})
	tel := p.Service("svc")
	oneSpan(t, p, tel, "dropped")
	require.Empty(t, exp.GetSpans(), "always_off exports nothing")

	t.Setenv("OTEL_TRACES_SAMPLER", "jaeger_remote")
	_, err := telemetry.Start(context.Background(), telemetry.Config{Name: "test", SpanExporter: exp, Logger: quietLogger()})
	require.ErrorContains(t, err, "OTEL_TRACES_SAMPLER")
}

func resourceOf(t *testing.T, s tracetest.SpanStub) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, kv := range s.Resource.Attributes() {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

func TestServiceNames(t *testing.T) {
	cleanEnv(t)
	exp := tracetest.NewInMemoryExporter()
	p := startProcess(t, telemetry.Config{Name: "switchyard-dev", SpanExporter: exp})
	oneSpan(t, p, p.Service("switchyard-orchestrator"), "a")
	oneSpan(t, p, p.Service("switchyard-activity"), "b")
	spans := exp.GetSpans()
	require.Len(t, spans, 2)
	a, b := resourceOf(t, spans[0]), resourceOf(t, spans[1])
	require.Equal(t, "switchyard-orchestrator", a["service.name"], "without OTEL_SERVICE_NAME each service keeps its own name")
	require.Equal(t, "switchyard-activity", b["service.name"])
	require.NotEmpty(t, a["service.version"])
	require.NotEmpty(t, a["service.instance.id"])
	require.Equal(t, a["service.instance.id"], b["service.instance.id"], "one instance id per process")

	t.Setenv("OTEL_SERVICE_NAME", "switchyard-staging")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging,service.version=9.9.9")
	exp.Reset()
	p = startProcess(t, telemetry.Config{Name: "switchyard-dev", SpanExporter: exp})
	oneSpan(t, p, p.Service("switchyard-orchestrator"), "a")
	oneSpan(t, p, p.Service("switchyard-activity"), "b")
	spans = exp.GetSpans()
	require.Len(t, spans, 2)
	a, b = resourceOf(t, spans[0]), resourceOf(t, spans[1])
	require.Equal(t, "switchyard-staging", a["service.name"], "OTEL_SERVICE_NAME names every service of the process")
	require.Equal(t, "switchyard-staging", b["service.name"])
	require.Equal(t, "switchyard-orchestrator", a[string(telemetry.ServiceKey)], "the built-in name stays in switchyard.service")
	require.Equal(t, "switchyard-activity", b[string(telemetry.ServiceKey)])
	require.Equal(t, "staging", a["deployment.environment.name"])
	require.Equal(t, "9.9.9", a["service.version"], "OTEL_RESOURCE_ATTRIBUTES overrides the built-in attributes")
}

// registerEcho registers test.v1.Echo/Ping, which answers OK.
func registerEcho(r grpc.ServiceRegistrar) {
	r.RegisterService(&grpc.ServiceDesc{ServiceName: "test.v1.Echo", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Ping",
			Handler: func(srv any, ctx context.Context, dec func(any) error, chain grpc.UnaryServerInterceptor) (any, error) {
				req := &emptypb.Empty{}
				if err := dec(req); err != nil {
					return nil, err
				}
				return chain(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/test.v1.Echo/Ping"},
					func(context.Context, any) (any, error) { return &emptypb.Empty{}, nil })
			}}}}, struct{}{})
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func TestMetricsEndpoint(t *testing.T) {
	cleanEnv(t)
	spans := tracetest.NewInMemoryExporter()
	p := startProcess(t, telemetry.Config{Name: "switchyard-dev", MetricsAddr: "127.0.0.1:0", SpanExporter: spans})
	require.NotNil(t, p.MetricsAddr())
	server, client := p.Service("svc-server"), p.Service("svc-client")

	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "echo", Logger: quietLogger(), Telemetry: server}, registerEcho)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	srv.SetServing(true)
	conn, err := grpcclient.Dial(grpcclient.Config{Target: srv.Addr().String(), Telemetry: client})
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Invoke(ctx, "/test.v1.Echo/Ping", &emptypb.Empty{}, &emptypb.Empty{}))
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)

	// The server records its call when the call has ended on its side,
	// which may be just after the client has the answer.
	serverCall := regexp.MustCompile(`rpc_server_call_duration_seconds_count\{[^}]*rpc_method="test.v1.Echo/Ping"[^}]*service_name="svc-server"[^}]*\} 1`)
	var body string
	require.Eventually(t, func() bool {
		body = scrape(t, "http://"+p.MetricsAddr().String()+telemetry.MetricsPath)
		return serverCall.MatchString(body)
	}, 5*time.Second, 10*time.Millisecond, "the server's RPC metric")
	require.Regexp(t, `rpc_client_call_duration_seconds_count\{[^}]*rpc_method="test.v1.Echo/Ping"[^}]*service_name="svc-client"[^}]*\} 1`, body)
	require.Contains(t, body, `go_goroutine_count{`, "a runtime metric")
	require.Regexp(t, `go_goroutine_count\{[^}]*service_name="switchyard-dev"`, body, "the runtime metrics are the process's")
	require.NotContains(t, body, "grpc.health", "health calls are not in the RPC metrics")
	require.Contains(t, body, `target_info{`)
	require.Contains(t, body, "process_open_fds")

	require.NoError(t, p.ForceFlush(ctx))
	for _, s := range spans.GetSpans() {
		require.NotContains(t, s.Name, "grpc.health", "health calls make no span")
	}
	require.Len(t, spans.GetSpans(), 2, "one client and one server span for Ping")
}

// collector records what arrives at a fake OTLP/HTTP endpoint.
type collector struct {
	mu       sync.Mutex
	requests []string // "POST /v1/traces application/x-protobuf"
	status   int
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	c.mu.Lock()
	c.requests = append(c.requests, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
	st := c.status
	c.mu.Unlock()
	if st != 0 {
		http.Error(w, "collector says no", st)
	}
}

func (c *collector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.requests...)
}

func TestOTLPOverHTTP(t *testing.T) {
	cleanEnv(t)
	var c collector
	srv := httptest.NewServer(&c)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")

	p := startProcess(t, telemetry.Config{Name: "test"})
	tel := p.Service("svc")
	counter, err := tel.Meter.Meter("test").Int64Counter("test.calls")
	require.NoError(t, err)
	counter.Add(context.Background(), 1)
	oneSpan(t, p, tel, "exported")
	require.Contains(t, c.got(), "POST /v1/traces application/x-protobuf", "the endpoint alone turns OTLP on, over HTTP")
	require.NoError(t, p.Shutdown(context.Background()))
	require.Contains(t, c.got(), "POST /v1/metrics application/x-protobuf", "metrics too, flushed at shutdown")
}

func TestNothingIsExportedWhenTurnedOff(t *testing.T) {
	for _, env := range [][2]string{
		{"OTEL_TRACES_EXPORTER", "none"},
		{"OTEL_SDK_DISABLED", "true"},
	} {
		t.Run(env[0], func(t *testing.T) {
			cleanEnv(t)
			var c collector
			srv := httptest.NewServer(&c)
			defer srv.Close()
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
			t.Setenv(env[0], env[1])
			if env[0] == "OTEL_TRACES_EXPORTER" {
				t.Setenv("OTEL_METRICS_EXPORTER", "none")
			}
			p := startProcess(t, telemetry.Config{Name: "test"})
			tel := p.Service("svc")
			oneSpan(t, p, tel, "not exported")
			require.NoError(t, p.Shutdown(context.Background()))
			require.Empty(t, c.got())
		})
	}
}

func TestNoExporterWithoutAnEndpoint(t *testing.T) {
	cleanEnv(t)
	p := startProcess(t, telemetry.Config{Name: "test"})
	tel := p.Service("svc")
	_, span := tel.Tracer.Tracer("t").Start(context.Background(), "x")
	defer span.End()
	require.True(t, span.SpanContext().IsValid(), "spans are still made, so trace ids reach the logs")
	_, ok := tel.Tracer.(*sdktrace.TracerProvider)
	require.True(t, ok)
}

func TestBadSettingsAreErrors(t *testing.T) {
	for _, env := range [][2]string{
		{"OTEL_TRACES_EXPORTER", "zipkin"},
		{"OTEL_METRICS_EXPORTER", "statsd"},
		{"OTEL_TRACES_SAMPLER_ARG", "2"},
	} {
		t.Run(env[0], func(t *testing.T) {
			cleanEnv(t)
			if env[0] == "OTEL_TRACES_SAMPLER_ARG" {
				t.Setenv("OTEL_TRACES_SAMPLER", "traceidratio")
			}
			t.Setenv(env[0], env[1])
			_, err := telemetry.Start(context.Background(), telemetry.Config{Name: "test", Logger: quietLogger()})
			require.ErrorContains(t, err, env[0])
		})
	}
}

func TestExportErrorsAreLogged(t *testing.T) {
	cleanEnv(t)
	c := collector{status: http.StatusBadRequest}
	srv := httptest.NewServer(&c)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", srv.URL+"/v1/traces")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10") // ms: the batches leave on their own
	var logs syncbuf.Buffer
	p := startProcess(t, telemetry.Config{Name: "test", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	tel := p.Service("svc")
	for i := 1; i <= 3; i++ {
		_, span := tel.Tracer.Tracer("t").Start(context.Background(), "x")
		span.End()
		require.Eventually(t, func() bool { return len(c.got()) == i }, 5*time.Second, 5*time.Millisecond, "batch %d", i)
	}
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "OpenTelemetry export error") }, 5*time.Second, 5*time.Millisecond)
	require.Contains(t, logs.String(), "collector says no")
	require.Equal(t, 1, strings.Count(logs.String(), "OpenTelemetry export error"), "the same error is logged once a minute at most:\n%s", logs.String())
}

func TestGRPCOptionsNeverUseTheGlobals(t *testing.T) {
	// A zero Providers instruments with no-ops rather than the otel
	// globals; it must not panic or fail the call.
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "echo", Logger: quietLogger()}, registerEcho)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	conn, err := grpcclient.Dial(grpcclient.Config{Target: srv.Addr().String()})
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.Invoke(ctx, "/test.v1.Echo/Ping", &emptypb.Empty{}, &emptypb.Empty{}))
}

func TestProfilingIsServedOnlyWhenAsked(t *testing.T) {
	cleanEnv(t)
	status := func(p *telemetry.Process, path string) int {
		t.Helper()
		resp, err := http.Get("http://" + p.MetricsAddr().String() + path)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	off := startProcess(t, telemetry.Config{Name: "switchyard-dev", MetricsAddr: "127.0.0.1:0"})
	require.Equal(t, http.StatusNotFound, status(off, "/debug/pprof/"), "no profiles without Profiling")

	on := startProcess(t, telemetry.Config{Name: "switchyard-dev", MetricsAddr: "127.0.0.1:0", Profiling: true})
	require.Equal(t, http.StatusOK, status(on, "/debug/pprof/"))
	require.Equal(t, http.StatusOK, status(on, "/debug/pprof/goroutine?debug=1"))
	require.Equal(t, http.StatusOK, status(on, telemetry.MetricsPath), "the metrics are still there")

	_, err := telemetry.Start(context.Background(), telemetry.Config{Name: "switchyard-dev", Profiling: true})
	require.ErrorContains(t, err, "metrics endpoint", "profiling without an address to serve it on is refused")
}
