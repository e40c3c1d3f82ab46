//go:build linux

package e2e_test

// Helpers of the fault test (fault_test.go): the switchyard binary run as
// separate OS processes, their logs, health waits and the simulator's
// HTTP control surface.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// buildSwitchyard builds cmd/switchyard (without -race, to keep the
// services' CPU low) into dir and returns the binary's path.
func buildSwitchyard(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "switchyard")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/switchyard")
	cmd.Dir = ".." // the module root, from e2e/
	cmd.Env = childEnv(nil)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/switchyard: %v\n%s", err, out)
	}
	return bin
}

// childEnv is this process's environment without anything that would
// configure a switchyard service behind the test's back, plus extra.
func childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "SWITCHYARD_"), strings.HasPrefix(name, "OTEL_"),
			name == "DATABASE_URL", name == "ANTHROPIC_API_KEY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// freeAddrs returns n distinct loopback addresses nobody listens on right
// now. It holds every listener open until it has all n: closing each one
// before asking for the next lets the kernel hand the same port out twice,
// and two of the test's processes would then race for one address.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		defer lis.Close()
		addrs = append(addrs, lis.Addr().String())
	}
	return addrs
}

// proc is one switchyard process that can be killed and started again
// with the same arguments, environment and log file.
type proc struct {
	name    string
	bin     string
	args    []string
	env     []string
	addr    string // its listen address
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	starts int
}

func newProc(t *testing.T, dir, bin, name, addr string, args, env []string) *proc {
	p := &proc{name: name, bin: bin, args: args, env: childEnv(env), addr: addr, logPath: filepath.Join(dir, name+".log")}
	t.Cleanup(p.kill)
	return p
}

// start runs the process, appending its stdout and stderr to its log.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.name)
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "==== fault test: start #%d of %s at %s\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Dir = filepath.Dir(p.logPath)
	cmd.Stdout, cmd.Stderr = f, f
	// Should the test binary itself die, its services die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// stop sends SIGTERM and waits up to timeout for a graceful exit, then
// kills. It reports whether the process exited on its own, and its exit
// status.
func (p *proc) stop(timeout time.Duration) (graceful bool, state string) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return false, "not running"
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true, cmd.ProcessState.String()
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return false, cmd.ProcessState.String()
	}
}

