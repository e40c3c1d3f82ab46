package anthropicsim_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

func TestScriptedStatusFaults(t *testing.T) {
	for _, tc := range []struct {
		status int
		typ    anthropic.ErrorType
	}{
		{400, anthropic.ErrorTypeInvalidRequestError},
		{401, anthropic.ErrorTypeAuthenticationError},
		{402, anthropic.ErrorTypeBillingError},
		{403, anthropic.ErrorTypePermissionError},
		{500, anthropic.ErrorTypeAPIError},
		{529, anthropic.ErrorTypeOverloadedError},
	} {
		t.Run(itoa(int64(tc.status)), func(t *testing.T) {
			e := newEnv(t)
			const key = "sk-ant-test-fault"
			e.sim.SetFault(key, anthropicsim.Fault{Status: tc.status})

			apierr := e.fail(t, key, params("hi"), tc.status)
			require.Equal(t, tc.typ, apierr.Type())
			require.NotEmpty(t, apierr.Message)
			require.Empty(t, apierr.Response.Header.Get("retry-after"))

			e.fail(t, key, params("hi"), tc.status) // Count 0: until cleared
			e.ok(t, "sk-ant-test-unaffected", params("hi"))
			require.Equal(t, anthropicsim.KeyStats{Requests: 2, Faulted: 2}, e.sim.Stats(key))
		})
	}
}

func TestScriptedRateLimit(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-test-429"
	e.sim.SetFault(key, anthropicsim.Fault{Status: 429, RetryAfter: 6500 * time.Millisecond, Count: 1})

	apierr := e.fail(t, key, params("hi"), 429)
	require.Equal(t, anthropic.ErrorTypeRateLimitError, apierr.Type())
	require.Empty(t, apierr.ErrorCode())
	h := apierr.Response.Header
	require.Equal(t, "7", h.Get("retry-after"))
	require.Equal(t, "10000", h.Get("anthropic-ratelimit-requests-limit"))
	require.Equal(t, "0", h.Get("anthropic-ratelimit-requests-remaining"))
	require.Equal(t, e.clock.Now().Add(7*time.Second), resetAt(t, h, "requests"))
	require.Equal(t, "10000000", h.Get("anthropic-ratelimit-input-tokens-remaining"), "a fault consumes no capacity")

	_, h = e.ok(t, key, params("hi")) // the fault was for one request
	require.Equal(t, "9999", h.Get("anthropic-ratelimit-requests-remaining"))
	require.Equal(t, anthropicsim.KeyStats{Requests: 2, Succeeded: 1, RateLimited: 1, Faulted: 1}, e.sim.Stats(key))
}

func TestScriptedRateLimitDefaultRetryAfter(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("k", anthropicsim.Fault{Status: 429})
	apierr := e.fail(t, "k", params("hi"), 429)
	require.Equal(t, "1", apierr.Response.Header.Get("retry-after"))
}

func TestSpendLimitFault(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("k", anthropicsim.Fault{Status: 429, SpendLimit: true})

	apierr := e.fail(t, "k", params("hi"), 429)
	require.Equal(t, anthropic.ErrorTypeRateLimitError, apierr.Type())
	require.Equal(t, anthropic.ErrorCodeEnforcedSpendLimitReached, apierr.ErrorCode())
	require.Contains(t, apierr.Message, "enforced_spend_limit_reached")
	require.Equal(t, "60", apierr.Response.Header.Get("retry-after"))
	require.Equal(t, anthropicsim.KeyStats{Requests: 1, RateLimited: 1, Faulted: 1}, e.sim.Stats("k"))
}

func TestFaultCountAndPrecedence(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("a", anthropicsim.Fault{Status: 500, Count: 2})
	e.fail(t, "a", params("hi"), 500)
	e.fail(t, "a", params("hi"), 500)
	e.ok(t, "a", params("hi"))
	require.Equal(t, anthropicsim.KeyStats{Requests: 3, Succeeded: 1, Faulted: 2}, e.sim.Stats("a"))

	// A key's own fault beats AllKeys, which beats the key prefix.
	e.sim.SetFault(anthropicsim.AllKeys, anthropicsim.Fault{Status: 529})
	e.sim.SetFault("a", anthropicsim.Fault{Status: 500})
	e.fail(t, "a", params("hi"), 500)
	e.fail(t, "b", params("hi"), 529)
	e.fail(t, "sk-ant-sim-401-x", params("hi"), 529)

	e.sim.SetFault("a", anthropicsim.Fault{}) // a zero Fault removes a's own fault
	e.fail(t, "a", params("hi"), 529)

	e.sim.ClearFaults()
	e.ok(t, "a", params("hi"))
	e.ok(t, "b", params("hi"))
	e.fail(t, "sk-ant-sim-401-x", params("hi"), 401) // prefixes survive ClearFaults
}

