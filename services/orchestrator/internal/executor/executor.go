// Package executor makes one model call through the official Anthropic Go
// SDK and classifies what the upstream answered, following the outcome
// table of DESIGN §2. It never retries: failover across accounts is the
// caller's job, so the SDK's own retries are off.
package executor

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/pkg/secret"
)

// Outcome classifies one call.
type Outcome int

// The outcomes of DESIGN §2.
const (
	// Success is a 2xx answer.
	Success Outcome = iota + 1
	// RateLimited is a 429 rate_limit_error: retry on another account.
	RateLimited
	// SpendLimited is a 429 caused by a spend cap: the account is exhausted
	// until its spend window resets; retry on another account.
	SpendLimited
	// AuthFailed is 401, 402 or 403: the key is unusable; retry elsewhere.
	AuthFailed
	// UpstreamError is 5xx, 529, a timeout or a connection error: counted
	// by the circuit breaker; retry elsewhere.
	UpstreamError
	// ClientError is 400, 404, 413 or another 4xx: the request itself is
	// wrong, so another account would fail the same way.
	ClientError
	// Cancelled means the caller cancelled or its deadline passed.
	Cancelled
)

var outcomeNames = map[Outcome]string{
	Success: "success", RateLimited: "rate_limited", SpendLimited: "spend_limited", AuthFailed: "auth_failed",
	UpstreamError: "upstream_error", ClientError: "client_error", Cancelled: "cancelled",
}

func (o Outcome) String() string {
	if n, ok := outcomeNames[o]; ok {
		return n
	}
	return "unknown"
}

// Retryable reports whether another account may succeed where this one did
// not.
func (o Outcome) Retryable() bool {
	switch o {
	case RateLimited, SpendLimited, AuthFailed, UpstreamError:
		return true
	}
	return false
}

// Request is one model call.
type Request struct {
	APIKey    secret.String
	Model     string
	MaxTokens int64
	System    string
	Prompt    string
	// UserID is passed upstream as metadata.user_id (an opaque id, for abuse
	// detection), when set.
	UserID string
}

// Usage is the token usage the upstream reported.
type Usage struct {
	InputTokens         int64
	OutputTokens        int64
	CacheReadTokens     int64
	CacheCreationTokens int64
}

// RateLimit is the upstream's anthropic-ratelimit-* and retry-after headers,
// parsed; zero values mean absent.
type RateLimit struct {
	RequestsLimit, RequestsRemaining         int64
	RequestsReset                            time.Time
	InputTokensLimit, InputTokensRemaining   int64
	InputTokensReset                         time.Time
	OutputTokensLimit, OutputTokensRemaining int64
	OutputTokensReset                        time.Time
	RetryAfter                               time.Duration
}

// Result is what one call produced. Error texts are scrubbed of anything
// key-shaped.
type Result struct {
	Outcome           Outcome
	HTTPStatus        int
	Text              string
	Model             string
	StopReason        string
	Usage             Usage
	RateLimit         RateLimit
	ErrorType         string
	ErrorMessage      string
	UpstreamRequestID string
	Duration          time.Duration
}

// Config configures a Client.
type Config struct {
	// BaseURL of the Messages API, e.g. https://api.anthropic.com or the
	// simulator's address.
	BaseURL string
	// HTTPClient defaults to a client with sane connection pooling.
	HTTPClient *http.Client
	// Tracer receives the SDK's client span for every call.
	Tracer trace.TracerProvider
}

// Client calls the Messages API.
type Client struct {
	sdk anthropic.Client
}

// New returns a client. The SDK's environment defaults (ANTHROPIC_API_KEY,
// ANTHROPIC_BASE_URL, ...) are ignored: the key comes with every request and
// the base URL from cfg, so nothing in the environment can silently redirect
// or re-key a call.
func New(cfg Config) *Client {
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: tr}
	}
	opts := []option.RequestOption{
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(cfg.BaseURL),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0),
		option.WithOpenTelemetryTracesContentMode(option.OpenTelemetryContentModeMetadataOnly),
	}
	if cfg.Tracer != nil {
		opts = append(opts, option.WithTracerProvider(cfg.Tracer))
	}
	return &Client{sdk: anthropic.NewClient(opts...)}
}