// exited reports whether a started process has exited by itself.
func (p *proc) exited() bool {
	p.mu.Lock()
	done := p.done
	running := p.cmd != nil
	p.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// logTail is the last n lines of the process's log, leaving out the
// per-call access log lines (msg="finished call"), which drown the rest.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.Contains(l, `msg="finished call"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logLines returns the log lines that contain every one of subs.
func (p *proc) logLines(subs ...string) []string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
scan:
	for sc.Scan() {
		for _, s := range subs {
			if !strings.Contains(sc.Text(), s) {
				continue scan
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// dialFast connects to addr with token (when set), reconnecting at most
// 250 ms apart after the peer went away, so that the test measures how
// fast the system recovers, not gRPC's default backoff of up to 2 minutes.
func dialFast(t *testing.T, addr string, token secret.String) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}),
	}
	if !token.IsZero() {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.ClientCredentials(token, false)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// servedService is the gRPC service each switchyard command serves. The
// health wait asks for it by name, so another service answering on the
// same address (a port taken by someone else) is not mistaken for it.
var servedService = map[string]string{
	"activity":     activityv1.ActivityService_ServiceDesc.ServiceName,
	"accountpool":  accountpoolv1.AccountPoolService_ServiceDesc.ServiceName,
	"orchestrator": orchestratorv1.OrchestratorService_ServiceDesc.ServiceName,
}

// waitServing polls the health of p's service until SERVING, the process
// exits or timeout passes; it returns how long it took.
func waitServing(ctx context.Context, health healthpb.HealthClient, p *proc, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	req := &healthpb.HealthCheckRequest{}
	if p != nil {
		name, ok := servedService[p.args[0]]
		if !ok {
			return 0, fmt.Errorf("%s: no gRPC service is known for command %q (add it to servedService)", p.name, p.args[0])
		}
		req.Service = name
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := health.Check(cctx, req)
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return time.Since(start), nil
		}
		if p != nil && p.exited() {
			return time.Since(start), fmt.Errorf("%s exited while waiting for it to serve", p.name)
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("%s not SERVING after %s (last: %v, %v)", p.name, timeout, resp.GetStatus(), err)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// simControl is the simulator's /sim/ control surface over HTTP.
type simControl struct {
	base   string
	client *http.Client
	token  string // the control token: SWITCHYARD_SIM_CONTROL_TOKEN of the sim process
}

// newSimToken is a control token for a sim process the test starts, and
// the variable that gives it to the process.
func newSimToken() (token, envVar string) {
	token = anthropicsim.GenerateControlToken()
	return token, "SWITCHYARD_SIM_CONTROL_TOKEN=" + token
}

// simStats is GET /sim/stats for one key.
type simStats struct {
	Requests         int64 `json:"requests"`
	Succeeded        int64 `json:"succeeded"`
	RateLimited      int64 `json:"rate_limited"`
	CapacityRejected int64 `json:"capacity_rejected"`
	Faulted          int64 `json:"faulted"`
	StreamsBroken    int64 `json:"streams_broken"`
	Usage            struct {
		InputTokens         int64 `json:"input_tokens"`
		OutputTokens        int64 `json:"output_tokens"`
		CacheReadTokens     int64 `json:"cache_read_tokens"`
		CacheCreationTokens int64 `json:"cache_creation_tokens"`
	} `json:"usage"`
}

func (s simControl) setDelay(ctx context.Context, key string, delay time.Duration) error {
	body, _ := json.Marshal(map[string]any{"api_key": key, "delay_ms": delay.Milliseconds()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/sim/faults", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("POST /sim/faults: %s: %s", resp.Status, b)
	}
	return nil
}

func (s simControl) stats(ctx context.Context, key string) (simStats, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/sim/stats?api_key="+url.QueryEscape(key), nil)
	if err != nil {
		return simStats{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		return simStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return simStats{}, fmt.Errorf("GET /sim/stats: %s: %s", resp.Status, b)
	}
	var st simStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return simStats{}, errors.Join(errors.New("decoding /sim/stats"), err)
	}
	return st, nil
}

// waitHTTP polls url until it answers 200 or timeout passes.
func waitHTTP(ctx context.Context, client *http.Client, u string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s: %v", u, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// skipUnlessProcessTests skips a test that runs the services as processes
// (the fault, replicas and scale-out tests) unless SWITCHYARD_FAULT_TEST=1
// and PostgreSQL are configured, and under -short. what names the test and
// what it does, for the skip message.
func skipUnlessProcessTests(t *testing.T, what string) {
	t.Helper()
	if os.Getenv(EnvFaultTest) != "1" {
		t.Skipf("%s; it runs only with %s=1 (and %s)", what, EnvFaultTest, pgtest.EnvURL)
	}
	if os.Getenv(pgtest.EnvURL) == "" {
		t.Skipf("%s=1 but %s is not set: %s needs PostgreSQL", EnvFaultTest, pgtest.EnvURL, what)
	}
	if testing.Short() {
		t.Skipf("%s; skipped with -short", what)
	}
}

// processFixture is what a test of service processes starts from: the
// built binary in a temporary directory, a migrated schema, the token
// table, a keyring and the skills directory.
type processFixture struct {
	dir, bin, keyring, skillsDir string
	schema                       pgtest.Schema
	toks                         faultTokenSet
}

func newProcessFixture(t *testing.T) processFixture {
	t.Helper()
	f := processFixture{dir: t.TempDir()}
	f.bin = buildSwitchyard(t, f.dir)
	f.schema = pgtest.NewSchema(t, migrations.All()...)
	f.toks = faultTokens(t)
	var err error
	if f.keyring, err = accountpool.GenerateKeyring(); err != nil {
		t.Fatal(err)
	}
	if f.skillsDir, err = filepath.Abs("../skills"); err != nil {
		t.Fatal(err)
	}
	return f
}
