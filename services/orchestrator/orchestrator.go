// Package orchestrator is the Orchestrator service: it exposes
// OrchestratorService.DelegateTask and runs each task on the organization's
// pool of Anthropic accounts, talking to the AccountPool and Activity
// services over gRPC and to the Anthropic Messages API through the official
// SDK. It owns no durable state.
package orchestrator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/api"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/categories"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/skills"
)

// Default addresses.
const (
	DefaultAddr             = "127.0.0.1:50051"
	DefaultAccountPoolAddr  = "127.0.0.1:50052"
	DefaultActivityAddr     = "127.0.0.1:50053"
	DefaultAnthropicBaseURL = "https://api.anthropic.com"
)

// Config configures the Orchestrator. Zero values take the defaults named
// on each field.
type Config struct {
	// Addr to serve gRPC on; default DefaultAddr.
	Addr string
	// AccountPoolAddr and ActivityAddr are the gRPC targets of the other
	// two services; defaults DefaultAccountPoolAddr and DefaultActivityAddr.
	// Each is one host:port, a comma-separated list of the replicas'
	// host:port, or dns:///host:port (see grpcclient.CheckTarget); calls
	// are balanced over the replicas (round_robin).
	AccountPoolAddr string
	ActivityAddr    string
	// AnthropicBaseURL is the Messages API (or simulator) base URL; default
	// DefaultAnthropicBaseURL.
	AnthropicBaseURL string
	// FallbackAPIKey is the environment key of legacy mode, for
	// organizations with neither accounts in service nor a default key of
	// their own (ANTHROPIC_API_KEY).
	FallbackAPIKey secret.String
	// LegacyEnvironmentFallbackOnInvalidKey runs an organization without
	// accounts whose default key the upstream rejected on FallbackAPIKey
	// instead of failing its tasks with FailedPrecondition (the default, so
	// that a broken customer key never silently bills the operator).
	LegacyEnvironmentFallbackOnInvalidKey bool
	// FailWhenPoolUnavailable fails tasks with Unavailable when the
	// AccountPool cannot be reached, instead of running them on
	// FallbackAPIKey (the default, as in the original system).
	FailWhenPoolUnavailable bool
	// CategoriesFile optionally extends or overrides the category table.
	CategoriesFile string
	// SkillsDir holds skills that extend or override the built-in ones
	// (the repository's skills/, embedded in the binary); default "skills",
	// which may be missing, while any other directory must exist.
	SkillsDir string
	// MaxAttempts per task; default 3.
	MaxAttempts int
	// AttemptTimeout bounds one model call; default 10m.
	AttemptTimeout time.Duration
	// MaxPromptBytes bounds a prompt; default 512 KiB.
	MaxPromptBytes int
	// MaxWait bounds how long a task waits for a busy pool to free an
	// account; default 10s, negative disables waiting.
	MaxWait time.Duration
	// SelectTimeout bounds one SelectAccount call; default 10s. A slower
	// selection fails the task with DeadlineExceeded (never the fallback
	// key).
	SelectTimeout time.Duration
	// ProgressInterval is the least time between progress events of a
	// streaming attempt; default 5s.
	ProgressInterval time.Duration
	// OutboxDir keeps bookkeeping records on disk until AccountPool or
	// Activity acknowledges them (see delegate.Config.OutboxDir); empty
	// keeps them in memory.
	OutboxDir string
	// OutboxMaxRecords bounds the records waiting for delivery; default
	// 100,000.
	OutboxMaxRecords int
	// DrainTimeout is how long, at shutdown, in-flight tasks may finish
	// before they are cancelled, and then how long the outbox may take to
	// deliver what they recorded; default 30s each.
	DrainTimeout time.Duration
	// HTTPClient for the upstream; default a pooled client with bounded
	// connections and timeouts (executor.NewTransport).
	HTTPClient *http.Client
	// UpstreamMaxConns bounds the connections to the Anthropic API (per
	// host, in use and idle); a call beyond it waits for one within its
	// attempt timeout. Default executor.DefaultMaxConnsPerHost; ignored
	// with HTTPClient.
	UpstreamMaxConns int
	// OrgMaxConcurrentTasks, OrgTasksPerSecond and OrgTaskBurst are the
	// service-wide limits on one organization's tasks in this replica
	// (package limits): tasks at once, tasks started per second and the
	// burst above that rate. An organization's settings may override each
	// (OrganizationSettings.task_limits). Defaults DefaultOrgMaxConcurrentTasks, DefaultOrgTasksPerSecond and
	// DefaultOrgTaskBurst.
	OrgMaxConcurrentTasks int
	OrgTasksPerSecond     float64
	OrgTaskBurst          int

	// Tokens authenticates callers (see pkg/auth). Required unless
	// InsecureNoAuth is set.
	Tokens *auth.Tokens
	// InsecureNoAuth serves without authentication or authorization. Tests
	// and local experiments only.
	InsecureNoAuth bool
	// ServiceToken is the orchestrator's own bearer token for AccountPool
	// and Activity (a token whose principal is "orchestrator"). With it the
	// orchestrator forwards the organization its caller was authorized
	// for; the other services trust that only from this token.
	ServiceToken secret.String
	// TLS, when set, serves TLS only; ClientTLS, when set, connects to the
	// other services with TLS (pkg/tlsconfig builds mutual TLS for both).
	TLS       *tls.Config
	ClientTLS *tls.Config
	// GRPCLimits bounds what any caller can make the server hold
	// (connections, streams, headers, message sizes, idle and read time);
	// zero fields take grpcserver's defaults.
	GRPCLimits grpcserver.Limits
	// InsecurePlaintext allows serving, and dialing AccountPool and
	// Activity, without TLS on addresses other machines reach (see
	// grpcserver.Config.InsecurePlaintext); without it such an address is
	// refused unless TLS (ClientTLS for the dials) is set.
	InsecurePlaintext bool

	Logger    *slog.Logger
	Telemetry telemetry.Providers
}

