//go:build linux

package e2e_test

// TestScaleOutAccountPools runs three AccountPool processes that share
// their live state (capacity buckets, cool-downs, breakers, leases,
// session pins) in one Redis and their accounts in one PostgreSQL, behind
// two Orchestrators that each balance over all three (round_robin), with
// one Activity and one simulator. Each scenario has an organization of its
// own:
//
//  1. burst: a concurrent burst through both orchestrators against two
//     tier-1 accounts is never admitted beyond the accounts' buckets: the
//     simulator, which meters the same buckets, answers no 429;
//  2. cooldown: a 429 cool-down learned through one replica is shown and
//     honoured by all three;
//  3. breaker: upstream errors recorded through different replicas add up
//     to one breaker, open on all three;
//  4. session: a session pinned on one replica selects the same account on
//     the others;
//  5. lease: a lease issued by one replica holds its reservation as seen by
//     another, and settles (once) through a third;
//  6. kill: an AccountPool replica killed (kill -9) under load costs a
//     minority of tasks in flight and no capacity for good: every lease in
//     Redis, the dead replica's included, is settled or expires (lease
//     timeout 5s), and every bucket is whole again.
//
// Like the fault and replicas tests it runs only with SWITCHYARD_FAULT_TEST=1
// and SWITCHYARD_TEST_DATABASE_URL, and it needs SWITCHYARD_TEST_REDIS_URL:
//
//	SWITCHYARD_FAULT_TEST=1 go test -race -count=1 -run TestScaleOut -v ./e2e/

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/redistest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
)

const (
	scalePools = 3
	// scaleModel is what the direct SelectAccount calls name: the model of
	// the "quick" category, family haiku.
	scaleModel  = "claude-haiku-4-5"
	scaleFamily = "haiku"
	// The tier-1 buckets (pool.DefaultTiers and anthropicsim.DefaultTiers
	// agree).
	tier1RPM      = 50
	tier1InputTPM = 30_000
	// scaleLeaseTimeout is every pool's SWITCHYARD_LEASE_TIMEOUT.
	scaleLeaseTimeout = 5 * time.Second

	// Scenario 1.
	burstTasks    = 160
	burstCallers  = 16
	burstDeadline = 3 * time.Second
	// Scenario 6.
	killCallers     = 8
	killSimDelay    = 300 * time.Millisecond
	killBefore      = 1500 * time.Millisecond // load before the kill
	killAfter       = 3500 * time.Millisecond // load after the kill
	killSettleAfter = 1500 * time.Millisecond // tasks started this long after the kill must all succeed
	killCallTimeout = 20 * time.Second        // a task that takes this long hung
	hogInput        = 5_000_000               // scenario 4: half a scale account's input bucket
	orphanInput     = 1_000_000               // the dead replica's unsettled reservation (of scale's 10,000,000)
	// Bounds of waits (never asserted as timings).
	scaleVisibleBound = 20 * time.Second
	scaleLeasesBound  = 30 * time.Second
)

// scaleEnv is the running topology and its clients.
type scaleEnv struct {
	t   *testing.T
	ctx context.Context

	uniq    string // makes simulator keys unique to this run
	sim     simControl
	pools   []*proc
	health  map[*proc]healthpb.HealthClient
	admin   []accountpoolv1.AccountPoolServiceClient // per pool replica, admin token
	orchTok []accountpoolv1.AccountPoolServiceClient // per pool replica, orchestrator token
	orchs   []orchestratorv1.OrchestratorServiceClient
	rdb     *redis.Client
	ns      string
}