// Call makes one Messages API call and classifies the result. It does not
// return an error: every failure is an Outcome with details.
func (c *Client) Call(ctx context.Context, req Request) Result {
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
	var httpResp *http.Response
	msg, err := c.sdk.Messages.New(ctx, params, option.WithAPIKey(req.APIKey.Reveal()), option.WithResponseInto(&httpResp))
	res := classify(ctx, msg, err)
	res.Duration = time.Since(start)
	if httpResp != nil {
		res.RateLimit = parseRateLimit(httpResp.Header)
		if res.UpstreamRequestID == "" {
			res.UpstreamRequestID = httpResp.Header.Get("request-id")
		}
		if res.HTTPStatus == 0 {
			res.HTTPStatus = httpResp.StatusCode
		}
	}
	return res
}

func classify(ctx context.Context, msg *anthropic.Message, err error) Result {
	if err == nil {
		var text strings.Builder
		for _, block := range msg.Content {
			if block.Type == "text" {
				text.WriteString(block.Text)
			}
		}
		return Result{
			Outcome:           Success,
			HTTPStatus:        http.StatusOK,
			Text:              text.String(),
			Model:             string(msg.Model),
			StopReason:        string(msg.StopReason),
			UpstreamRequestID: msg.ID,
			Usage: Usage{
				InputTokens:         msg.Usage.InputTokens,
				OutputTokens:        msg.Usage.OutputTokens,
				CacheReadTokens:     msg.Usage.CacheReadInputTokens,
				CacheCreationTokens: msg.Usage.CacheCreationInputTokens,
			},
		}
	}
	var apiErr *anthropic.Error
	if errors.As(err, &apiErr) {
		return classifyAPIError(apiErr)
	}
	if ctx.Err() != nil {
		return Result{Outcome: Cancelled, ErrorType: "cancelled", ErrorMessage: ctx.Err().Error()}
	}
	// Anything else is a transport failure: refused or dropped connection,
	// a timeout of our own, a malformed response.
	return Result{Outcome: UpstreamError, ErrorType: "connection_error", ErrorMessage: secret.Scrub(err.Error())}
}

func classifyAPIError(e *anthropic.Error) Result {
	res := Result{
		HTTPStatus:        e.StatusCode,
		ErrorType:         string(e.Type()),
		ErrorMessage:      secret.Scrub(e.Message),
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

func parseRateLimit(h http.Header) RateLimit {
	return RateLimit{
		RequestsLimit:         headerInt(h, "anthropic-ratelimit-requests-limit"),
		RequestsRemaining:     headerInt(h, "anthropic-ratelimit-requests-remaining"),
		RequestsReset:         headerTime(h, "anthropic-ratelimit-requests-reset"),
		InputTokensLimit:      headerInt(h, "anthropic-ratelimit-input-tokens-limit"),
		InputTokensRemaining:  headerInt(h, "anthropic-ratelimit-input-tokens-remaining"),
		InputTokensReset:      headerTime(h, "anthropic-ratelimit-input-tokens-reset"),
		OutputTokensLimit:     headerInt(h, "anthropic-ratelimit-output-tokens-limit"),
		OutputTokensRemaining: headerInt(h, "anthropic-ratelimit-output-tokens-remaining"),
		OutputTokensReset:     headerTime(h, "anthropic-ratelimit-output-tokens-reset"),
		RetryAfter:            time.Duration(headerInt(h, "retry-after")) * time.Second,
	}
}

func headerInt(h http.Header, name string) int64 {
	v, err := strconv.ParseInt(strings.TrimSpace(h.Get(name)), 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

func headerTime(h http.Header, name string) time.Time {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(h.Get(name)))
	if err != nil {
		return time.Time{}
	}
	return t
}