// Service is a running Orchestrator.
type Service struct {
	server *grpcserver.Server
	runner *delegate.Runner
	conns  []*grpc.ClientConn
	logger *slog.Logger
	drain  time.Duration
}

// New builds the Orchestrator and listens on cfg.Addr. Clients to the other
// services connect lazily, so the services can start in any order.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		return nil, errors.New("orchestrator: Logger is required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.AccountPoolAddr == "" {
		cfg.AccountPoolAddr = DefaultAccountPoolAddr
	}
	if cfg.ActivityAddr == "" {
		cfg.ActivityAddr = DefaultActivityAddr
	}
	if cfg.AnthropicBaseURL == "" {
		cfg.AnthropicBaseURL = DefaultAnthropicBaseURL
	}
	if u, err := url.Parse(cfg.AnthropicBaseURL); err == nil && u.Scheme == "http" && !tlsconfig.IsLoopback(u.Hostname()) {
		// The simulator speaks plain HTTP; the real API is HTTPS only.
		cfg.Logger.WarnContext(ctx, "the Anthropic base URL is plain HTTP to another machine: API keys cross the network in cleartext; use https:// for anything but a simulator",
			"anthropic_base_url", cfg.AnthropicBaseURL)
	}
	if cfg.SkillsDir == "" {
		cfg.SkillsDir = "skills"
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Minute
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	unary, stream, err := auth.ServerInterceptors(cfg.Tokens, cfg.InsecureNoAuth, api.Policy(), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	cats, err := categories.Load(cfg.CategoriesFile)
	if err != nil {
		return nil, err
	}
	lib, err := skills.Load(cfg.SkillsDir)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("orchestrator configured",
		"anthropic_base_url", cfg.AnthropicBaseURL, "categories", cats.Names(), "skills", lib.Names(), "skills_from_dir", lib.FromDir(),
		"fallback_key_configured", !cfg.FallbackAPIKey.IsZero(), "fail_when_pool_unavailable", cfg.FailWhenPoolUnavailable)

	// What is retried when a replica of AccountPool or Activity is down or
	// goes away mid-call. Each connection balances over every replica of
	// its target (round_robin), and a retried attempt is a new pick: the
	// next ready replica.
	//
	//   - TrackStart is retried by gRPC on UNAVAILABLE, so a blip or a dying
	//     Activity replica does not fail a task. It is idempotent: the
	//     activity id is derived from the request (or fixed for the task
	//     before the call), the store inserts it with ON CONFLICT DO NOTHING
	//     and returns the existing row, and the start token in its metadata
	//     lets the retry recognise the activity its own first attempt
	//     created (committed by a replica that died before answering) as
	//     opposed to an earlier run's (startActivity).
	//   - SelectAccount is not: it reserves capacity and creates a lease, so
	//     a second attempt after one the pool may have committed would
	//     reserve twice. gRPC's transparent retry still covers a call that
	//     never reached a replica (its connection was already closing); any
	//     other UNAVAILABLE fails the selection as it does with one replica.
	//   - RecordRequest, TrackProgress and TrackComplete go through the
	//     outbox, which retries them itself until one replica acknowledges;
	//     they are not retried by gRPC as well, so that while a service is
	//     wholly down the task's answer does not wait out gRPC's backoff
	//     before the record is queued. (RecordRequest is deduplicated by
	//     (organization, request_id, attempt, upstream request id) and a
	//     repeated TrackComplete is idempotent; a repeated TrackProgress
	//     stores its event twice.)
	retried := []string{
		activityv1.ActivityService_TrackStart_FullMethodName,
	}
	clientCfg := func(target string) grpcclient.Config {
		if cfg.ClientTLS == nil && cfg.InsecurePlaintext && grpcclient.PlaintextOffLoopback(target) {
			cfg.Logger.Warn("calling a service WITHOUT TLS on an address other machines reach: the token and, from the AccountPool, API keys cross the network in cleartext", "target", target)
		}
		c := grpcclient.Config{Target: target, Telemetry: cfg.Telemetry, TLS: cfg.ClientTLS, InsecurePlaintext: cfg.InsecurePlaintext, RetryUnavailable: retried,
			UnaryInterceptors: []grpc.UnaryClientInterceptor{auth.ForwardOrganization()}}
		if !cfg.ServiceToken.IsZero() {
			c.Credentials = auth.ClientCredentials(cfg.ServiceToken, cfg.ClientTLS != nil)
		}
		return c
	}
	poolConn, err := grpcclient.Dial(clientCfg(cfg.AccountPoolAddr))
	if err != nil {
		return nil, fmt.Errorf("orchestrator: AccountPoolAddr: %w", err)
	}
	activityConn, err := grpcclient.Dial(clientCfg(cfg.ActivityAddr))
	if err != nil {
		_ = poolConn.Close()
		return nil, fmt.Errorf("orchestrator: ActivityAddr: %w", err)
	}
	exec := executor.New(executor.Config{BaseURL: cfg.AnthropicBaseURL, HTTPClient: cfg.HTTPClient, MaxConnsPerHost: cfg.UpstreamMaxConns,
		Tracer: cfg.Telemetry.Tracer, Meter: cfg.Telemetry.Meter})
	poolClient := accountpoolv1.NewAccountPoolServiceClient(poolConn)
	limiter, err := newLimiter(cfg, poolClient)
	if err != nil {
		_ = poolConn.Close()
		_ = activityConn.Close()
		return nil, fmt.Errorf("orchestrator: %w", err)
	}
	runner, err := delegate.New(delegate.Config{
		Categories:              cats,
		Skills:                  lib,
		MaxAttempts:             cfg.MaxAttempts,
		FallbackKey:             cfg.FallbackAPIKey,
		FailWhenPoolUnavailable: cfg.FailWhenPoolUnavailable,
		PoolConnected:           func() bool { return poolConn.GetState() == connectivity.Ready }, // any replica (round_robin)
		Meter:                   cfg.Telemetry.Meter,
		AttemptTimeout:          cfg.AttemptTimeout,
		MaxPromptBytes:          cfg.MaxPromptBytes,
		MaxWait:                 cfg.MaxWait,
		SelectTimeout:           cfg.SelectTimeout,
		ProgressInterval:        cfg.ProgressInterval,
		OutboxDir:               cfg.OutboxDir,
		OutboxMaxRecords:        cfg.OutboxMaxRecords,
		Limiter:                 limiter,

		EnvironmentFallbackOnInvalidKey: cfg.LegacyEnvironmentFallbackOnInvalidKey,
	}, poolClient, activityv1.NewActivityServiceClient(activityConn), exec, cfg.Logger, tracerOrNoop(cfg.Telemetry))
	if err != nil {
		_ = poolConn.Close()
		_ = activityConn.Close()
		return nil, fmt.Errorf("orchestrator: %w", err)
	}

	srv, err := grpcserver.New(grpcserver.Config{
		Addr: cfg.Addr, Name: "orchestrator", Logger: cfg.Logger, Telemetry: cfg.Telemetry, TLS: cfg.TLS,
		ShutdownGrace:     cfg.DrainTimeout,
		Limits:            cfg.GRPCLimits,
		Admit:             auth.Admission(cfg.Tokens),
		InsecurePlaintext: cfg.InsecurePlaintext,
		// A task may wait for accounts and make three model calls.
		DefaultTimeout:    3*cfg.AttemptTimeout + time.Minute,
		UnaryInterceptors: unary, StreamInterceptors: stream,
	},
		func(r grpc.ServiceRegistrar) { orchestratorv1.RegisterOrchestratorServiceServer(r, api.New(runner)) })
	if err != nil {
		// The outbox's writer and its file lock go with the runner.
		_ = runner.Close()
		_ = poolConn.Close()
		_ = activityConn.Close()
		return nil, err
	}
	return &Service{server: srv, runner: runner, conns: []*grpc.ClientConn{poolConn, activityConn}, logger: cfg.Logger, drain: cfg.DrainTimeout}, nil
}

// Addr is the address the service listens on.
func (s *Service) Addr() net.Addr { return s.server.Addr() }

// Serve serves until ctx is cancelled, then drains: it stops taking tasks,
// lets in-flight ones finish for up to DrainTimeout (then cancels them;
// they still record their attempts), and waits up to DrainTimeout more for
// the outbox to deliver what was recorded. A durable outbox keeps what is
// left for the next process; an in-memory one logs what is lost.
func (s *Service) Serve(ctx context.Context) error {
	outboxCtx, stopOutbox := context.WithCancel(context.WithoutCancel(ctx))
	outboxDone := make(chan struct{})
	go func() {
		defer close(outboxDone)
		s.runner.RunOutbox(outboxCtx)
	}()
	s.server.SetServing(true)
	err := s.server.Serve(ctx)

	flushCtx, cancel := context.WithTimeout(context.Background(), s.drain)
	if left := s.runner.Drain(flushCtx); left > 0 {
		s.logger.Error("orchestrator: stopped with bookkeeping records undelivered", "records", left, "waited", s.drain)
	} else {
		s.logger.Info("orchestrator: drained; every bookkeeping record was delivered")
	}
	cancel()
	stopOutbox()
	<-outboxDone
	if cerr := s.runner.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing the outbox: %w", cerr)
	}
	for _, c := range s.conns {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing client connection: %w", cerr)
		}
	}
	return err
}

// Run builds the service and serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

func tracerOrNoop(p telemetry.Providers) trace.TracerProvider {
	if p.Tracer == nil {
		return tracenoop.NewTracerProvider()
	}
	return p.Tracer
}
