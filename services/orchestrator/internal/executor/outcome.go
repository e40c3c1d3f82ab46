package executor

import (
	"time"

	"github.com/switchyard-dev/switchyard/pkg/secret"
)

// Outcome classifies one call.
type Outcome int

// The outcomes of docs/architecture.md's outcome table.
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
	// NotSent means the request never left the process: the SDK refused to
	// build or send it. Like ClientError it is the task's fault, not the
	// account's: no breaker count and no failover.
	NotSent
)

var outcomeNames = map[Outcome]string{
	Success: "success", RateLimited: "rate_limited", SpendLimited: "spend_limited", AuthFailed: "auth_failed",
	UpstreamError: "upstream_error", ClientError: "client_error", Cancelled: "cancelled", NotSent: "not_sent",
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
	// OnText, when set, receives each text delta as it arrives. It runs on
	// the calling goroutine between reads of the stream, so it must be quick.
	OnText func(delta string)
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

// Result is what one call produced. Every string that came from the
// upstream (error type and message, ids, model, stop reason) is scrubbed of
// anything key-shaped, stripped of control characters and cut to its limit
// (see the Max* constants); every number is within sane bounds, and
// Warnings says what had to be clamped.
type Result struct {
	Outcome    Outcome
	HTTPStatus int
	Text       string
	Model      string
	StopReason string
	Usage      Usage
	RateLimit  RateLimit
	ErrorType  string
	// ErrorMessage is for people: it may be cut, and it never carries a key.
	ErrorMessage string
	// UpstreamRequestID is the upstream's request-id header.
	UpstreamRequestID string
	// MessageID is the id of the message the upstream started (msg_...),
	// empty when none was.
	MessageID string
	// Warnings lists upstream values that were implausible and clamped
	// (a negative or huge token count, a retry-after of days, ...).
	Warnings []string
	Duration time.Duration
}
