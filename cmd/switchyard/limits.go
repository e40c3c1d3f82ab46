package main

import (
	"flag"
	"strconv"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
)

// Transport limits every gRPC server takes (grpcserver.Limits). One set
// per command: under dev it applies to each of the three servers.
const (
	envGRPCMaxConnections    = "SWITCHYARD_GRPC_MAX_CONNECTIONS"
	envGRPCMaxStreamsPerConn = "SWITCHYARD_GRPC_MAX_CONCURRENT_STREAMS"
	envGRPCMaxCalls          = "SWITCHYARD_GRPC_MAX_CALLS"
	envGRPCMaxHeaderBytes    = "SWITCHYARD_GRPC_MAX_HEADER_BYTES"
	envGRPCMaxMessageBytes   = "SWITCHYARD_GRPC_MAX_MESSAGE_BYTES"
	envGRPCHandshakeTimeout  = "SWITCHYARD_GRPC_HANDSHAKE_TIMEOUT"
	envGRPCIdleTimeout       = "SWITCHYARD_GRPC_MAX_CONNECTION_IDLE"
	envGRPCReadTimeout       = "SWITCHYARD_GRPC_REQUEST_READ_TIMEOUT"
)

type limitFlags struct {
	maxConnections, maxStreamsPerConn, maxCalls, maxHeaderBytes, maxMessageBytes int
	handshakeTimeout, idleTimeout, readTimeout                                   time.Duration
}

func (f *limitFlags) register(fs *flag.FlagSet) {
	envVar(fs, &f.maxConnections, "grpc-max-connections", envGRPCMaxConnections, grpcserver.DefaultMaxConnections(), parsePositiveInt,
		"open connections a gRPC server accepts; past it a new one is closed at once (default: half the open-file limit, at most 4096)")
	envVar(fs, &f.maxStreamsPerConn, "grpc-max-concurrent-streams", envGRPCMaxStreamsPerConn, grpcserver.DefaultMaxConcurrentStreams, parseUint32,
		"calls in flight on one connection: the HTTP/2 max concurrent streams setting")
	envVar(fs, &f.maxCalls, "grpc-max-calls", envGRPCMaxCalls, grpcserver.DefaultMaxStreams, parsePositiveInt,
		"calls in flight on a whole gRPC server; past it calls get ResourceExhausted before their body is read")
	envVar(fs, &f.maxHeaderBytes, "grpc-max-header-bytes", envGRPCMaxHeaderBytes, grpcserver.DefaultMaxHeaderListSize, parseUint32,
		"largest header block a call may send: the HTTP/2 max header list size setting")
	envVar(fs, &f.maxMessageBytes, "grpc-max-message-bytes", envGRPCMaxMessageBytes, grpcserver.DefaultMaxRecvMsgSize, parsePositiveInt,
		"largest request message a gRPC server accepts")
	envVar(fs, &f.handshakeTimeout, "grpc-handshake-timeout", envGRPCHandshakeTimeout, grpcserver.DefaultHandshakeTimeout, parsePositiveDuration,
		"time a new connection has for its TLS and HTTP/2 handshake")
	envVar(fs, &f.idleTimeout, "grpc-max-connection-idle", envGRPCIdleTimeout, grpcserver.DefaultMaxConnectionIdle, parsePositiveDuration,
		"a connection without calls for this long is closed (clients reconnect transparently)")
	envVar(fs, &f.readTimeout, "grpc-request-read-timeout", envGRPCReadTimeout, grpcserver.DefaultRequestReadTimeout, parsePositiveDuration,
		"time a unary call has from its headers to the end of its request")
}

func (f *limitFlags) limits() grpcserver.Limits {
	return grpcserver.Limits{
		MaxConnections:       f.maxConnections,
		MaxConcurrentStreams: uint32(f.maxStreamsPerConn),
		MaxStreams:           f.maxCalls,
		MaxHeaderListSize:    uint32(f.maxHeaderBytes),
		MaxRecvMsgSize:       f.maxMessageBytes,
		HandshakeTimeout:     f.handshakeTimeout,
		MaxConnectionIdle:    f.idleTimeout,
		RequestReadTimeout:   f.readTimeout,
	}
}

// parseUint32 accepts a whole number from 1 to 2³²-1, for the HTTP/2
// settings.
func parseUint32(s string) (int, error) {
	n, err := parsePositiveInt(s)
	if err == nil && n > 1<<32-1 {
		return 0, strconv.ErrRange
	}
	return n, err
}