func TestDropClosesConnection(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("k", anthropicsim.Fault{Drop: true, Count: 1})

	_, raw, err := e.send(t, "k", params("hi"))
	require.Error(t, err)
	_, isAPI := asAPIError(err)
	require.False(t, isAPI, "a dropped connection is a transport error: %v", err)
	require.Nil(t, raw)

	e.ok(t, "k", params("hi"))
	require.Equal(t, anthropicsim.KeyStats{Requests: 2, Succeeded: 1, Faulted: 1}, e.sim.Stats("k"))
}

func TestDelayHonoursCancellation(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("k", anthropicsim.Fault{Delay: time.Hour})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	c := e.client("k")
	_, err := c.Messages.New(ctx, params("hi"))
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Close waits for every handler: it returns only if the delayed one gave up.
	closed := make(chan struct{})
	go func() {
		e.srv.Close()
		close(closed)
	}()
	require.Eventually(t, func() bool {
		select {
		case <-closed:
			return true
		default:
			return false
		}
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, anthropicsim.KeyStats{Requests: 1, Faulted: 1}, e.sim.Stats("k"))
}

func TestDelayThenStatus(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("k", anthropicsim.Fault{Delay: time.Millisecond, Status: 529, Count: 1})
	e.fail(t, "k", params("hi"), 529)
	e.ok(t, "k", params("hi"))
}

func TestKeyPrefixErrors(t *testing.T) {
	for _, tc := range []struct {
		key        string
		status     int
		typ        anthropic.ErrorType
		retryAfter string
		code       anthropic.ErrorCode
	}{
		{"sk-ant-sim-429-a", 429, anthropic.ErrorTypeRateLimitError, "30", ""},
		{"sk-ant-sim-spend-a", 429, anthropic.ErrorTypeRateLimitError, "60", anthropic.ErrorCodeEnforcedSpendLimitReached},
		{"sk-ant-sim-401-a", 401, anthropic.ErrorTypeAuthenticationError, "", ""},
		{"sk-ant-sim-402-a", 402, anthropic.ErrorTypeBillingError, "", ""},
		{"sk-ant-sim-403-a", 403, anthropic.ErrorTypePermissionError, "", ""},
		{"sk-ant-sim-500-a", 500, anthropic.ErrorTypeAPIError, "", ""},
		{"sk-ant-sim-529-a", 529, anthropic.ErrorTypeOverloadedError, "", ""},
	} {
		t.Run(tc.key, func(t *testing.T) {
			e := newEnv(t)
			for range 3 { // always, not once
				apierr := e.fail(t, tc.key, params("hi"), tc.status)
				require.Equal(t, tc.typ, apierr.Type())
				require.Equal(t, tc.retryAfter, apierr.Response.Header.Get("retry-after"))
				require.Equal(t, tc.code, apierr.ErrorCode())
			}
			st := e.sim.Stats(tc.key)
			require.EqualValues(t, 3, st.Faulted)
			require.Zero(t, st.CapacityRejected)
		})
	}
}

func TestKeyPrefixDrop(t *testing.T) {
	e := newEnv(t)
	_, _, err := e.send(t, "sk-ant-sim-drop-a", params("hi"))
	require.Error(t, err)
	_, isAPI := asAPIError(err)
	require.False(t, isAPI, err)
}

func TestKeyPrefixSlow(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-sim-slow-a"

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c := e.client(key)
	_, err := c.Messages.New(ctx, params("hi"))
	require.True(t, errors.Is(err, context.DeadlineExceeded), "want a timeout before the 2s delay ends, got %v", err)

	if testing.Short() {
		return
	}
	msg, _ := e.ok(t, key, params("hi")) // waits the full 2s, then answers
	require.True(t, strings.HasPrefix(msg.Content[0].Text, "Simulated answer"))
	st := e.sim.Stats(key)
	require.EqualValues(t, 2, st.Faulted)
	require.EqualValues(t, 1, st.Succeeded)
}

func TestKeyPrefixTiers(t *testing.T) {
	e := newEnv(t)
	for key, limit := range map[string]string{
		"sk-ant-sim-tier1-a":  "50",
		"sk-ant-sim-tier2-a":  "1000",
		"sk-ant-sim-tier3-a":  "2000",
		"sk-ant-sim-tier4-a":  "4000",
		"sk-ant-sim-start-a":  "1000",
		"sk-ant-sim-build-a":  "5000",
		"sk-ant-sim-scale-a":  "10000",
		"sk-ant-sim-nosuch-a": "10000",
		"sk-ant-sim-tier1":    "10000", // no trailing dash: not a prefix
		"any-other-key":       "10000",
	} {
		_, h := e.ok(t, key, params("hi"))
		require.Equal(t, limit, h.Get("anthropic-ratelimit-requests-limit"), key)
	}
}