func TestScaleOutAccountPools(t *testing.T) {
	skipUnlessProcessTests(t, "the scale-out test runs eight service processes and kills one (it also needs "+redistest.EnvURL+")")
	rdb := redistest.Client(t) // skips without SWITCHYARD_TEST_REDIS_URL
	ns := redistest.Namespace(t, rdb)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	began := time.Now()

	f := newProcessFixture(t)
	dir, bin, schema, toks, keyring, skillsDir := f.dir, f.bin, f.schema, f.toks, f.keyring, f.skillsDir

	addrs := freeAddrs(t, 2+scalePools+2)
	simAddr, actAddr := addrs[0], addrs[1]
	poolAddrs, orchAddrs := addrs[2:2+scalePools], addrs[2+scalePools:]
	// Debug: the test counts calls in the access log, whose lines for
	// calls that succeed are at debug.
	common := []string{"SWITCHYARD_LOG_LEVEL=debug", "SWITCHYARD_LOG_FORMAT=text", "SWITCHYARD_TOKENS=" + toks.table}
	withCommon := func(env ...string) []string { return append(append([]string{}, common...), env...) }
	simToken, simTokenEnv := newSimToken()
	sim := newProc(t, dir, bin, "sim", simAddr, []string{"sim"}, []string{"SWITCHYARD_SIM_ADDR=" + simAddr, simTokenEnv})
	var pools []*proc
	for i, addr := range poolAddrs {
		pools = append(pools, newProc(t, dir, bin, fmt.Sprintf("accountpool-%d", i), addr, []string{"accountpool"}, withCommon(
			"SWITCHYARD_ACCOUNTPOOL_ADDR="+addr, "SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL="+schema.AppURL,
			"SWITCHYARD_KEYRING="+keyring,
			"SWITCHYARD_STATE=redis", "SWITCHYARD_REDIS_URL="+redistest.URL(t), "SWITCHYARD_REDIS_NAMESPACE="+ns,
			"SWITCHYARD_LEASE_TIMEOUT="+scaleLeaseTimeout.String())))
	}
	act := newProc(t, dir, bin, "activity", actAddr, []string{"activity"}, withCommon(
		"SWITCHYARD_ACTIVITY_ADDR="+actAddr, "SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL="+schema.AppURL))
	var orchs []*proc
	for i, addr := range orchAddrs {
		outbox := filepath.Join(dir, fmt.Sprintf("outbox-%d", i))
		if err := os.Mkdir(outbox, 0o700); err != nil {
			t.Fatal(err)
		}
		orchs = append(orchs, newProc(t, dir, bin, fmt.Sprintf("orchestrator-%d", i), addr, []string{"orchestrator"}, withCommon(
			"SWITCHYARD_ORCHESTRATOR_TOKEN="+toks.orchestrator.Reveal(), "SWITCHYARD_ORCHESTRATOR_ADDR="+addr,
			// Every AccountPool replica, as an operator would list them.
			"SWITCHYARD_ACCOUNTPOOL_ADDR="+strings.Join(poolAddrs, ","),
			"SWITCHYARD_ACTIVITY_ADDR="+actAddr,
			"SWITCHYARD_ANTHROPIC_BASE_URL=http://"+simAddr, "SWITCHYARD_OUTBOX_DIR="+outbox, "SWITCHYARD_SKILLS_DIR="+skillsDir)))
	}
	procs := append(append(append([]*proc{sim}, pools...), act), orchs...)
	t.Cleanup(func() {
		if keep := os.Getenv(EnvFaultLogDir); keep != "" {
			for _, p := range procs {
				if b, err := os.ReadFile(p.logPath); err == nil {
					_ = os.WriteFile(filepath.Join(keep, p.name+".log"), b, 0o600)
				}
			}
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("---- last lines of the %s log (set %s to keep the whole logs):\n%s", p.name, EnvFaultLogDir, p.logTail(30))
			}
		}
	})

	e := &scaleEnv{t: t, ctx: ctx, pools: pools, rdb: rdb, ns: ns, health: map[*proc]healthpb.HealthClient{},
		uniq: ns[len(ns)-12:]}
	for _, p := range procs[1:] {
		e.health[p] = healthpb.NewHealthClient(dialFast(t, p.addr, secret.String{}))
	}
	httpClient := &http.Client{Timeout: 10 * time.Second}
	e.sim = simControl{base: "http://" + simAddr, client: httpClient, token: simToken}
	if err := sim.start(); err != nil {
		t.Fatal(err)
	}
	if err := waitHTTP(ctx, httpClient, e.sim.base+"/healthz", 30*time.Second); err != nil {
		t.Fatalf("%v\nsim log:\n%s", err, sim.logTail(30))
	}
	e.mustStart(append(append([]*proc{}, pools...), act)...)
	e.mustServe(append(append([]*proc{}, pools...), act)...)
	e.mustStart(orchs...)
	e.mustServe(orchs...)
	t.Logf("stack up %s after start: 3 accountpools on Redis namespace %s, 2 orchestrators, 1 activity, sim",
		time.Since(began).Round(time.Millisecond), ns)

	for _, addr := range poolAddrs {
		e.admin = append(e.admin, accountpoolv1.NewAccountPoolServiceClient(dialFast(t, addr, toks.admin)))
		e.orchTok = append(e.orchTok, accountpoolv1.NewAccountPoolServiceClient(dialFast(t, addr, toks.orchestrator)))
	}
	for _, addr := range orchAddrs {
		// The admin token may delegate for any organization; each
		// scenario has its own.
		e.orchs = append(e.orchs, orchestratorv1.NewOrchestratorServiceClient(dialFast(t, addr, toks.admin)))
	}

	t.Run("1-burst-never-overdraws-tier1", e.burst)
	t.Run("2-cooldown-honoured-by-all", e.cooldown)
	t.Run("3-breaker-open-on-all", e.breaker)
	t.Run("4-session-pin-shared", e.session)
	t.Run("5-lease-settles-through-another-replica", e.lease)
	t.Run("6-replica-killed-loses-no-capacity", e.kill)

	for _, p := range procs {
		if p.exited() {
			t.Errorf("%s exited on its own during the test", p.name)
		}
	}
	t.Logf("whole test: %s", time.Since(began).Round(time.Millisecond))
}

