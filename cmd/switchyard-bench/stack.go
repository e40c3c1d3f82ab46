package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// benchOrg is the organization every benchmark task runs for.
const benchOrg = "bench"

// stack is the system under test: the simulator as the upstream and the
// three services, each its own process, on loopback.
type stack struct {
	store    string // "memory" or "postgres"
	sim      *process
	services []*process // orchestrator, accountpool, activity
	// profileAddrs are the services' metrics-and-pprof addresses, in
	// services order, when the stack was started with profiling.
	profileAddrs []string
	simURL       string
	conn         *grpc.ClientConn
	client       orchestratorv1.OrchestratorServiceClient
	cleanup      []func()
}

// stackConfig is how to start a stack.
type stackConfig struct {
	bin        string // the switchyard binary
	dir        string // logs and state
	store      string
	adminDBURL string // postgres: a role that may create schemas (the owner)
	accounts   int
	skillsDir  string
	logLevel   string
	// memoryOutbox keeps the Orchestrator's outbox in memory instead of
	// the durable bbolt file production runs with.
	memoryOutbox bool
	// profiling serves each service's pprof handlers on a metrics address
	// of its own (stack.profileAddrs).
	profiling bool
	// spans writes every service's spans, as JSON lines, into its log
	// (OTEL_TRACES_EXPORTER=console), for a latency breakdown by span.
	spans bool
}

func startStack(ctx context.Context, cfg stackConfig) (s *stack, err error) {
	s = &stack{store: cfg.store}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	dir := filepath.Join(cfg.dir, cfg.store)
	// A kept log directory's outbox from an earlier run would deliver
	// that run's records into this stack.
	if err := os.RemoveAll(filepath.Join(dir, "outbox")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "outbox"), 0o700); err != nil {
		return nil, err
	}
	var storeEnv []string
	if cfg.store == "postgres" {
		appURL, drop, err := freshSchema(ctx, cfg.bin, cfg.adminDBURL)
		if err != nil {
			return nil, err
		}
		s.cleanup = append(s.cleanup, drop)
		storeEnv = []string{"SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL=" + appURL}
	} else {
		storeEnv = []string{"SWITCHYARD_STORE=memory"}
	}

	tokens, table, err := benchTokens()
	if err != nil {
		return nil, err
	}
	keyring, err := accountpool.GenerateKeyring()
	if err != nil {
		return nil, err
	}
	addrs := make([]string, 4)
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			return nil, err
		}
	}
	simAddr, actAddr, poolAddr, orchAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	common := []string{"SWITCHYARD_LOG_LEVEL=" + cfg.logLevel, "SWITCHYARD_LOG_FORMAT=text"}
	if cfg.spans {
		common = append(common, "OTEL_TRACES_EXPORTER=console")
	}
	with := func(env ...string) []string { return append(append([]string{}, common...), env...) }
	secured := append([]string{"SWITCHYARD_TOKENS=" + table}, storeEnv...)

	profileAddr := map[string]string{}
	start := func(name, addr string, env []string) (*process, error) {
		if cfg.profiling && name != "sim" {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			profileAddr[name] = a
			env = append(env, "SWITCHYARD_METRICS_ADDR="+a, "SWITCHYARD_PPROF=true")
		}
		p, err := startProcess(dir, cfg.bin, name, addr, []string{name}, env)
		if err != nil {
			return nil, err
		}
		s.cleanup = append(s.cleanup, p.stop)
		return p, nil
	}
	if s.sim, err = start("sim", simAddr, with("SWITCHYARD_SIM_ADDR="+simAddr)); err != nil {
		return nil, err
	}
	s.simURL = "http://" + simAddr
	act, err := start("activity", actAddr, with(append(secured, "SWITCHYARD_ACTIVITY_ADDR="+actAddr)...))
	if err != nil {
		return nil, err
	}
	pool, err := start("accountpool", poolAddr, with(append(secured, "SWITCHYARD_ACCOUNTPOOL_ADDR="+poolAddr, "SWITCHYARD_KEYRING="+keyring)...))
	if err != nil {
		return nil, err
	}
	orchEnv := with("SWITCHYARD_TOKENS="+table,
		"SWITCHYARD_ORCHESTRATOR_TOKEN="+tokens.orchestrator.Reveal(),
		"SWITCHYARD_ORCHESTRATOR_ADDR="+orchAddr, "SWITCHYARD_ACCOUNTPOOL_ADDR="+poolAddr, "SWITCHYARD_ACTIVITY_ADDR="+actAddr,
		"SWITCHYARD_ANTHROPIC_BASE_URL="+s.simURL, "SWITCHYARD_SKILLS_DIR="+cfg.skillsDir,
		// The load is one organization's, as fast as the stack goes: the
		// benchmark measures what a task costs, not the per-organization
		// limits that would refuse most of it.
		"SWITCHYARD_ORG_MAX_CONCURRENT_TASKS=100000", "SWITCHYARD_ORG_TASKS_PER_SECOND=100000", "SWITCHYARD_ORG_TASK_BURST=100000")
	if !cfg.memoryOutbox {
		orchEnv = append(orchEnv, "SWITCHYARD_OUTBOX_DIR="+filepath.Join(dir, "outbox"))
	}
	orch, err := start("orchestrator", orchAddr, orchEnv)
	if err != nil {
		return nil, err
	}
	s.services = []*process{orch, pool, act}
	if cfg.profiling {
		s.profileAddrs = []string{profileAddr["orchestrator"], profileAddr["accountpool"], profileAddr["activity"]}
	}
	for _, p := range []*process{act, pool, orch} {
		if err := waitServing(ctx, p, time.Minute); err != nil {
			return nil, err
		}
	}
	if err := waitHTTP(ctx, s.simURL+"/healthz", 30*time.Second); err != nil {
		return nil, err
	}

	s.conn, err = grpc.NewClient(orchAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.ClientCredentials(tokens.org, false)))
	if err != nil {
		return nil, err
	}
	s.client = orchestratorv1.NewOrchestratorServiceClient(s.conn)
	poolConn, err := grpc.NewClient(poolAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.ClientCredentials(tokens.org, false)))
	if err != nil {
		return nil, err
	}
	defer poolConn.Close()
	admin := accountpoolv1.NewAccountPoolServiceClient(poolConn)
	for i := range cfg.accounts {
		_, err := admin.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{
			OrganizationId: benchOrg, Name: fmt.Sprintf("account-%d", i),
			ApiKey: fmt.Sprintf("sk-ant-sim-scale-bench-%d", i), Tier: "scale",
		})
		if err != nil {
			return nil, fmt.Errorf("registering account %d: %w", i, err)
		}
	}
	return s, nil
}

