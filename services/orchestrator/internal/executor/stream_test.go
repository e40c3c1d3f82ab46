package executor_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

func TestLargeMaxTokensStreamAndUsageMatchesTheUpstream(t *testing.T) {
	c, sim := newClient(t)
	req := request("sk-ant-sim-big")
	req.Model, req.MaxTokens = "claude-opus-4-5", 32_000 // the SDK refuses this unstreamed
	req.System = "You are a git master."
	var deltas []string
	req.OnText = func(d string) { deltas = append(deltas, d) }

	res := c.Call(context.Background(), req)
	require.Equal(t, executor.Success, res.Outcome, res.ErrorMessage)
	require.Greater(t, len(deltas), 1, "text arrives as it is produced")
	require.Equal(t, res.Text, strings.Join(deltas, ""))
	require.True(t, strings.HasPrefix(res.MessageID, "msg_sim_"), res.MessageID)
	require.True(t, strings.HasPrefix(res.UpstreamRequestID, "req_sim_"), res.UpstreamRequestID)
	u := sim.Usage("sk-ant-sim-big")
	require.Equal(t, executor.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CacheReadTokens: u.CacheReadTokens, CacheCreationTokens: u.CacheCreationTokens}, res.Usage)
	require.Positive(t, res.Usage.CacheCreationTokens)
	require.Empty(t, res.Warnings)
}

func TestMidStreamFailures(t *testing.T) {
	c, sim := newClient(t)
	for _, tc := range []struct {
		failure anthropicsim.StreamFailure
		errType string
	}{
		{anthropicsim.StreamOverloaded, "overloaded_error"},
		{anthropicsim.StreamAPIError, "api_error"},
		{anthropicsim.StreamCut, "connection_error"},
	} {
		t.Run(string(tc.failure), func(t *testing.T) {
			key := "sk-ant-sim-mid-" + string(tc.failure)
			sim.SetFault(key, anthropicsim.Fault{StreamFailure: tc.failure, StreamFailAfter: 1})
			var got string
			req := request(key)
			req.OnText = func(d string) { got += d }
			res := c.Call(context.Background(), req)
			require.Equal(t, executor.UpstreamError, res.Outcome, "%+v", res)
			require.True(t, res.Outcome.Retryable())
			require.Equal(t, tc.errType, res.ErrorType)
			require.NotEmpty(t, res.ErrorMessage)
			require.NotEmpty(t, got, "one delta arrived before the failure")
			require.Equal(t, sim.Usage(key).InputTokens, res.Usage.InputTokens, "the usage the upstream reported is kept")
			require.Positive(t, res.Usage.InputTokens)
		})
	}
}

func TestALocallyRefusedRequestIsNotSent(t *testing.T) {
	c := executor.New(executor.Config{BaseURL: "http://bad host:1/"})
	res := c.Call(context.Background(), request("sk-ant-sim-ok"))
	require.Equal(t, executor.NotSent, res.Outcome, "%+v", res)
	require.False(t, res.Outcome.Retryable(), "another account would be refused the same way")
	require.Zero(t, res.HTTPStatus)
	require.Contains(t, res.ErrorMessage, "could not be sent")
}

func TestCancellationMidStream(t *testing.T) {
	c, sim := newClient(t)
	sim.SetFault("slow", anthropicsim.Fault{StreamDelay: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := request("slow")
	req.OnText = func(string) { cancel() }
	res := c.Call(ctx, req)
	require.Equal(t, executor.Cancelled, res.Outcome, "%+v", res)
	require.Positive(t, res.Usage.InputTokens)
}

// hostile answers with a stream or an error that puts the caller's key
// everywhere it can and reports absurd numbers.
func hostile(t *testing.T, key string, status int) *executor.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("request-id", "req_"+key)
		w.Header().Set("retry-after", "99999999999999999")
		w.Header().Set("anthropic-ratelimit-requests-limit", "99999999999999999")
		if status != http.StatusOK {
			w.Header().Set("content-type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"type":"error","error":{"type":"%s_error","message":"bad key %s\n%s"}}`, key, key, strings.Repeat("x", 1<<20))
			return
		}
		w.Header().Set("content-type", "text/event-stream")
		events := []string{
			`{"type":"message_start","message":{"id":"msg_` + key + `","type":"message","role":"assistant","model":"model-` + key + `","content":[],"stop_reason":null,"usage":{"input_tokens":-5,"output_tokens":1}}}`,
			`{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`,
			`{"type":"content_block_stop","index":0}`,
			`{"type":"message_delta","delta":{"stop_reason":"end_turn ` + key + `"},"usage":{"output_tokens":900000000000,"cache_read_input_tokens":-1}}`,
			`{"type":"message_stop"}`,
		}
		for _, e := range events {
			var typ struct{ Type string }
			typ.Type = e[len(`{"type":"`) : strings.Index(e[9:], `"`)+9]
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ.Type, e)
		}
	}))
	t.Cleanup(srv.Close)
	return executor.New(executor.Config{BaseURL: srv.URL})
}

func TestUpstreamFieldsAreScrubbedAndBounded(t *testing.T) {
	const key = "sk-ant-api03-hostilecanary0123456789"
	t.Run("stream", func(t *testing.T) {
		res := hostile(t, key, http.StatusOK).Call(context.Background(), request(key))
		require.Equal(t, executor.Success, res.Outcome, "%+v", res)
		for _, s := range []string{res.Model, res.StopReason, res.MessageID, res.UpstreamRequestID, fmt.Sprintf("%+v", res)} {
			require.NotContains(t, s, "hostilecanary")
		}
		require.Zero(t, res.Usage.InputTokens, "negative input tokens are clamped to 0")
		require.Zero(t, res.Usage.CacheReadTokens)
		require.EqualValues(t, executor.MaxTokenCount, res.Usage.OutputTokens)
		require.Len(t, res.Warnings, 4, "%q", res.Warnings) // input, output, cache read, retry-after
		require.Equal(t, executor.MaxRetryAfter, res.RateLimit.RetryAfter)
	})
	t.Run("error", func(t *testing.T) {
		res := hostile(t, key, http.StatusServiceUnavailable).Call(context.Background(), request(key))
		require.Equal(t, executor.UpstreamError, res.Outcome, "%+v", res)
		require.NotContains(t, fmt.Sprintf("%+v", res), "hostilecanary")
		require.LessOrEqual(t, len(res.ErrorMessage), executor.MaxErrorMessageLen)
		require.LessOrEqual(t, len(res.ErrorType), executor.MaxLabelLen)
		require.NotContains(t, res.ErrorMessage, "\n")
	})
}

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
	}{
		{"", 10, ""},
		{"plain", 10, "plain"},
		{"two\nlines\ttab", 20, "two lines tab"},
		{"nul\x00bell\x07", 20, "nulbell"},
		{"bad \xff utf8", 20, "bad \uFFFD utf8"},
		{"key sk-ant-api03-abcdefghijkl here", 40, "key [REDACTED] here"},
		{"sk-ant-api03-abcdefghijkl", 12, "[REDACTED]"}, // scrubbed before it is cut
		{strings.Repeat("é", 10), 7, "éé…"},             // two 2-byte runes and the 3-byte ellipsis
	} {
		require.Equal(t, tc.want, executor.Clean(tc.in, tc.limit), tc.in)
	}
}
