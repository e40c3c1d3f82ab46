package executor_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

func newClient(t *testing.T) (*executor.Client, *anthropicsim.Server) {
	t.Helper()
	sim := anthropicsim.New(anthropicsim.Config{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return executor.New(executor.Config{BaseURL: srv.URL}), sim
}

func request(key string) executor.Request {
	return executor.Request{APIKey: secret.New(key), Model: "claude-haiku-4-5", MaxTokens: 512, Prompt: "Say hello", UserID: "u-1"}
}

func TestSuccessCarriesTextUsageAndHeaders(t *testing.T) {
	c, _ := newClient(t)
	req := request("sk-ant-sim-tier2-ok")
	req.System = "You are terse. " + string(make([]byte, 0))
	res := c.Call(context.Background(), req)
	require.Equal(t, executor.Success, res.Outcome, res.ErrorMessage)
	require.Equal(t, 200, res.HTTPStatus)
	require.Contains(t, res.Text, "Simulated answer")
	require.Equal(t, "claude-haiku-4-5", res.Model)
	require.Equal(t, "end_turn", res.StopReason)
	require.Positive(t, res.Usage.OutputTokens)
	require.EqualValues(t, 1000, res.RateLimit.RequestsLimit, "tier2 limits come back in the headers")
	require.EqualValues(t, 999, res.RateLimit.RequestsRemaining)
	require.EqualValues(t, 450_000, res.RateLimit.InputTokensLimit)
	require.False(t, res.RateLimit.RequestsReset.IsZero())
	require.NotEmpty(t, res.UpstreamRequestID)
	require.Positive(t, res.Usage.CacheCreationTokens, "the system prompt is sent cacheable")

	again := c.Call(context.Background(), req)
	require.Equal(t, res.Usage.CacheCreationTokens, again.Usage.CacheReadTokens, "the second call reads the cache")
}

func TestClassification(t *testing.T) {
	c, sim := newClient(t)
	sim.SetFault("fault-400", anthropicsim.Fault{Status: 400})
	sim.SetFault("fault-413", anthropicsim.Fault{Status: 413})
	cases := []struct {
		key     string
		outcome executor.Outcome
		status  int
		errType string
	}{
		{"sk-ant-sim-429-x", executor.RateLimited, 429, "rate_limit_error"},
		{"sk-ant-sim-spend-x", executor.SpendLimited, 429, "rate_limit_error"},
		{"sk-ant-sim-401-x", executor.AuthFailed, 401, "authentication_error"},
		{"sk-ant-sim-402-x", executor.AuthFailed, 402, "billing_error"},
		{"sk-ant-sim-403-x", executor.AuthFailed, 403, "permission_error"},
		{"sk-ant-sim-500-x", executor.UpstreamError, 500, "api_error"},
		{"sk-ant-sim-529-x", executor.UpstreamError, 529, "overloaded_error"},
		{"fault-400", executor.ClientError, 400, ""},
		{"fault-413", executor.ClientError, 413, ""},
		{"sk-ant-sim-drop-x", executor.UpstreamError, 0, "connection_error"},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			res := c.Call(context.Background(), request(tc.key))
			require.Equal(t, tc.outcome, res.Outcome, "%+v", res)
			require.Equal(t, tc.status, res.HTTPStatus)
			if tc.errType != "" {
				require.Equal(t, tc.errType, res.ErrorType)
			}
			require.NotEmpty(t, res.ErrorMessage)
			require.Equal(t, tc.outcome.Retryable(), tc.outcome != executor.ClientError)
		})
	}
}

func TestRateLimitedCarriesRetryAfter(t *testing.T) {
	c, _ := newClient(t)
	res := c.Call(context.Background(), request("sk-ant-sim-429-x"))
	require.Equal(t, 30*time.Second, res.RateLimit.RetryAfter)
}

func TestCapacity429FromTheBuckets(t *testing.T) {
	c, _ := newClient(t)
	req := request("sk-ant-sim-tier1-small")
	req.MaxTokens = 9000 // tier1 allows 8,000 output tokens per minute
	res := c.Call(context.Background(), req)
	require.Equal(t, executor.RateLimited, res.Outcome)
	require.Positive(t, res.RateLimit.RetryAfter)
	require.EqualValues(t, 8000, res.RateLimit.OutputTokensLimit)
}

func TestCancellationIsNotAnUpstreamError(t *testing.T) {
	c, _ := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan executor.Result, 1)
	go func() { done <- c.Call(ctx, request("sk-ant-sim-slow-x")) }()
	cancel()
	res := <-done
	require.Equal(t, executor.Cancelled, res.Outcome)
	require.False(t, res.Outcome.Retryable())
}

func TestErrorMessagesAreScrubbed(t *testing.T) {
	const key = "sk-ant-api03-secretvalue123456"
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key ` + key + `"}}`))
	}))
	t.Cleanup(echo.Close)
	c := executor.New(executor.Config{BaseURL: echo.URL})
	res := c.Call(context.Background(), request(key))
	require.Equal(t, executor.AuthFailed, res.Outcome)
	require.Contains(t, res.ErrorMessage, "invalid x-api-key")
	require.NotContains(t, res.ErrorMessage, "secretvalue123456")
}
