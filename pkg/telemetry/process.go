package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel/attribute"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// MetricsPath is where the Prometheus endpoint serves.
const MetricsPath = "/metrics"

// Config configures the telemetry of one process.
type Config struct {
	// Name names the process: the service.name of its Go runtime metrics
	// (unless OTEL_SERVICE_NAME is set). A one-service process uses the
	// service's name; switchyard dev uses "switchyard-dev".
	Name string
	// Logger logs export errors (through the process's one otel error
	// handler) and the metrics endpoint. Default slog.Default().
	Logger *slog.Logger
	// MetricsAddr, when set, serves every service's metrics and the
	// runtime metrics as Prometheus text at http://MetricsAddr/metrics,
	// each series labelled with its service_name. Empty serves nothing,
	// unless OTEL_METRICS_EXPORTER=prometheus asks for the endpoint at
	// OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT (default
	// localhost:9464). Port 0 picks a free port (see Process.MetricsAddr).
	MetricsAddr string
	// Profiling adds Go's profiling handlers (net/http/pprof) at
	// /debug/pprof/ on the MetricsAddr endpoint, for measuring a running
	// service (go tool pprof http://ADDR/debug/pprof/profile). Off by
	// default: a profile shows code paths and timings, so the endpoint
	// belongs on an address only operators reach.
	Profiling bool
	// SpanExporter, when set, receives every service's spans instead of
	// the exporter OTEL_TRACES_EXPORTER chooses (tests). Shutdown does not
	// shut it down.
	SpanExporter Exporter
}

// Process is the telemetry of one process: the exporters, the Prometheus
// registry and endpoint, the runtime metrics, and the providers of every
// service in it.
type Process struct {
	name    string
	logger  *slog.Logger
	sampler sdktrace.Sampler
	// spans is shared by every service; owned when Start created it.
	spans     Exporter
	ownsSpans bool
	// push is "otlp" or "console" when every MeterProvider gets a
	// periodic reader of its own, "" otherwise.
	push     string
	registry *prometheus.Registry
	server   *http.Server
	// profiling serves net/http/pprof beside the metrics.
	profiling bool
	lis       net.Listener
	served    chan struct{}

	mu        sync.Mutex
	tracers   []*sdktrace.TracerProvider
	shutdowns []func(context.Context) error
	closeOnce sync.Once
	closeErr  error
}

// Start sets up a process's telemetry from cfg and the standard variables:
//
//   - OTEL_SDK_DISABLED=true: no exporter of any signal (spans are still
//     created and propagated, so trace ids reach the logs); a MetricsAddr
//     still serves, being Switchyard's own setting.
//   - OTEL_TRACES_EXPORTER: otlp, console or none. Unset: otlp when
//     OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
//     set, none otherwise.
//   - OTEL_METRICS_EXPORTER: otlp, console, prometheus or none; unset is
//     decided as for traces (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT).
//     prometheus serves the MetricsAddr endpoint, or one at
//     OTEL_EXPORTER_PROMETHEUS_HOST:PORT when MetricsAddr is empty.
//   - OTEL_EXPORTER_OTLP_PROTOCOL (and the _TRACES_/_METRICS_ variants):
//     http/protobuf (the default) or grpc; every other OTEL_EXPORTER_OTLP_*
//     variable (endpoint, headers, timeout, ...) as the OTLP exporters read
//     them, OTEL_BSP_* for the span batching, OTEL_METRIC_EXPORT_INTERVAL.
//   - OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: see ParseSampler.
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: see Service.
//
// A setting it cannot apply is an error. Start installs the process's otel
// error handler (once per process; see installErrorHandler), which logs
// through cfg.Logger. The caller stops its services and then calls
// Shutdown.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	installErrorHandler(logger)
	if err := checkOTLPEnv(); err != nil {
		return nil, err
	}
	sampler, err := SamplerFromEnv()
	if err != nil {
		return nil, err
	}
	metrics, err := metricsExporter()
	if err != nil {
		return nil, err
	}
	p := &Process{name: cfg.Name, logger: logger, sampler: sampler, spans: cfg.SpanExporter, profiling: cfg.Profiling}
	if p.spans == nil {
		if p.spans, err = SpanExporterFromEnv(ctx); err != nil {
			return nil, err
		}
		p.ownsSpans = p.spans != nil
	}
	addr := cfg.MetricsAddr
	switch metrics {
	case "prometheus":
		if addr == "" {
			addr = prometheusEnvAddr()
		}
	case "otlp", "console":
		p.push = metrics
	}
	if cfg.Profiling && addr == "" {
		return nil, errors.Join(errors.New("profiling is served on the metrics endpoint: set its address too"), p.Shutdown(ctx))
	}
	if addr != "" {
		if err := p.serveMetrics(addr); err != nil {
			return nil, errors.Join(err, p.Shutdown(ctx))
		}
	}
	if err := p.startRuntime(ctx); err != nil {
		return nil, errors.Join(err, p.Shutdown(ctx))
	}
	return p, nil
}

