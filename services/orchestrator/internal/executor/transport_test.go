package executor_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// connCounter counts a server's open connections and the most ever open
// at once.
type connCounter struct {
	mu        sync.Mutex
	open, max int
}

func (c *connCounter) track(_ net.Conn, st http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch st {
	case http.StateNew:
		c.open++
		c.max = max(c.max, c.open)
	case http.StateClosed, http.StateHijacked:
		c.open--
	}
}

func (c *connCounter) peak() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

// Many concurrent calls on the default client never open more than
// MaxConnsPerHost connections: the calls beyond it wait for one and then
// succeed. The server holds every request until the test releases it, so
// the limit is what is measured, not how fast calls end.
func TestMaxConnsPerHostHolds(t *testing.T) {
	const limit, calls = 3, 24
	sim := anthropicsim.New(anthropicsim.Config{})
	arrived := make(chan struct{}, calls)
	release := make(chan struct{})
	conns := &connCounter{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		sim.ServeHTTP(w, r)
	}))
	srv.Config.ConnState = conns.track
	srv.Start()
	t.Cleanup(srv.Close)
	c := executor.New(executor.Config{BaseURL: srv.URL, MaxConnsPerHost: limit})

	results := make(chan executor.Result, calls)
	for range calls {
		go func() { results <- c.Call(context.Background(), request("sk-ant-sim-tier4-conns")) }()
	}
	// limit requests are in at once: the limit is not a serialisation.
	for range limit {
		<-arrived
	}
	for range calls - limit {
		release <- struct{}{}
		<-arrived // the next call got a connection only once one was free
	}
	for range limit {
		release <- struct{}{}
	}
	for range calls {
		res := <-results
		require.Equal(t, executor.Success, res.Outcome, res.ErrorMessage)
	}
	require.LessOrEqual(t, conns.peak(), limit, "connections open at once")
	require.Equal(t, limit, conns.peak(), "every allowed connection was used")
}

func TestTransportDefaults(t *testing.T) {
	tr := executor.NewTransport(executor.TransportConfig{})
	require.Equal(t, executor.DefaultMaxConnsPerHost, tr.MaxConnsPerHost)
	require.Equal(t, executor.DefaultMaxIdleConnsPerHost, tr.MaxIdleConnsPerHost)
	require.Equal(t, executor.DefaultIdleConnTimeout, tr.IdleConnTimeout)
	require.Equal(t, executor.DefaultTLSHandshakeTimeout, tr.TLSHandshakeTimeout)
	require.Equal(t, executor.DefaultResponseHeaderTimeout, tr.ResponseHeaderTimeout)
	require.True(t, tr.ForceAttemptHTTP2)
	require.NotNil(t, tr.Proxy)

	small := executor.NewTransport(executor.TransportConfig{MaxConnsPerHost: 4})
	require.Equal(t, 4, small.MaxConnsPerHost)
	require.Equal(t, 4, small.MaxIdleConnsPerHost, "idle connections never exceed the limit")
}

// The response-header timeout cuts an upstream that never answers, and not
// a stream that has started and runs longer than it.
func TestResponseHeaderTimeoutSparesLongStreams(t *testing.T) {
	sim := anthropicsim.New(anthropicsim.Config{})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(stop) }) // runs first
	hc := &http.Client{Transport: executor.NewTransport(executor.TransportConfig{ResponseHeaderTimeout: 50 * time.Millisecond})}

	// A paced stream: its deltas arrive well after the header timeout.
	key := "sk-ant-sim-tier4-paced"
	sim.SetFault(key, anthropicsim.Fault{StreamDelay: 30 * time.Millisecond})
	res := executor.New(executor.Config{BaseURL: srv.URL, HTTPClient: hc}).Call(context.Background(), request(key))
	require.Equal(t, executor.Success, res.Outcome, res.ErrorMessage)
	require.Greater(t, res.Duration, 50*time.Millisecond, "the stream outlived the header timeout")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only if the header timeout failed
	defer cancel()
	res = executor.New(executor.Config{BaseURL: hang.URL, HTTPClient: hc}).Call(ctx, request(key))
	require.Equal(t, executor.UpstreamError, res.Outcome)
	require.Contains(t, res.ErrorMessage, "timeout awaiting response headers")
}