func (e *scaleEnv) mustStart(ps ...*proc) {
	e.t.Helper()
	for _, p := range ps {
		if err := p.start(); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *scaleEnv) mustServe(ps ...*proc) {
	e.t.Helper()
	for _, p := range ps {
		if _, err := waitServing(e.ctx, e.health[p], p, 60*time.Second); err != nil {
			e.t.Fatalf("%v\n%s log:\n%s", err, p.name, p.logTail(30))
		}
	}
}

func (e *scaleEnv) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, 15*time.Second)
}

// register registers an account through pool replica via and returns its id.
func (e *scaleEnv) register(t *testing.T, via int, org, name, key, tier string, priority int32) string {
	t.Helper()
	cctx, cancel := e.call()
	defer cancel()
	resp, err := e.admin[via].RegisterAccount(cctx, &accountpoolv1.RegisterAccountRequest{
		OrganizationId: org, Name: name, ApiKey: key, Tier: tier, Priority: priority,
	})
	if err != nil {
		t.Fatalf("registering account %s through accountpool-%d: %v", name, via, err)
	}
	return resp.GetAccount().GetId()
}

func (e *scaleEnv) setStrategy(t *testing.T, via int, org string, s accountpoolv1.SelectionStrategy) {
	t.Helper()
	cctx, cancel := e.call()
	defer cancel()
	if _, err := e.admin[via].UpdateOrganizationSettings(cctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: org, SelectionStrategy: s,
	}); err != nil {
		t.Fatalf("setting %s's strategy to %s through accountpool-%d: %v", org, s, via, err)
	}
}

// waitVisible waits (bounded) until every pool replica lists every one of
// ids in org and, when strategy is set, has org's strategy: each replica
// keeps a view of PostgreSQL that its change notifications refresh.
func (e *scaleEnv) waitVisible(t *testing.T, org string, ids []string, strategy accountpoolv1.SelectionStrategy) {
	t.Helper()
	deadline := time.Now().Add(scaleVisibleBound)
	for i, c := range e.admin {
		for {
			missing, got, err := e.visible(c, org, ids, strategy)
			if err == nil && missing == 0 && (strategy == 0 || got == strategy) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("accountpool-%d does not show %s's %d accounts (missing %d) and strategy %s (has %s) within %s: %v",
					i, org, len(ids), missing, strategy, got, scaleVisibleBound, err)
			}
			sleepCtx(e.ctx, 50*time.Millisecond)
		}
	}
}

