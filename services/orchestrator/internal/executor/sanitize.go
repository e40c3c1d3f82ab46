package executor

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// Bounds on what the upstream sends. Nothing the upstream says is trusted
// to be small or well-formed: a misbehaving proxy, a compromised endpoint or
// a base URL pointed at the wrong server must not be able to grow a
// response, an activity, a ledger row, a log line or a span without bound,
// or to place a key in any of them.
const (
	// MaxErrorBodyBytes bounds the body of an HTTP error answer.
	MaxErrorBodyBytes = 64 << 10
	// MaxStreamBytes bounds a streamed answer, events and all; a model's
	// largest output is a few MiB of events.
	MaxStreamBytes = 32 << 20
	// MaxErrorMessageLen bounds an upstream error message.
	MaxErrorMessageLen = 1024
	// MaxLabelLen bounds the error type, ids, model name and stop reason.
	MaxLabelLen = 128
	// MaxTokenCount bounds each token count: well above any model's context
	// window and output limit.
	MaxTokenCount = 10_000_000
	// MaxRetryAfter bounds a retry-after: longer waits are clamped.
	MaxRetryAfter = time.Hour
	// maxHeaderCount bounds a rate-limit header's count.
	maxHeaderCount = 1_000_000_000_000
)

// errBodyTooLarge ends a response body read past its limit.
var errBodyTooLarge = errors.New("the upstream's response exceeded its size limit")

// limitedBody fails reads past left bytes instead of truncating silently,
// so an oversized stream is an error rather than a short answer.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// sanitize bounds and scrubs every upstream-sourced field of res in place.
func sanitize(res *Result) {
	res.ErrorType = Clean(res.ErrorType, MaxLabelLen)
	res.ErrorMessage = Clean(res.ErrorMessage, MaxErrorMessageLen)
	res.UpstreamRequestID = Clean(res.UpstreamRequestID, MaxLabelLen)
	res.MessageID = Clean(res.MessageID, MaxLabelLen)
	res.Model = Clean(res.Model, MaxLabelLen)
	res.StopReason = Clean(res.StopReason, MaxLabelLen)
	for _, c := range []struct {
		name string
		n    *int64
	}{
		{"input_tokens", &res.Usage.InputTokens},
		{"output_tokens", &res.Usage.OutputTokens},
		{"cache_read_input_tokens", &res.Usage.CacheReadTokens},
		{"cache_creation_input_tokens", &res.Usage.CacheCreationTokens},
	} {
		if w := clamp(c.name, c.n, MaxTokenCount); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
	}
	rl := &res.RateLimit
	if rl.RetryAfter > MaxRetryAfter {
		res.Warnings = append(res.Warnings, fmt.Sprintf("retry-after of %s clamped to %s", rl.RetryAfter, MaxRetryAfter))
		rl.RetryAfter = MaxRetryAfter
	}
	for _, n := range []*int64{&rl.RequestsLimit, &rl.RequestsRemaining, &rl.InputTokensLimit,
		&rl.InputTokensRemaining, &rl.OutputTokensLimit, &rl.OutputTokensRemaining} {
		clamp("", n, maxHeaderCount)
	}
}

// clamp bounds *n to [0, hi] and describes what it changed ("" if nothing).
func clamp(name string, n *int64, hi int64) string {
	v := *n
	switch {
	case v < 0:
		*n = 0
	case v > hi:
		*n = hi
	default:
		return ""
	}
	return fmt.Sprintf("%s of %d is implausible; recorded as %d", name, v, *n)
}

// Clean makes upstream text safe to store and show: valid UTF-8, no control
// characters (newlines and tabs become spaces), nothing key-shaped, at most
// limit bytes (cut on a rune boundary, marked with an ellipsis).
func Clean(s string, limit int) string {
	if s == "" {
		return ""
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t' || r == '\r':
			return ' '
		case unicode.IsControl(r):
			return -1
		}
		return r
	}, s)
	// Scrub before cutting, so a cut cannot split a key into pieces that no
	// longer look like one.
	s = secret.Scrub(s)
	return validate.Truncate(s, limit)
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
		RetryAfter:            retryAfter(h),
	}
}

// retryAfter reads the header's whole seconds, capped before the multiply
// so a huge value cannot overflow into a negative duration.
func retryAfter(h http.Header) time.Duration {
	secs := headerInt(h, "retry-after")
	if limit := int64((MaxRetryAfter / time.Second) + 1); secs > limit {
		secs = limit // sanitize clamps it to MaxRetryAfter and says so
	}
	return time.Duration(secs) * time.Second
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
