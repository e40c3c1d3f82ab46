// Package executor makes one model call through the official Anthropic Go
// SDK and classifies what the upstream answered, following the outcome
// table of docs/architecture.md. It never retries: failover across accounts is the
// caller's job, so the SDK's own retries are off.
package executor

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Client.
type Config struct {
	// BaseURL of the Messages API, e.g. https://api.anthropic.com or the
	// simulator's address.
	BaseURL string
	// HTTPClient defaults to a client on NewTransport: bounded connections
	// (MaxConnsPerHost) and timeouts for everything but the stream itself,
	// which the caller's attempt timeout bounds.
	HTTPClient *http.Client
	// MaxConnsPerHost bounds the default client's connections to the
	// upstream; default DefaultMaxConnsPerHost. Ignored with HTTPClient.
	MaxConnsPerHost int
	// Tracer receives a client span for every call, and Meter the GenAI
	// client metrics (see instrumentation); nil for none.
	Tracer trace.TracerProvider
	Meter  metric.MeterProvider
}

// Client calls the Messages API.
type Client struct {
	sdk anthropic.Client
	in  instrumentation
}

// New returns a client. The SDK's environment defaults (ANTHROPIC_API_KEY,
// ANTHROPIC_BASE_URL, ...) are ignored: the key comes with every request and
// the base URL from cfg, so nothing in the environment can silently redirect
// or re-key a call.
func New(cfg Config) *Client {
	hc := cfg.HTTPClient
	if hc == nil {
		// No http.Client.Timeout: it would cut long streams; the attempt
		// timeout (the call's context) bounds the whole call.
		hc = &http.Client{Transport: NewTransport(TransportConfig{MaxConnsPerHost: cfg.MaxConnsPerHost})}
	}
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(cfg.BaseURL),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0),
	}
	return &Client{sdk: anthropic.NewClient(opts...), in: newInstrumentation(cfg.Tracer, cfg.Meter, cfg.BaseURL)}
}

// Call makes one streamed Messages API call, accumulates the stream with
// the SDK and classifies the result. Streaming is used for every call, so
// any max_tokens up to the model's limit works (the SDK refuses unstreamed
// calls that may take longer than ten minutes). It does not return an
// error: every failure is an Outcome with details.
func (c *Client) Call(ctx context.Context, req Request) Result {
	ctx, span := c.in.start(ctx, req)
	res := c.call(ctx, req)
	c.in.end(ctx, span, req, res)
	return res
}

func (c *Client) call(ctx context.Context, req Request) Result {
	start := time.Now()
	params := anthropic.MessageNewParams{
		Model:     anthropic.Model(req.Model),
		MaxTokens: req.MaxTokens,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(req.Prompt))},
	}
	if req.System != "" {
		// The system prompt is marked cacheable: tasks that load the same
		// skills share it, and session affinity keeps them on one account.
		params.System = []anthropic.TextBlockParam{{Text: req.System, CacheControl: anthropic.NewCacheControlEphemeralParam()}}
	}
	if req.UserID != "" {
		params.Metadata = anthropic.MetadataParam{UserID: anthropic.String(req.UserID)}
	}
	var (
		httpResp *http.Response
		sent     bool // the request reached the HTTP client
	)
	guard := option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		sent = true
		resp, err := next(r)
		if resp != nil && resp.Body != nil {
			limit := int64(MaxStreamBytes)
			if resp.StatusCode >= 300 {
				limit = MaxErrorBodyBytes
			}
			resp.Body = &limitedBody{rc: resp.Body, left: limit}
		}
		return resp, err
	})
	stream := c.sdk.Messages.NewStreaming(ctx, params,
		option.WithAPIKey(req.APIKey.Reveal()), option.WithResponseInto(&httpResp), guard)
	var (
		msg       anthropic.Message
		stopped   bool
		malformed error
	)
	for stream.Next() {
		ev := stream.Current()
		if err := msg.Accumulate(ev); err != nil {
			malformed = err
			break
		}
		switch ev.Type {
		case "content_block_delta":
			if ev.Delta.Type == "text_delta" && req.OnText != nil {
				req.OnText(ev.Delta.Text)
			}
		case "message_stop":
			stopped = true
		}
	}
	streamErr := stream.Err()
	_ = stream.Close()

	res := classify(ctx, &msg, stopped, streamErr, malformed, sent)
	res.Duration = time.Since(start)
	if httpResp != nil {
		res.RateLimit = parseRateLimit(httpResp.Header)
		if res.UpstreamRequestID == "" {
			res.UpstreamRequestID = httpResp.Header.Get("request-id")
		}
		if res.HTTPStatus == 0 && res.Outcome != Cancelled {
			res.HTTPStatus = httpResp.StatusCode
		}
	}
	sanitize(&res)
	return res
}

