package executor

import (
	"context"
	"net"
	"net/url"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/semconv/v1.40.0/genaiconv"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// instrumentation is the model call's span and metrics, by the OpenTelemetry
// GenAI semantic conventions: a client span named "chat {model}" and the
// gen_ai.client.token.usage and gen_ai.client.operation.duration
// histograms. The SDK's own span ("anthropic.messages.create", with
// non-standard attribute names) is not used.
type instrumentation struct {
	tracer   trace.Tracer
	tokens   genaiconv.ClientTokenUsage
	duration genaiconv.ClientOperationDuration
	server   []attribute.KeyValue // server.address and server.port of the base URL
}

const scope = "github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"

func newInstrumentation(tp trace.TracerProvider, mp metric.MeterProvider, baseURL string) instrumentation {
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(scope)
	in := instrumentation{tracer: tp.Tracer(scope)}
	// The constructors fail only for invalid options, which these are not.
	in.tokens, _ = genaiconv.NewClientTokenUsage(m)
	in.duration, _ = genaiconv.NewClientOperationDuration(m)
	if u, err := url.Parse(baseURL); err == nil && u.Host != "" {
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		in.server = append(in.server, semconv.ServerAddress(host))
		if p, err := strconv.Atoi(port); err == nil {
			in.server = append(in.server, semconv.ServerPort(p))
		}
	} else if host, port, err := net.SplitHostPort(baseURL); err == nil {
		in.server = append(in.server, semconv.ServerAddress(host))
		if p, err := strconv.Atoi(port); err == nil {
			in.server = append(in.server, semconv.ServerPort(p))
		}
	}
	return in
}

// start opens the call's span.
func (in instrumentation) start(ctx context.Context, req Request) (context.Context, trace.Span) {
	attrs := append([]attribute.KeyValue{
		semconv.GenAIOperationNameChat,
		semconv.GenAIProviderNameAnthropic,
		semconv.GenAIRequestModel(req.Model),
		semconv.GenAIRequestMaxTokens(int(req.MaxTokens)),
	}, in.server...)
	return in.tracer.Start(ctx, "chat "+req.Model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// end records the call's result on its span and in the metrics.
func (in instrumentation) end(ctx context.Context, span trace.Span, req Request, res Result) {
	u := res.Usage
	attrs := []attribute.KeyValue{
		semconv.GenAIUsageInputTokens(int(u.InputTokens)),
		semconv.GenAIUsageOutputTokens(int(u.OutputTokens)),
		semconv.GenAIUsageCacheReadInputTokens(int(u.CacheReadTokens)),
		semconv.GenAIUsageCacheCreationInputTokens(int(u.CacheCreationTokens)),
		attribute.String("switchyard.outcome", res.Outcome.String()),
	}
	if res.Model != "" {
		attrs = append(attrs, semconv.GenAIResponseModel(res.Model))
	}
	if res.MessageID != "" {
		attrs = append(attrs, semconv.GenAIResponseID(res.MessageID))
	}
	if res.StopReason != "" {
		attrs = append(attrs, semconv.GenAIResponseFinishReasons(res.StopReason))
	}
	if res.HTTPStatus != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(res.HTTPStatus))
	}
	var errType string
	if res.Outcome != Success {
		errType = res.ErrorType
		if errType == "" {
			errType = res.Outcome.String()
		}
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		span.SetStatus(codes.Error, res.Outcome.String()+": "+errType)
	}
	span.SetAttributes(attrs...)
	span.End()

	// Metric attributes are bounded: the request model comes from the
	// category table; the response model and the upstream's error type are
	// the upstream's text and go on the span only, the error type as one
	// of a known set on the metric.
	metricAttrs := append([]attribute.KeyValue{in.tokens.AttrRequestModel(req.Model)}, in.server...)
	// Cache reads and writes are input tokens too, as the conventions
	// count them.
	in.tokens.Record(ctx, u.InputTokens+u.CacheReadTokens+u.CacheCreationTokens, genaiconv.OperationNameChat, genaiconv.ProviderNameAnthropic, genaiconv.TokenTypeInput, metricAttrs...)
	in.tokens.Record(ctx, u.OutputTokens, genaiconv.OperationNameChat, genaiconv.ProviderNameAnthropic, genaiconv.TokenTypeOutput, metricAttrs...)
	durAttrs := metricAttrs
	if errType != "" {
		durAttrs = append(durAttrs[:len(durAttrs):len(durAttrs)], in.duration.AttrErrorType(boundedErrorType(errType)))
	}
	in.duration.Record(ctx, res.Duration.Seconds(), genaiconv.OperationNameChat, genaiconv.ProviderNameAnthropic, durAttrs...)
}

// knownErrorTypes are the error types a model call can end with: the
// Messages API's and the executor's own. Anything else is _OTHER on
// metrics, so a misbehaving upstream cannot grow their series.
var knownErrorTypes = map[string]bool{
	"invalid_request_error": true, "authentication_error": true, "billing_error": true, "permission_error": true,
	"not_found_error": true, "request_too_large": true, "rate_limit_error": true, "api_error": true,
	"overloaded_error": true, "timeout_error": true, "stream_error": true, "malformed_stream": true,
	"connection_error": true, "request_not_sent": true, "cancelled": true,
}

func boundedErrorType(t string) genaiconv.ErrorTypeAttr {
	if knownErrorTypes[t] {
		return genaiconv.ErrorTypeAttr(t)
	}
	for _, o := range []Outcome{Success, RateLimited, SpendLimited, UpstreamError, AuthFailed, ClientError, Cancelled, NotSent} {
		if t == o.String() {
			return genaiconv.ErrorTypeAttr(t)
		}
	}
	return genaiconv.ErrorTypeOther
}