func (e *scaleEnv) visible(c accountpoolv1.AccountPoolServiceClient, org string, ids []string, strategy accountpoolv1.SelectionStrategy) (int, accountpoolv1.SelectionStrategy, error) {
	cctx, cancel := e.call()
	defer cancel()
	resp, err := c.ListAccounts(cctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
	if err != nil {
		return len(ids), 0, err
	}
	have := map[string]bool{}
	for _, a := range resp.GetAccounts() {
		have[a.GetId()] = true
	}
	missing := 0
	for _, id := range ids {
		if !have[id] {
			missing++
		}
	}
	var got accountpoolv1.SelectionStrategy
	if strategy != 0 {
		sresp, err := c.GetOrganizationSettings(cctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
		if err != nil {
			return missing, 0, err
		}
		got = sresp.GetSettings().GetSelectionStrategy()
	}
	return missing, got, nil
}

func (e *scaleEnv) getAccount(t *testing.T, via int, org, id string) *accountpoolv1.Account {
	t.Helper()
	cctx, cancel := e.call()
	defer cancel()
	resp, err := e.admin[via].GetAccount(cctx, &accountpoolv1.GetAccountRequest{OrganizationId: org, AccountId: id})
	if err != nil {
		t.Fatalf("GetAccount %s through accountpool-%d: %v", id, via, err)
	}
	return resp.GetAccount()
}

func capacityOf(a *accountpoolv1.Account, family string) *accountpoolv1.Capacity {
	for _, c := range a.GetCapacity() {
		if c.GetModelFamily() == family {
			return c
		}
	}
	return nil
}

func (e *scaleEnv) selectOn(t *testing.T, via int, req *accountpoolv1.SelectAccountRequest) *accountpoolv1.SelectAccountResponse {
	t.Helper()
	cctx, cancel := e.call()
	defer cancel()
	resp, err := e.orchTok[via].SelectAccount(asOrchestrator(cctx, req.GetOrganizationId()), req)
	if err != nil {
		t.Fatalf("SelectAccount (%s, request %s) on accountpool-%d: %v", req.GetOrganizationId(), req.GetRequestId(), via, err)
	}
	if resp.GetLease().GetLeaseId() == "" {
		t.Fatalf("SelectAccount on accountpool-%d answered without a lease: %v", via, resp)
	}
	return resp
}

func (e *scaleEnv) recordOn(t *testing.T, via int, req *accountpoolv1.RecordRequestRequest) *accountpoolv1.RecordRequestResponse {
	t.Helper()
	cctx, cancel := e.call()
	defer cancel()
	resp, err := e.orchTok[via].RecordRequest(asOrchestrator(cctx, req.GetOrganizationId()), req)
	if err != nil {
		t.Fatalf("RecordRequest (%s, request %s) on accountpool-%d: %v", req.GetOrganizationId(), req.GetRequestId(), via, err)
	}
	return resp
}

// asOrchestrator forwards org as the Orchestrator does for its caller: the
// orchestrator token acts only for the organization it forwards.
func asOrchestrator(ctx context.Context, org string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, org)
}

// success is the RecordRequest of a successful attempt on sel's lease.
func success(org, requestID string, sel *accountpoolv1.SelectAccountResponse, in, out int64) *accountpoolv1.RecordRequestRequest {
	return &accountpoolv1.RecordRequestRequest{
		OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: sel.GetLease().GetAccountId(),
		RequestId: requestID, Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS, Model: scaleModel,
		InputTokens: in, OutputTokens: out, HttpStatus: 200, DurationMs: 1,
	}
}

// leaseKey is the Redis key of a lease (redisstate's layout; the test's
// organization ids and lease ids need no escaping).
func (e *scaleEnv) leaseKey(org, leaseID string) string { return e.ns + ":{" + org + "}:l:" + leaseID }

func (e *scaleEnv) openLeases() string { return e.ns + ":leases" }

func (e *scaleEnv) isOpenLease(t *testing.T, org, leaseID string) bool {
	t.Helper()
	_, err := e.rdb.ZScore(e.ctx, e.openLeases(), e.leaseKey(org, leaseID)).Result()
	if errors.Is(err, redis.Nil) {
		return false
	}
	if err != nil {
		t.Fatalf("ZSCORE %s: %v", e.openLeases(), err)
	}
	return true
}

// accessLogSelects counts the SelectAccount calls in a pool's access log.
func accessLogSelects(p *proc) int {
	return len(p.logLines(`msg="finished call"`, "grpc.method=SelectAccount"))
}
