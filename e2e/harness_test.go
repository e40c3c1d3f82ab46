// Package e2e_test runs the three services and the Anthropic simulator on
// real loopback sockets, in one process, and drives them through their
// generated gRPC clients as a user would.
package e2e_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/services/accountpool"
	"github.com/switchyard-dev/switchyard/services/activity"
	"github.com/switchyard-dev/switchyard/services/orchestrator"
)

type stackOptions struct {
	// databaseURL, when set, puts AccountPool and Activity on PostgreSQL
	// (a migrated schema, connecting as the service role).
	databaseURL string
	fallbackKey string
	exporter    sdktrace.SpanExporter
	// poolAddr overrides the orchestrator's AccountPool target (to point it
	// at nothing).
	poolAddr string
	// logs receives every service's log; default: discarded.
	logs io.Writer
	// keyring is AccountPool's key-encryption keyring; default: a fresh
	// one from GenerateKeyring.
	keyring string
	// upstream, when set, answers the orchestrator's model calls instead of
	// the simulator (a hostile or broken upstream).
	upstream http.Handler
	// baseURL, when set, is the orchestrator's upstream base URL as given
	// (one the SDK cannot use, say), instead of the simulator's.
	baseURL string
	// drainTimeout is the orchestrator's DrainTimeout; default its own.
	drainTimeout time.Duration
	// tiersFile is AccountPool's tier limits overlay; default none.
	tiersFile string
}

// stack is a running system: simulator, Activity, AccountPool and
// Orchestrator, each on its own loopback port.
type stack struct {
	addrs        clientsAddrs
	tokens       testTokens
	sim          *anthropicsim.Server
	pool         accountpoolv1.AccountPoolServiceClient
	activity     activityv1.ActivityServiceClient
	orchestrator orchestratorv1.OrchestratorServiceClient
	flush        func(context.Context) error
	// stopOrchestrator shuts the Orchestrator down (the others keep
	// serving) and returns once its Serve has returned: it has drained.
	stopOrchestrator func() error
}

func startStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := opts.logs
	if logs == nil {
		logs = io.Discard
	}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	sim := anthropicsim.New(anthropicsim.Config{})
	var upstream http.Handler = sim
	if opts.upstream != nil {
		upstream = opts.upstream
	}
	simServer := httptest.NewServer(upstream)
	t.Cleanup(simServer.Close)

	actTel, actShutdown := telemetry.New("switchyard-activity", opts.exporter)
	poolTel, poolShutdown := telemetry.New("switchyard-accountpool", opts.exporter)
	orchTel, orchShutdown := telemetry.New("switchyard-orchestrator", opts.exporter)
	t.Cleanup(func() { _ = telemetry.Join(orchShutdown, poolShutdown, actShutdown)(context.Background()) })

	toks := newTestTokens(t)
	act, err := activity.New(ctx, activity.Config{Addr: "127.0.0.1:0", Logger: logger, Telemetry: actTel, DatabaseURL: opts.databaseURL, Tokens: toks.table})
	require.NoError(t, err)
	keyring := opts.keyring
	if keyring == "" {
		keyring, err = accountpool.GenerateKeyring()
		require.NoError(t, err)
	}
	pool, err := accountpool.New(ctx, accountpool.Config{Addr: "127.0.0.1:0", Keyring: keyring, Logger: logger.With("service", "accountpool"), Telemetry: poolTel,
		DatabaseURL: opts.databaseURL, Tokens: toks.table, TiersFile: opts.tiersFile})
	require.NoError(t, err)
	poolAddr := pool.Addr().String()
	if opts.poolAddr != "" {
		poolAddr = opts.poolAddr
	}
	baseURL := simServer.URL
	if opts.baseURL != "" {
		baseURL = opts.baseURL
	}
	orch, err := orchestrator.New(ctx, orchestrator.Config{
		Addr:             "127.0.0.1:0",
		AccountPoolAddr:  poolAddr,
		ActivityAddr:     act.Addr().String(),
		AnthropicBaseURL: baseURL,
		FallbackAPIKey:   secret.New(opts.fallbackKey),
		SkillsDir:        "../skills",
		Tokens:           toks.table,
		ServiceToken:     toks.orchestrator,
		Logger:           logger,
		Telemetry:        orchTel,
		DrainTimeout:     opts.drainTimeout,
	})
	require.NoError(t, err)

	var wg sync.WaitGroup
	for _, serve := range []func(context.Context) error{act.Serve, pool.Serve} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(ctx); err != nil {
				t.Errorf("serving: %v", err)
			}
		}()
	}
	orchCtx, stopOrch := context.WithCancel(ctx)
	orchDone := make(chan error, 1)
	go func() { orchDone <- orch.Serve(orchCtx) }()
	var orchErr error
	var stopOnce sync.Once
	stopOrchestrator := func() error {
		stopOnce.Do(func() {
			stopOrch()
			orchErr = <-orchDone
		})
		return orchErr
	}
	t.Cleanup(func() {
		// The Orchestrator drains first, while the services it records to
		// still serve, as in production.
		if err := stopOrchestrator(); err != nil {
			t.Errorf("serving the orchestrator: %v", err)
		}
		cancel()
		wg.Wait()
	})

	s := &stack{
		addrs:        clientsAddrs{pool: pool.Addr().String(), activity: act.Addr().String(), orchestrator: orch.Addr().String()},
		tokens:       toks,
		sim:          sim,
		pool:         accountpoolv1.NewAccountPoolServiceClient(dial(t, pool.Addr().String(), toks.admin)),
		activity:     activityv1.NewActivityServiceClient(dial(t, act.Addr().String(), toks.admin)),
		orchestrator: orchestratorv1.NewOrchestratorServiceClient(dial(t, orch.Addr().String(), toks.admin)),
		flush:        forceFlush(orchTel, poolTel, actTel),

		stopOrchestrator: stopOrchestrator,
	}
	// The services open their gates once their store is ready (on
	// PostgreSQL: once the schema version checks out).
	for _, addr := range []string{act.Addr().String(), pool.Addr().String(), orch.Addr().String()} {
		health := healthpb.NewHealthClient(dial(t, addr, secret.String{}))
		require.Eventually(t, func() bool {
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
		}, 30*time.Second, 5*time.Millisecond, "%s never became SERVING", addr)
	}
	return s
}

