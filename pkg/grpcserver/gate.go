package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Gate holds a service's calls back until a readiness check passes, such as
// "the database schema is at the version this binary needs". Until then
// health reports NOT_SERVING and every call but health and reflection gets
// Unavailable with the check's error, which says what to do.
type Gate struct {
	mu    sync.RWMutex
	err   error
	check func(context.Context) error
}

// firstRetry is the first pause of Gate.Run after a failed check.
const firstRetry = 100 * time.Millisecond

// NewGate returns a closed gate that opens when check returns nil.
func NewGate(check func(context.Context) error) *Gate {
	return &Gate{err: errors.New("starting up"), check: check}
}

// Err is nil once the gate is open.
func (g *Gate) Err() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.err
}

// UnaryInterceptor rejects calls while the gate is closed.
func (g *Gate) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := g.Err(); err != nil && !isInfrastructure(info.FullMethod) {
			return nil, status.Error(codes.Unavailable, "not ready: "+err.Error())
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor rejects streams while the gate is closed.
func (g *Gate) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := g.Err(); err != nil && !isInfrastructure(info.FullMethod) {
			return status.Error(codes.Unavailable, "not ready: "+err.Error())
		}
		return handler(srv, ss)
	}
}

func isInfrastructure(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// Run checks until the check passes, logging each failure, then opens the
// gate and marks srv SERVING. It returns when the gate opens or ctx ends.
// Retries back off from firstRetry, doubling up to interval, so a
// database that comes up a moment after the service is noticed at once
// and one that stays down is not hammered.
func (g *Gate) Run(ctx context.Context, srv *Server, logger *slog.Logger, interval time.Duration) {
	interval = max(interval, firstRetry)
	wait := firstRetry
	for {
		err := g.check(ctx)
		if err == nil {
			g.mu.Lock()
			g.err = nil
			g.mu.Unlock()
			srv.SetServing(true)
			return
		}
		g.mu.Lock()
		g.err = err
		g.mu.Unlock()
		logger.ErrorContext(ctx, "not serving until the check passes; retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, interval)
	}
}
