package telemetry

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
)

// The otel error handler is a process global (otel.SetErrorHandler): every
// exporter, reader and instrumentation library reports its errors there,
// whichever service it belongs to. So the process installs one handler,
// once (the first Start), and it logs through the logger of the latest
// Start: in switchyard dev, the process logger, not any one service's.
var (
	errorHandlerOnce sync.Once
	errorLogger      atomic.Pointer[slog.Logger]
	errorLimiter     = &limiter{every: time.Minute, last: map[string]limitState{}}
)

// installErrorHandler routes otel's errors (failed exports, a collector
// that is down, instruments that cannot be created) to logger.
func installErrorHandler(logger *slog.Logger) {
	errorLogger.Store(logger)
	errorHandlerOnce.Do(func() {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(handleError))
		// otel's own diagnostic logger writes plain text to stderr and
		// quotes the input it could not parse (an OTLP header with its
		// token, an endpoint with its password): silenced. The settings it
		// parses are checked by checkOTLPEnv instead, naming the variable
		// but never the value.
		otel.SetLogger(logr.Discard())
	})
}

func handleError(err error) {
	if err == nil {
		return
	}
	logger := errorLogger.Load()
	if logger == nil {
		logger = slog.Default()
	}
	msg := err.Error()
	suppressed, ok := errorLimiter.allow(msg, time.Now())
	if !ok {
		return
	}
	attrs := []any{"error", msg}
	if suppressed > 0 {
		attrs = append(attrs, "repeated", suppressed)
	}
	logger.Warn("OpenTelemetry export error", attrs...)
}

// limiter lets the same message through at most once per interval: a
// collector that is down fails every batch of every service, and one line
// a minute says as much as hundreds.
type limiter struct {
	mu    sync.Mutex
	every time.Duration
	last  map[string]limitState
}

type limitState struct {
	at         time.Time
	suppressed int
}

// allow reports whether msg may be logged now and how many times it was
// suppressed since it last was.
func (l *limiter) allow(msg string, now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, seen := l.last[msg]
	if seen && now.Sub(st.at) < l.every {
		st.suppressed++
		l.last[msg] = st
		return 0, false
	}
	if len(l.last) >= 256 {
		clear(l.last) // bounded: error texts can carry ids
	}
	l.last[msg] = limitState{at: now}
	return st.suppressed, true
}