// close stops the processes and drops the schema, newest first.
func (s *stack) close() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
}

// cpu is the CPU time so far of the services, the simulator and, on
// PostgreSQL, the database.
func (s *stack) cpu() (cpuReading, error) {
	r := cpuReading{services: make([]time.Duration, len(s.services))}
	var err error
	for i, p := range s.services {
		if r.services[i], err = p.cpuTime(); err != nil {
			return cpuReading{}, err
		}
	}
	if r.sim, err = s.sim.cpuTime(); err != nil {
		return cpuReading{}, err
	}
	if s.store == "postgres" {
		if r.db, err = commandCPU("postgres"); err != nil {
			return cpuReading{}, err
		}
	}
	return r, nil
}

type benchTokenSet struct{ orchestrator, org secret.String }

// benchTokens makes the orchestrator's and the organization's bearer
// tokens and the services' token table.
func benchTokens() (benchTokenSet, string, error) {
	var ts benchTokenSet
	var table strings.Builder
	for _, e := range []struct {
		dst       *secret.String
		principal string
	}{{&ts.orchestrator, "orchestrator"}, {&ts.org, "org:" + benchOrg}} {
		tok, err := auth.GenerateToken()
		if err != nil {
			return ts, "", err
		}
		*e.dst = tok
		fmt.Fprintf(&table, "%s %s\n", auth.HashToken(tok.Reveal()), e.principal)
	}
	return ts, table.String(), nil
}

// freshSchema creates an empty schema through adminURL, migrates it with
// `switchyard migrate up`, and returns the services' connection string to
// it (as migrations.AppRole) and a function that drops it.
func freshSchema(ctx context.Context, bin, adminURL string) (appURL string, drop func(), err error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "bench_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", nil, fmt.Errorf("creating schema %s: %w", name, err)
	}
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if c, err := pgx.Connect(ctx, adminURL); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			_ = c.Close(ctx)
		}
	}
	ownerURL, err := withSchema(adminURL, "", name)
	if err != nil {
		drop()
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "migrate", "-database-url", ownerURL, "up")
	cmd.Env = childEnv(nil)
	if out, err := cmd.CombinedOutput(); err != nil {
		drop()
		return "", nil, fmt.Errorf("switchyard migrate up: %w\n%s", err, out)
	}
	if appURL, err = withSchema(adminURL, migrations.AppRole, name); err != nil {
		drop()
		return "", nil, err
	}
	return appURL, drop, nil
}

// withSchema is base with the user replaced (when user is set) and schema
// as the search path.
func withSchema(base, user, schema string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return "", errors.New("the database URL must be a URL (postgres://...)")
	}
	if user != "" {
		u.User = url.User(user)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// profile starts fetching a CPU profile of every service, covering the
// measured part of a step that starts now with warmup; the function it
// returns waits for them and writes dir/STORE-SERVICE.pprof.
func (s *stack) profile(ctx context.Context, dir string, warmup, d time.Duration) func() error {
	errs := make(chan error, len(s.profileAddrs))
	for i, addr := range s.profileAddrs {
		path := filepath.Join(dir, s.store+"-"+s.services[i].name+".pprof")
		go func() { errs <- fetchProfile(ctx, addr, path, warmup, d) }()
	}
	return func() error {
		var all []error
		for range s.profileAddrs {
			all = append(all, <-errs)
		}
		return errors.Join(all...)
	}
}

func fetchProfile(ctx context.Context, addr, path string, warmup, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(warmup):
	}
	secs := max(1, int(d/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the CPU profile from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the CPU profile from %s: %s", addr, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