// eachStore runs fn once with the services on the embedded store and once
// on PostgreSQL (skipped, or failed under SWITCHYARD_REQUIRE_POSTGRES, when
// no test database is configured).
func eachStore(t *testing.T, fn func(t *testing.T, base stackOptions)) {
	t.Run("memory", func(t *testing.T) { fn(t, stackOptions{}) })
	t.Run("postgres", func(t *testing.T) {
		schema := pgtest.NewSchema(t, migrations.All()...)
		fn(t, stackOptions{databaseURL: schema.AppURL})
	})
}

// dial connects to addr, sending token (when set) with every call.
func dial(t testing.TB, addr string, token secret.String) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if !token.IsZero() {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.ClientCredentials(token, false)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *stack) register(t testing.TB, org, name, key, tier string) *accountpoolv1.Account {
	t.Helper()
	resp, err := s.pool.RegisterAccount(testContext(t), &accountpoolv1.RegisterAccountRequest{
		OrganizationId: org, Name: name, ApiKey: key, Tier: tier,
	})
	require.NoError(t, err)
	return resp.GetAccount()
}

// with returns a copy of o changed by fn.
func (o stackOptions) with(fn func(*stackOptions)) stackOptions {
	fn(&o)
	return o
}

// testTokens are the bearer tokens of one stack: an admin, the
// orchestrator, and two organizations.
type testTokens struct {
	table                           *auth.Tokens
	admin, orchestrator, acme, beta secret.String
}

func newTestTokens(t testing.TB) testTokens {
	t.Helper()
	var tt testTokens
	var table string
	for _, e := range []struct {
		dst       *secret.String
		principal string
	}{{&tt.admin, "admin"}, {&tt.orchestrator, "orchestrator"}, {&tt.acme, "org:acme"}, {&tt.beta, "org:beta"}} {
		tok, err := auth.GenerateToken()
		require.NoError(t, err)
		*e.dst = tok
		table += auth.HashToken(tok.Reveal()) + " " + e.principal + "\n"
	}
	var err error
	tt.table, err = auth.ParseTokens(table)
	require.NoError(t, err)
	return tt
}

// forceFlush exports every span the providers have finished so far,
// without shutting them down.
func forceFlush(ps ...telemetry.Providers) func(context.Context) error {
	return func(ctx context.Context) error {
		for _, p := range ps {
			if tp, ok := p.Tracer.(*sdktrace.TracerProvider); ok {
				if err := tp.ForceFlush(ctx); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

type clientsAddrs struct{ pool, activity, orchestrator string }

// clients are the three services' clients, calling with one token.
type clients struct {
	pool         accountpoolv1.AccountPoolServiceClient
	activity     activityv1.ActivityServiceClient
	orchestrator orchestratorv1.OrchestratorServiceClient
}

// as returns clients that call with token (none when it is zero).
func (s *stack) as(t testing.TB, token secret.String) clients {
	return clients{
		pool:         accountpoolv1.NewAccountPoolServiceClient(dial(t, s.addrs.pool, token)),
		activity:     activityv1.NewActivityServiceClient(dial(t, s.addrs.activity, token)),
		orchestrator: orchestratorv1.NewOrchestratorServiceClient(dial(t, s.addrs.orchestrator, token)),
	}
}
