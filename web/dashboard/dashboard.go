// Package dashboard serves Switchyard's live dashboard: an embedded web page
// and the small HTTP API it reads, which forwards each request to the
// AccountPool and Activity services over gRPC.
//
// Browsers cannot speak gRPC (they expose neither HTTP/2 trailers nor
// frames), so something must translate. This package is that translation
// and nothing more: it holds no credentials and no state of its own. Every
// API request must carry the caller's own bearer token, which is forwarded
// to the service as the call's authorization; the services authenticate it
// and scope the call to the token's organization exactly as they do for
// grpcurl or a generated client. The page therefore sees what its token may
// see and nothing else, and a dashboard reachable by the wrong people gives
// them nothing without a token. No cookies are used, so a page on another
// site cannot make the browser call the API on its user's behalf.
//
// The API speaks proto3 JSON (protojson): POST /api/<service>/<Method>
// with the request message as the body. A unary method answers with the
// response message; a server-streaming method (the Watch RPCs) answers
// with newline-delimited JSON, one response message per line, flushed as
// each arrives, and, when the stream fails after it started, a last line
// {"error":{"code":...,"message":...}}. Errors before a stream starts, and
// every error of a unary call, are a non-2xx status with the body
// {"code":"permission_denied","message":"..."}: the gRPC code in snake
// case and the service's message.
package dashboard

import (
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc"

	"github.com/switchyard-dev/switchyard/pkg/telemetry"
)

//go:embed static
var static embed.FS

// Config configures a [Handler].
type Config struct {
	// AccountPool and Activity are connections to the services (see
	// pkg/grpcclient). They carry no token of their own: each call is
	// made with the token of the HTTP request it serves.
	AccountPool grpc.ClientConnInterface
	Activity    grpc.ClientConnInterface
	Logger      *slog.Logger
	// Telemetry traces each API request, and the gRPC calls it makes
	// carry the trace on (the connections' own stats handlers).
	Telemetry telemetry.Providers
	// UnaryTimeout bounds each unary call; default 30s. Streams last as
	// long as the browser stays.
	UnaryTimeout time.Duration
}

// Handler serves the dashboard page at / and its API under /api/.
type Handler struct {
	mux http.Handler
}

// New builds the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.AccountPool == nil || cfg.Activity == nil {
		return nil, errors.New("dashboard: AccountPool and Activity connections are required")
	}
	if cfg.Logger == nil {
		return nil, errors.New("dashboard: Logger is required")
	}
	if cfg.UnaryTimeout <= 0 {
		cfg.UnaryTimeout = 30 * time.Second
	}
	assets, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	api := &api{methods: methods(cfg.AccountPool, cfg.Activity), logger: cfg.Logger, unaryTimeout: cfg.UnaryTimeout}
	mux := http.NewServeMux()
	mux.Handle("POST /api/{service}/{method}", api)
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API route: use POST /api/<service>/<Method>")
	}))
	files := http.FileServerFS(assets)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the page is read with GET", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	}))
	var h http.Handler = securityHeaders(mux)
	h = otelhttp.NewHandler(h, "dashboard",
		otelhttp.WithTracerProvider(cfg.Telemetry.Tracer),
		otelhttp.WithMeterProvider(cfg.Telemetry.Meter),
		otelhttp.WithPropagators(cfg.Telemetry.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
	)
	return &Handler{mux: h}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// securityHeaders makes the page refuse anything it does not load from
// its own origin (no inline script, no framing) and keeps the API's
// answers out of caches.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}
