package executor

import (
	"net"
	"net/http"
	"time"
)

// Upstream transport defaults. Every model call holds one connection for
// as long as its answer streams (HTTP/1.1; over HTTP/2 calls share
// connections), so MaxConnsPerHost is also the bound on the file
// descriptors the upstream can take: a call beyond it waits for a
// connection, within its attempt timeout, instead of opening another.
const (
	// DefaultMaxConnsPerHost bounds the connections to the upstream, in use
	// and idle.
	DefaultMaxConnsPerHost = 512
	// DefaultMaxIdleConnsPerHost is how many idle connections are kept for
	// reuse; the rest are closed when their call ends.
	DefaultMaxIdleConnsPerHost = 128
	// DefaultIdleConnTimeout closes a connection idle this long.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultDialTimeout bounds a TCP connect, and DefaultKeepAlive is the
	// TCP keep-alive period, which finds a peer that vanished during a long
	// stream.
	DefaultDialTimeout = 10 * time.Second
	DefaultKeepAlive   = 30 * time.Second
	// DefaultTLSHandshakeTimeout bounds the TLS handshake.
	DefaultTLSHandshakeTimeout = 10 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for the response's
	// headers once the request is written. It does not bound the body: a
	// stream that has started may run for as long as the attempt timeout
	// allows (every call is streamed, and the Messages API sends the
	// headers before the first event), so it cuts only an upstream that
	// accepted the request and never answered.
	DefaultResponseHeaderTimeout = 2 * time.Minute
)

// TransportConfig tunes NewTransport. Zero values take the defaults above.
type TransportConfig struct {
	MaxConnsPerHost       int
	MaxIdleConnsPerHost   int
	IdleConnTimeout       time.Duration
	DialTimeout           time.Duration
	KeepAlive             time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
}

// NewTransport returns the transport of the upstream client: proxies from
// the environment as http.DefaultTransport does, HTTP/2 when the upstream
// offers it, and every connection and timeout bounded. MaxIdleConnsPerHost
// never exceeds MaxConnsPerHost.
func NewTransport(c TransportConfig) *http.Transport {
	if c.MaxConnsPerHost <= 0 {
		c.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if c.MaxIdleConnsPerHost <= 0 {
		c.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	c.MaxIdleConnsPerHost = min(c.MaxIdleConnsPerHost, c.MaxConnsPerHost)
	if c.IdleConnTimeout <= 0 {
		c.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.TLSHandshakeTimeout <= 0 {
		c.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	dialer := &net.Dialer{Timeout: c.DialTimeout, KeepAlive: c.KeepAlive}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxConnsPerHost:       c.MaxConnsPerHost,
		MaxIdleConns:          c.MaxIdleConnsPerHost, // one upstream host
		MaxIdleConnsPerHost:   c.MaxIdleConnsPerHost,
		IdleConnTimeout:       c.IdleConnTimeout,
		TLSHandshakeTimeout:   c.TLSHandshakeTimeout,
		ResponseHeaderTimeout: c.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}
}
