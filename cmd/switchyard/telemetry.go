package main

import (
	"context"
	"flag"
	"log/slog"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

// envMetricsAddr and envPprof are the defaults of -metrics-addr and -pprof.
const (
	envMetricsAddr = "SWITCHYARD_METRICS_ADDR"
	envPprof       = "SWITCHYARD_PPROF"
)

// telemetryFlags are the telemetry settings of a service command; the
// exporters, the sampler and the resource come from the standard OTEL_*
// variables (see telemetry.Start and docs/operations.md).
type telemetryFlags struct {
	metricsAddr string
	pprof       bool
}

func (f *telemetryFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.metricsAddr, "metrics-addr", env(envMetricsAddr, ""), "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464; empty serves none ("+envMetricsAddr+")")
	envVar(fs, &f.pprof, "pprof", envPprof, false, parseBool, "also serve Go's profiles at http://ADDR/debug/pprof/ on the metrics address, for measuring a running service")
}

// start sets up the process's telemetry; process names it (the service's
// name, or switchyard-dev) and logger receives export errors.
func (f *telemetryFlags) start(ctx context.Context, logger *slog.Logger, process string) (*telemetry.Process, error) {
	return telemetry.Start(ctx, telemetry.Config{Name: process, Logger: logger, MetricsAddr: f.metricsAddr, Profiling: f.pprof})
}

// telemetryFlushTimeout bounds the final export of spans and metrics.
const telemetryFlushTimeout = 5 * time.Second

// shutdownTelemetry flushes and stops the process's telemetry after its
// services have stopped. A failure (a collector that is down) is logged,
// not returned: it must not turn a clean stop into a failed one.
func shutdownTelemetry(ctx context.Context, logger *slog.Logger, tp *telemetry.Process) {
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), telemetryFlushTimeout)
	defer cancel()
	if err := tp.Shutdown(flushCtx); err != nil {
		logger.Warn("telemetry: the last spans and metrics may not have been exported", "error", err)
	}
}

// withTelemetry runs fn with the providers of the process's one service,
// exporting as the OTEL_* variables and f say, and flushes spans and
// metrics afterwards. Export errors are logged through logger, marked with
// the service.
func withTelemetry(ctx context.Context, f telemetryFlags, logger *slog.Logger, service string, fn func(telemetry.Providers) error) error {
	logger = logger.With("service", strings.TrimPrefix(service, "switchyard-"))
	tp, err := f.start(ctx, logger, service)
	if err != nil {
		return err
	}
	defer shutdownTelemetry(ctx, logger, tp)
	return fn(tp.Service(service))
}