// classify turns the end of a stream into a Result. msg holds whatever was
// accumulated: on a failure after message_start its usage is what the
// upstream reported and is kept, since the upstream bills it.
func classify(ctx context.Context, msg *anthropic.Message, stopped bool, streamErr, malformed error, sent bool) Result {
	res := fromMessage(msg)
	var apiErr *anthropic.Error
	switch {
	case streamErr == nil && malformed == nil && stopped:
		res.Outcome, res.HTTPStatus = Success, http.StatusOK
		return res
	case errors.As(streamErr, &apiErr) && apiErr.StatusCode >= 300:
		// An HTTP error before the stream started: the outcome table applies.
		e := classifyAPIError(apiErr)
		e.Usage, e.MessageID = res.Usage, res.MessageID
		return e
	case ctx.Err() != nil:
		res.Outcome, res.ErrorType, res.ErrorMessage = Cancelled, "cancelled", ctx.Err().Error()
	case apiErr != nil:
		// An error event in a stream that had started (HTTP 200): the
		// upstream failed while answering.
		res.Outcome, res.ErrorType, res.ErrorMessage = UpstreamError, string(apiErr.Type()), apiErr.Message
		res.UpstreamRequestID = apiErr.RequestID
		if res.ErrorType == "" {
			res.ErrorType = "stream_error"
		}
		if res.ErrorMessage == "" {
			res.ErrorMessage = "the upstream reported an error in the middle of the stream"
		}
	case malformed != nil:
		res.Outcome, res.ErrorType, res.ErrorMessage = UpstreamError, "malformed_stream", "the upstream sent an event out of order: "+malformed.Error()
	case streamErr == nil:
		res.Outcome, res.ErrorType, res.ErrorMessage = UpstreamError, "connection_error", "the stream ended before message_stop"
	case !sent:
		// Nothing reached the network: the SDK refused the request.
		res.Outcome, res.ErrorType, res.ErrorMessage = NotSent, "request_not_sent", "the request could not be sent: "+streamErr.Error()
	default:
		// A transport failure: refused or dropped connection, a timeout of
		// our own, a body over its limit.
		res.Outcome, res.ErrorType, res.ErrorMessage = UpstreamError, "connection_error", streamErr.Error()
	}
	return res
}

func fromMessage(msg *anthropic.Message) Result {
	var text strings.Builder
	for _, block := range msg.Content {
		if block.Type == "text" {
			text.WriteString(block.Text)
		}
	}
	return Result{
		Text:       text.String(),
		Model:      string(msg.Model),
		StopReason: string(msg.StopReason),
		MessageID:  msg.ID,
		Usage: Usage{
			InputTokens:         msg.Usage.InputTokens,
			OutputTokens:        msg.Usage.OutputTokens,
			CacheReadTokens:     msg.Usage.CacheReadInputTokens,
			CacheCreationTokens: msg.Usage.CacheCreationInputTokens,
		},
	}
}

func classifyAPIError(e *anthropic.Error) Result {
	res := Result{
		HTTPStatus:        e.StatusCode,
		ErrorType:         string(e.Type()),
		ErrorMessage:      e.Message,
		UpstreamRequestID: e.RequestID,
	}
	if res.ErrorMessage == "" {
		res.ErrorMessage = http.StatusText(e.StatusCode)
	}
	switch s := e.StatusCode; {
	case s == http.StatusTooManyRequests && isSpendLimit(e):
		res.Outcome = SpendLimited
	case s == http.StatusTooManyRequests:
		res.Outcome = RateLimited
	case s == http.StatusUnauthorized || s == http.StatusForbidden || s == http.StatusPaymentRequired:
		res.Outcome = AuthFailed
	case s >= 500 || s == http.StatusRequestTimeout: // 5xx includes 529 overloaded_error
		res.Outcome = UpstreamError
	default:
		res.Outcome = ClientError
	}
	return res
}

// isSpendLimit recognises the spend-cap flavours of 429 (enforced,
// contract and linked-organization spend limits), which the API reports in
// error.details.error_code.
func isSpendLimit(e *anthropic.Error) bool {
	return strings.Contains(e.Details.ErrorCode, "spend_limit_reached") ||
		strings.Contains(e.RawJSON(), "spend_limit_reached")
}
