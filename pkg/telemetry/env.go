package telemetry

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/switchyard-dev/switchyard/pkg/buildinfo"
)

// The standard variables this package reads itself; autoexport and the SDK
// read the OTEL_EXPORTER_OTLP_*, OTEL_BSP_* and OTEL_METRIC_EXPORT_*
// families.
const (
	EnvSDKDisabled        = "OTEL_SDK_DISABLED"
	EnvServiceName        = "OTEL_SERVICE_NAME"
	EnvResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"
	EnvTracesSampler      = "OTEL_TRACES_SAMPLER"
	EnvTracesSamplerArg   = "OTEL_TRACES_SAMPLER_ARG"
	EnvTracesExporter     = "OTEL_TRACES_EXPORTER"
	EnvMetricsExporter    = "OTEL_METRICS_EXPORTER"
	EnvPrometheusHost     = "OTEL_EXPORTER_PROMETHEUS_HOST"
	EnvPrometheusPort     = "OTEL_EXPORTER_PROMETHEUS_PORT"
)

// ServiceKey is the resource attribute that always holds a service's
// built-in name (switchyard-orchestrator, ...), also when OTEL_SERVICE_NAME
// gives every service of the process one service.name.
const ServiceKey = attribute.Key("switchyard.service")

// SDKDisabled reports OTEL_SDK_DISABLED=true.
func SDKDisabled() bool {
	return strings.EqualFold(strings.TrimSpace(os.Getenv(EnvSDKDisabled)), "true")
}

// SamplerFromEnv is the sampler OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG name; parent-based always-on when they are unset.
func SamplerFromEnv() (sdktrace.Sampler, error) {
	return ParseSampler(os.Getenv(EnvTracesSampler), os.Getenv(EnvTracesSamplerArg))
}

// ParseSampler parses a sampler name and argument as the OTel specification
// defines them: always_on, always_off, traceidratio, parentbased_always_on
// (the default, for ""), parentbased_always_off and parentbased_traceidratio;
// the ratio samplers take their ratio, 0 to 1, from arg (default 1). The
// remote samplers (jaeger_remote, xray) are not supported: an error.
func ParseSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		arg = strings.TrimSpace(arg)
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("%s=%q is not a ratio between 0 and 1", EnvTracesSamplerArg, arg)
		}
		return r, nil
	}
	switch n := strings.ToLower(strings.TrimSpace(name)); n {
	case "", "parentbased_always_on":
		return defaultSampler(), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if n == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, fmt.Errorf("%s=%q is not a supported sampler; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", EnvTracesSampler, name)
	}
}

// otlpEndpointSet reports whether an OTLP endpoint variable for the signal
// ("TRACES", "METRICS") or for every signal is set.
func otlpEndpointSet(signal string) bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

// exporterName is the value of OTEL_TRACES_EXPORTER or
// OTEL_METRICS_EXPORTER as this package applies it: "none" when the SDK is
// disabled, and, when the variable is unset, "otlp" if an OTLP endpoint
// is configured and "none" otherwise, so that a process without a
// collector does not log an export error every few seconds.
func exporterName(envKey, signal string) string {
	if SDKDisabled() {
		return "none"
	}
	v := strings.ToLower(strings.TrimSpace(os.Getenv(envKey)))
	if v == "" {
		if otlpEndpointSet(signal) {
			return "otlp"
		}
		return "none"
	}
	return v
}

// SpanExporterFromEnv returns the span exporter OTEL_TRACES_EXPORTER names
// (otlp, console or none; see exporterName for the unset case), nil for
// none. The OTLP exporter's transport is OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
// or OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf (the default) or grpc.
func SpanExporterFromEnv(ctx context.Context) (Exporter, error) {
	switch name := exporterName(EnvTracesExporter, "TRACES"); name {
	case "none":
		return nil, nil
	case "otlp", "console":
		// autoexport reads the variable itself; when it is unset and an
		// endpoint is, its default is otlp too.
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("creating the span exporter (%s=%s): %w", EnvTracesExporter, name, err)
		}
		if autoexport.IsNoneSpanExporter(exp) {
			return nil, nil
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("%s=%q is not supported; use otlp, console or none (one value)", EnvTracesExporter, name)
	}
}