// Service returns the providers of one service of the process, named
// serviceName (switchyard-orchestrator, ...). Its resource holds
// service.name, switchyard.service (always serviceName), service.version
// (buildinfo.Info.ServiceVersion), vcs.ref.head.revision, service.instance.id (one per
// process), the SDK, host, container and runtime attributes, and then
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which override them. So
// OTEL_SERVICE_NAME, when set, names every service of the process: in
// switchyard dev all three share it, and switchyard.service still tells
// them apart. Its spans go to the process's exporter; its metrics to the
// Prometheus endpoint and the push exporter, when the process has them
// (otherwise its Meter is a no-op). Process.Shutdown shuts it down.
func (p *Process) Service(serviceName string) Providers {
	res, err := serviceResource(context.Background(), serviceName)
	if err != nil {
		p.logger.Warn("telemetry: some resource attributes could not be detected", "service", serviceName, "error", err)
	}
	var processors []sdktrace.SpanProcessor
	if p.spans != nil {
		processors = append(processors, sdktrace.NewBatchSpanProcessor(unclosable{p.spans}))
	}
	readers, err := p.readers(context.Background(), true)
	if err != nil {
		p.logger.Warn("telemetry: the service's metrics are not exported", "service", serviceName, "error", err)
	}
	prov, shutdown := newProviders(res, p.sampler, processors, readers)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tracers = append(p.tracers, prov.Tracer.(*sdktrace.TracerProvider))
	p.shutdowns = append(p.shutdowns, shutdown)
	return prov
}

// MetricsAddr is where the Prometheus endpoint listens, nil without one.
func (p *Process) MetricsAddr() net.Addr {
	if p.lis == nil {
		return nil
	}
	return p.lis.Addr()
}

// ForceFlush exports every span the services have finished so far.
func (p *Process) ForceFlush(ctx context.Context) error {
	p.mu.Lock()
	tps := append([]*sdktrace.TracerProvider(nil), p.tracers...)
	p.mu.Unlock()
	var errs []error
	for _, tp := range tps {
		errs = append(errs, tp.ForceFlush(ctx))
	}
	return errors.Join(errs...)
}

// Shutdown flushes and shuts down every service's providers, the runtime
// metrics, the exporters Start created and the metrics endpoint. Call it
// once the services have stopped; later calls return the first's result.
func (p *Process) Shutdown(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		fns := p.shutdowns
		p.shutdowns = nil
		p.mu.Unlock()
		var errs []error
		if p.server != nil {
			// The endpoint goes first, with a deadline of its own, so no
			// scrape meets providers half shut down and a slow flush
			// cannot keep its connections open.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if err := p.server.Shutdown(sctx); err != nil {
				errs = append(errs, p.server.Close())
			}
			cancel()
			<-p.served
		}
		errs = append(errs, Join(fns...)(ctx))
		if p.ownsSpans {
			errs = append(errs, p.spans.Shutdown(ctx))
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// readers are the metric readers of one new MeterProvider.
func (p *Process) readers(ctx context.Context, targetInfo bool) ([]sdkmetric.Reader, error) {
	var rs []sdkmetric.Reader
	if p.registry != nil {
		opts := []promexporter.Option{
			promexporter.WithRegisterer(p.registry),
			// One endpoint serves every service of the process: each
			// series says whose it is.
			promexporter.WithResourceAsConstantLabels(attribute.NewAllowKeysFilter(semconv.ServiceNameKey)),
		}
		if !targetInfo {
			opts = append(opts, promexporter.WithoutTargetInfo())
		}
		exp, err := promexporter.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("creating the Prometheus exporter: %w", err)
		}
		rs = append(rs, exp)
	}
	if p.push != "" {
		r, err := newPushReader(ctx)
		if err != nil {
			return rs, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// startRuntime reports the Go runtime metrics once for the process, under
// the process's name. Its Prometheus series carry no target_info: in a
// one-service process the service's own has the same labels.
func (p *Process) startRuntime(ctx context.Context) error {
	readers, err := p.readers(ctx, false)
	if err != nil {
		return err
	}
	if len(readers) == 0 {
		return nil
	}
	res, err := serviceResource(ctx, p.name)
	if err != nil {
		p.logger.Warn("telemetry: some resource attributes could not be detected", "error", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	p.mu.Lock()
	p.shutdowns = append(p.shutdowns, mp.Shutdown)
	p.mu.Unlock()
	if err := runtime.Start(runtime.WithMeterProvider(mp)); err != nil {
		return fmt.Errorf("starting the Go runtime metrics: %w", err)
	}
	return nil
}

// serveMetrics creates the process's Prometheus registry and serves it on
// addr.
func (p *Process) serveMetrics(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s for the metrics endpoint: %w", addr, err)
	}
	p.registry = prometheus.NewRegistry()
	// CPU, memory, open file descriptors: Prometheus-only, the OTel
	// runtime metrics cover the Go heap and goroutines.
	p.registry.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{
		ErrorLog: promLogger{p.logger},
		// A series that cannot be gathered (two services reporting the
		// same one) is logged and left out; the rest is still served.
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       10 * time.Second,
	}))
	writeTimeout := 30 * time.Second
	if p.profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		// A CPU profile or trace streams for its ?seconds= (default 30).
		writeTimeout = 5 * time.Minute
	}
	p.lis, p.served = lis, make(chan struct{})
	p.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: writeTimeout}
	go func() {
		defer close(p.served)
		if err := p.server.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.logger.Error("the metrics endpoint stopped", "addr", lis.Addr().String(), "error", err)
		}
	}()
	p.logger.Info("serving metrics", "addr", lis.Addr().String(), "path", MetricsPath, "profiling", p.profiling)
	return nil
}

// promLogger lets promhttp log through slog.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) { p.l.Warn("serving metrics: " + fmt.Sprint(v...)) }
