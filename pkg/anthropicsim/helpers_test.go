package anthropicsim_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
)

const model = "claude-sim-1"

func newClock() *fakeclock.Clock { return fakeclock.New(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)) }

type env struct {
	sim   *anthropicsim.Server
	srv   *httptest.Server
	clock *fakeclock.Clock
	ctl   map[string]string // the header the /sim/ control endpoints need
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := newClock()
	sim := anthropicsim.New(anthropicsim.Config{Now: c.Now})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &env{sim: sim, srv: srv, clock: c, ctl: map[string]string{"Authorization": "Bearer " + sim.ControlToken()}}
}

// client is the official SDK pointed at the simulator, with its retries off as
// the orchestrator uses it.
func (e *env) client(key string) anthropic.Client {
	return anthropic.NewClient(option.WithBaseURL(e.srv.URL), option.WithAPIKey(key), option.WithMaxRetries(0))
}

func params(prompt string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	}
}

// send makes one SDK call and returns the message, the raw HTTP response
// (success or API error; nil on a transport error) and the error.
func (e *env) send(t *testing.T, key string, p anthropic.MessageNewParams) (*anthropic.Message, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var raw *http.Response
	c := e.client(key)
	msg, err := c.Messages.New(ctx, p, option.WithResponseInto(&raw))
	if apierr, ok := asAPIError(err); ok {
		raw = apierr.Response
	}
	return msg, raw, err
}

// ok sends p and requires success.
func (e *env) ok(t *testing.T, key string, p anthropic.MessageNewParams) (*anthropic.Message, http.Header) {
	t.Helper()
	msg, raw, err := e.send(t, key, p)
	require.NoError(t, err)
	return msg, raw.Header
}

// fail sends p and requires an API error with status.
func (e *env) fail(t *testing.T, key string, p anthropic.MessageNewParams, status int) *anthropic.Error {
	t.Helper()
	_, _, err := e.send(t, key, p)
	apierr, ok := asAPIError(err)
	require.Truef(t, ok, "want *anthropic.Error, got %v", err)
	require.Equal(t, status, apierr.StatusCode, apierr.Error())
	require.True(t, strings.HasPrefix(apierr.RequestID, "req_sim_"), "request id %q", apierr.RequestID)
	return apierr
}

func asAPIError(err error) (*anthropic.Error, bool) {
	if err == nil {
		return nil, false
	}
	var apierr *anthropic.Error
	ok := errors.As(err, &apierr)
	return apierr, ok
}

// resetAt parses an anthropic-ratelimit-*-reset header.
func resetAt(t *testing.T, h http.Header, name string) time.Time {
	t.Helper()
	v := h.Get("anthropic-ratelimit-" + name + "-reset")
	require.NotEmpty(t, v, name+"-reset header")
	ts, err := time.Parse(time.RFC3339, v)
	require.NoError(t, err)
	return ts
}

func newServer(t *testing.T, sim *anthropicsim.Server) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