// metricsExporter is how OTEL_METRICS_EXPORTER asks for metrics: "none",
// "prometheus" (this package's endpoint) or a reader autoexport builds.
func metricsExporter() (string, error) {
	switch name := exporterName(EnvMetricsExporter, "METRICS"); name {
	case "none", "prometheus", "otlp", "console":
		return name, nil
	default:
		return "", fmt.Errorf("%s=%q is not supported; use otlp, prometheus, console or none (one value)", EnvMetricsExporter, name)
	}
}

// newPushReader builds one periodic reader for otlp or console metrics;
// every MeterProvider needs its own.
func newPushReader(ctx context.Context) (sdkmetric.Reader, error) {
	r, err := autoexport.NewMetricReader(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating the metric reader (%s): %w", EnvMetricsExporter, err)
	}
	return r, nil
}

// prometheusEnvAddr is OTEL_EXPORTER_PROMETHEUS_HOST:PORT, by default
// localhost:9464.
func prometheusEnvAddr() string {
	host, port := os.Getenv(EnvPrometheusHost), os.Getenv(EnvPrometheusPort)
	if host == "" {
		host = "localhost"
	}
	if port == "" {
		port = "9464"
	}
	return host + ":" + port
}

// builtinAttributes are the resource attributes of a service before the
// environment has its say.
func builtinAttributes(serviceName string) []attribute.KeyValue {
	build := buildinfo.Read()
	attrs := []attribute.KeyValue{
		semconv.ServiceName(serviceName),
		ServiceKey.String(serviceName),
		semconv.ServiceVersion(build.ServiceVersion()),
	}
	if build.Revision != "" {
		attrs = append(attrs, semconv.VCSRefHeadRevision(build.Revision))
	}
	return attrs
}

// instanceID is this process's service.instance.id, one for every service
// in it, so that replicas' metrics never merge in a backend.
var instanceID = uuid.NewString()

// serviceResource is a service's resource: the built-in attributes, a
// service.instance.id, the SDK, host, container and Go runtime detectors,
// and then OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, which override
// any of them (OTEL_SERVICE_NAME wins over a service.name in
// OTEL_RESOURCE_ATTRIBUTES). A detector that fails leaves its attributes
// out; err says which.
func serviceResource(ctx context.Context, serviceName string) (*resource.Resource, error) {
	attrs := append(builtinAttributes(serviceName), semconv.ServiceInstanceID(instanceID))
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithContainer(),
		resource.WithProcessPID(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithFromEnv(),
	)
	if res == nil {
		res = resource.NewSchemaless(attrs...)
	}
	return res, err
}

// checkOTLPEnv checks the OTLP exporter settings the SDK would otherwise
// drop with a log line quoting them: every header entry is key=value with
// a URL-escaped value, every endpoint a URL. The error names the variable
// and the entry, never the value (a header may carry a token, an endpoint
// a password).
func checkOTLPEnv() error {
	for _, v := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"} {
		raw := os.Getenv(v)
		if raw == "" {
			continue
		}
		for i, entry := range strings.Split(raw, ",") {
			key, value, ok := strings.Cut(entry, "=")
			if !ok || strings.TrimSpace(key) == "" {
				return fmt.Errorf("%s: entry %d is not key=value (its value is not shown: it may be a secret)", v, i+1)
			}
			if _, err := url.PathUnescape(strings.TrimSpace(value)); err != nil {
				return fmt.Errorf("%s: the value of entry %d (%s) is not URL-escaped correctly", v, i+1, strings.TrimSpace(key))
			}
		}
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		raw := os.Getenv(v)
		if raw == "" {
			continue
		}
		if u, err := url.Parse(raw); err != nil || u.Host == "" {
			return fmt.Errorf("%s is not a URL such as http://collector:4318 (its value is not shown: it may hold a password)", v)
		}
	}
	return nil
}
