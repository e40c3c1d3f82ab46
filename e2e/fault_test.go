//go:build linux

package e2e_test

// TestFaultInjection runs the whole system as separate OS processes (the
// switchyard binary: sim, activity, accountpool, orchestrator with a durable
// outbox) on PostgreSQL behind a TCP proxy, drives a bounded concurrent
// load of idempotent tasks, and injects one fault at a time while the load
// runs:
//
//	a. kill -9 AccountPool, restart it ~5 s later;
//	b. kill -9 Activity, restart it ~5 s later;
//	c. cut PostgreSQL (proxy down) for ~10 s;
//	d. kill -9 the Orchestrator, restart it ~2 s later on the same port and
//	   outbox directory.
//
// Callers re-send the same request_id until they get an answer. After
// each of the faults a-c the load pauses at a checkpoint and the books must
// reconcile exactly: every upstream call the simulator answered has exactly
// one usage row, no request_id ran the model twice, no activity is RUNNING
// or ABANDONED. After d (last) they must reconcile up to the tasks that were
// in flight inside the killed orchestrator.
//
// It runs only with SWITCHYARD_FAULT_TEST=1 and SWITCHYARD_TEST_DATABASE_URL,
// on Linux, and takes about two minutes:
//
//	SWITCHYARD_FAULT_TEST=1 go test -race -count=1 -run TestFault -v ./e2e/

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/tcpproxy"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// EnvFaultTest enables TestFaultInjection; EnvFaultLogDir, when set, is a
// directory the services' logs are copied to at the end.
const (
	EnvFaultTest   = "SWITCHYARD_FAULT_TEST"
	EnvFaultLogDir = "SWITCHYARD_FAULT_LOG_DIR"
)

const (
	faultOrg         = "fault"
	faultCallers     = 8
	faultCallTimeout = 15 * time.Second // per DelegateTask send
	faultTaskBound   = 60 * time.Second // per task, from its first send
	faultSteady      = 3 * time.Second  // steady load before and after a fault
	// A checkpoint after faults a-c waits this long for the books to
	// balance (the outbox backs off at most 5 s).
	faultCheckpointBound = 30 * time.Second
	// The final quiescence waits this long; it ends early once nothing
	// has changed for faultStableFor with no activity RUNNING.
	faultFinalBound = 60 * time.Second
	faultStableFor  = 8 * time.Second
)

var faultKeys = []string{"sk-ant-sim-scale-fault-a", "sk-ant-sim-scale-fault-b", "sk-ant-sim-scale-fault-c"}

// faultSimDelays are the simulator's delays per call of each key: unequal,
// with a little think time between a caller's tasks, so that the callers do
// not run in lockstep and a fault finds tasks at every step of their flow.
var faultSimDelays = []time.Duration{50 * time.Millisecond, 75 * time.Millisecond, 100 * time.Millisecond}

const faultThinkMax = 25 * time.Millisecond

func TestFaultInjection(t *testing.T) {
	skipUnlessProcessTests(t, "the fault test kills and restarts service processes (about two minutes)")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()

	dir := t.TempDir()
	bin := buildSwitchyard(t, dir)
	t.Logf("built the switchyard binary in %s", time.Since(began).Round(time.Millisecond))

	schema := pgtest.NewSchema(t, migrations.All()...)
	proxy, err := tcpproxy.New(pgtest.HostPort(t, schema.AppURL))
	if err != nil {
		t.Fatalf("starting the PostgreSQL proxy: %v", err)
	}
	t.Cleanup(proxy.Close) // runs after every process is killed (cleanups run last-in first-out)
	dbURL := pgtest.WithHostPort(t, schema.AppURL, proxy.Addr())

	toks := faultTokens(t)
	keyring, err := accountpool.GenerateKeyring()
	if err != nil {
		t.Fatal(err)
	}
	outboxDir := filepath.Join(dir, "outbox")
	if err := os.Mkdir(outboxDir, 0o700); err != nil {
		t.Fatal(err)
	}
	skillsDir, err := filepath.Abs("../skills")
	if err != nil {
		t.Fatal(err)
	}

	addrs := freeAddrs(t, 4)
	simAddr, actAddr, poolAddr, orchAddr := addrs[0], addrs[1], addrs[2], addrs[3]
	common := []string{"SWITCHYARD_LOG_LEVEL=info", "SWITCHYARD_LOG_FORMAT=text"}
	withCommon := func(env ...string) []string { return append(append([]string{}, common...), env...) }
	secured := []string{"SWITCHYARD_TOKENS=" + toks.table}
	simToken, simTokenEnv := newSimToken()
	sim := newProc(t, dir, bin, "sim", simAddr, []string{"sim"}, withCommon("SWITCHYARD_SIM_ADDR="+simAddr, simTokenEnv))
	act := newProc(t, dir, bin, "activity", actAddr, []string{"activity"}, withCommon(append(secured,
		"SWITCHYARD_ACTIVITY_ADDR="+actAddr, "SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL="+dbURL,
		"SWITCHYARD_ABANDON_GRACE=2s", "SWITCHYARD_REAPER_INTERVAL=1s")...))
	pool := newProc(t, dir, bin, "accountpool", poolAddr, []string{"accountpool"}, withCommon(append(secured,
		"SWITCHYARD_ACCOUNTPOOL_ADDR="+poolAddr, "SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL="+dbURL,
		"SWITCHYARD_KEYRING="+keyring)...))
	orch := newProc(t, dir, bin, "orchestrator", orchAddr, []string{"orchestrator"}, withCommon(append(secured,
		"SWITCHYARD_ORCHESTRATOR_TOKEN="+toks.orchestrator.Reveal(),
		"SWITCHYARD_ORCHESTRATOR_ADDR="+orchAddr, "SWITCHYARD_ACCOUNTPOOL_ADDR="+poolAddr, "SWITCHYARD_ACTIVITY_ADDR="+actAddr,
		"SWITCHYARD_ANTHROPIC_BASE_URL=http://"+simAddr, "SWITCHYARD_OUTBOX_DIR="+outboxDir, "SWITCHYARD_SKILLS_DIR="+skillsDir,
		// Short bounds, so that an activity orphaned by the orchestrator
		// kill has a deadline (and is abandoned) within the test.
		"SWITCHYARD_ATTEMPT_TIMEOUT=5s", "SWITCHYARD_MAX_WAIT=1s", "SWITCHYARD_SELECT_TIMEOUT=2s",
		"SWITCHYARD_DRAIN_TIMEOUT=15s")...))
	procs := []*proc{sim, act, pool, orch}
	var loadForDump *faultLoad
	t.Cleanup(func() {
		if keep := os.Getenv(EnvFaultLogDir); keep != "" {
			for _, p := range procs {
				if b, err := os.ReadFile(p.logPath); err == nil {
					_ = os.WriteFile(filepath.Join(keep, p.name+".log"), b, 0o600)
				}
			}
			if load := loadForDump; load != nil {
				_ = os.WriteFile(filepath.Join(keep, "tasks.tsv"), []byte(load.dump(began)), 0o600)
			}
			t.Logf("service logs and tasks.tsv copied to %s", keep)
		}
		if !t.Failed() {
			return
		}
		for _, p := range procs {
			t.Logf("---- last lines of the %s log (set %s to keep the whole logs):\n%s", p.name, EnvFaultLogDir, p.logTail(30))
		}
	})

	health := map[*proc]healthpb.HealthClient{}
	for _, p := range []*proc{act, pool, orch} {
		health[p] = healthpb.NewHealthClient(dialFast(t, p.addr, secret.String{}))
	}
	httpClient := &http.Client{Timeout: 10 * time.Second}
	simc := simControl{base: "http://" + simAddr, client: httpClient, token: simToken}

	mustStart := func(p *proc) {
		t.Helper()
		if err := p.start(); err != nil {
			t.Fatal(err)
		}
	}
	mustServe := func(p *proc) time.Duration {
		t.Helper()
		d, err := waitServing(ctx, health[p], p, 60*time.Second)
		if err != nil {
			t.Fatalf("%v\n%s log:\n%s", err, p.name, p.logTail(30))
		}
		return d
	}
	mustStart(sim)
	if err := waitHTTP(ctx, httpClient, simc.base+"/healthz", 30*time.Second); err != nil {
		t.Fatalf("%v\nsim log:\n%s", err, sim.logTail(30))
	}
	mustStart(act)
	mustStart(pool)
	mustServe(act)
	mustServe(pool)
	mustStart(orch)
	mustServe(orch)
	t.Logf("stack up (%s after start): sim %s, activity %s, accountpool %s, orchestrator %s, PostgreSQL via proxy %s",
		time.Since(began).Round(time.Millisecond), simAddr, actAddr, poolAddr, orchAddr, proxy.Addr())

	admin := faultClients{
		pool:     accountpoolv1.NewAccountPoolServiceClient(dialFast(t, poolAddr, toks.admin)),
		activity: activityv1.NewActivityServiceClient(dialFast(t, actAddr, toks.admin)),
		sim:      simc,
	}
	keyOf := map[string]string{} // account id -> API key
	for i, key := range faultKeys {
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := admin.pool.RegisterAccount(rctx, &accountpoolv1.RegisterAccountRequest{
			OrganizationId: faultOrg, Name: fmt.Sprintf("fault-%c", 'a'+i), ApiKey: key, Tier: "scale",
		})
		rcancel()
		if err != nil {
			t.Fatalf("registering account %d: %v", i, err)
		}
		keyOf[resp.GetAccount().GetId()] = key
		if err := simc.setDelay(ctx, key, faultSimDelays[i]); err != nil {
			t.Fatalf("scripting the simulator delay: %v", err)
		}
	}
	admin.keyOf = keyOf

	load := newFaultLoad(orchestratorv1.NewOrchestratorServiceClient(dialFast(t, orchAddr, toks.org)))
	loadForDump = load
	load.start(ctx, faultCallers)
	defer load.shutdown(10 * time.Second) // only matters when the test stops early

	var phases []*faultPhase
	var prev *faultSnapshot
	checkpoint := func(ph *faultPhase) {
		t.Helper()
		load.pause()
		paused := time.Now()
		if !load.waitIdle(faultTaskBound + faultCallTimeout + 5*time.Second) {
			t.Errorf("%s: callers still busy %s after the load paused", ph.name, time.Since(paused).Round(time.Millisecond))
		}
		ph.end = time.Now()
		snap, waited, exact := admin.quiesce(ctx, t, load, faultCheckpointBound, nil)
		ph.snap, ph.quiesced, ph.exact = snap, waited, exact
		ph.rec = reconcile(load, snap)
		if !exact {
			t.Errorf("%s: the books did not balance within %s of the load pausing (no orchestrator was killed, so nothing may be lost): %s",
				ph.name, faultCheckpointBound, ph.rec.problems())
		}
		ph.prev = prev
		prev = snap
		phases = append(phases, ph)
	}
	restoreAndMeasure := func(ph *faultPhase, p *proc, restore func()) {
		t.Helper()
		restore()
		ph.restore = time.Now()
		var wg sync.WaitGroup
		ph.health = -1
		if p != nil {
			wg.Go(func() {
				d, err := waitServing(ctx, health[p], p, 60*time.Second)
				if err != nil {
					t.Errorf("%s: %v", ph.name, err)
					return
				}
				ph.health = d
			})
		}
		ph.firstSuccess, ph.recovered = load.probe(ctx, ph.label, ph.restore, 60*time.Second)
		wg.Wait()
		if !ph.recovered {
			t.Errorf("%s: no new task succeeded within 60s of the restore", ph.name)
		}
	}

	// Baseline: steady load, no fault. It also checks the test's own
	// accounting.
	base := &faultPhase{name: "0 steady load, no fault", label: "steady", start: time.Now()}
	load.setPhase(0)
	load.resume()
	sleepCtx(ctx, faultSteady+time.Second)
	base.inject, base.restore = time.Now(), time.Now()
	base.health = -1
	checkpoint(base)

	kill := func(idx int, label, name string, p *proc, outage time.Duration) {
		ph := &faultPhase{name: name, label: label, start: time.Now(), idx: idx}
		load.setPhase(idx)
		load.resume()
		sleepCtx(ctx, faultSteady)
		ph.inject = time.Now()
		p.kill()
		sleepCtx(ctx, outage)
		restoreAndMeasure(ph, p, func() {
			if err := p.start(); err != nil {
				t.Fatal(err)
			}
		})
		sleepCtx(ctx, faultSteady)
		checkpoint(ph)
	}
	kill(1, "pool", "a accountpool kill -9", pool, 5*time.Second)
	kill(2, "activity", "b activity kill -9", act, 5*time.Second)

	pg := &faultPhase{name: "c PostgreSQL down (proxy)", label: "pg", start: time.Now(), idx: 3}
	load.setPhase(3)
	load.resume()
	sleepCtx(ctx, faultSteady)
	pg.inject = time.Now()
	proxy.Down()
	sleepCtx(ctx, 10*time.Second)
	restoreAndMeasure(pg, nil, proxy.Up)
	sleepCtx(ctx, faultSteady)
	checkpoint(pg)

	// d: the orchestrator, last. The tasks unanswered at the kill are the
	// allowance: their upstream call may have been answered and never
	// recorded, and their run may be abandoned and run again.
	oph := &faultPhase{name: "d orchestrator kill -9", label: "orch", start: time.Now(), idx: 4, orchKill: true}
	load.setPhase(4)
	load.resume()
	sleepCtx(ctx, faultSteady)
	oph.inject = time.Now()
	oph.inflight = load.unansweredIDs()
	orch.kill()
	sleepCtx(ctx, 2*time.Second)
	restoreAndMeasure(oph, orch, func() {
		if err := orch.start(); err != nil {
			t.Fatal(err)
		}
	})
	sleepCtx(ctx, faultSteady)
	load.pause()
	load.shutdown(faultTaskBound + faultCallTimeout + 5*time.Second)
	oph.end = time.Now()
	allowance := len(oph.inflight)
	inflight := idSet(oph.inflight)
	snap, waited, exact := admin.quiesce(ctx, t, load, faultFinalBound, inflight)
	oph.quiesced, oph.exact = waited, exact

	// The restarted orchestrator drains on SIGTERM: its log says whether
	// every outbox record was delivered; the books are then final.
	graceful, state := orch.stop(45 * time.Second)
	drained := orch.logLines("drained; every bookkeeping record was delivered")
	undelivered := orch.logLines("stopped with bookkeeping records undelivered")
	leftLines := orch.logLines("outbox: delivering records left by the previous process")
	final, err := admin.snapshot(ctx, true)
	if err != nil {
		t.Fatalf("final snapshot: %v", err)
	}
	if final.fingerprint() != snap.fingerprint() {
		t.Logf("note: the books changed after the quiescence poll ended, during the orchestrator's drain: before %s, after %s", snap.fingerprint(), final.fingerprint())
	}
	oph.snap, oph.prev = final, prev
	oph.rec = reconcile(load, final)
	phases = append(phases, oph)

	// ---- The report.
	t.Logf("restarted orchestrator: outbox records left by the killed process: %s", orEmpty(leftLines))
	t.Logf("orchestrator SIGTERM drain: exited gracefully=%v (%s); drained line: %s; undelivered line: %s",
		graceful, state, orEmpty(drained), orEmpty(undelivered))
	logFaultReport(t, load, phases, allowance, began)
	for _, p := range procs {
		t.Logf("%s: %d start(s), %d ERROR log lines, %d WARN log lines", p.name, p.starts, len(p.logLines("level=ERROR")), len(p.logLines("level=WARN")))
	}
	t.Logf("tasks unanswered at the orchestrator kill (the allowance, %d): %s", allowance, strings.Join(oph.inflight, ", "))
	for _, id := range oph.inflight {
		t.Logf("  %s", load.describe(id, final))
	}
	t.Logf("tasks in flight at the orchestrator kill: %s", load.answeredAfter(oph.inflight, oph.inject))

	// ---- The contract.
	rec := oph.rec
	if !graceful || len(drained) == 0 {
		t.Errorf("the restarted orchestrator did not drain its outbox on SIGTERM (graceful=%v, %s; undelivered: %s)", graceful, state, orEmpty(undelivered))
	}
	if rec.unanswered > 0 {
		t.Errorf("%d tasks got no answer within %s of re-sending: %s", rec.unanswered, faultTaskBound, strings.Join(rec.unansweredIDs, ", "))
	}
	for _, k := range faultKeys {
		d := rec.perKey[k]
		if d.calls < 0 || d.in < 0 || d.out < 0 || d.cacheRead < 0 || d.cacheCreate < 0 {
			t.Errorf("key %s: the ledger bills more than the simulator answered (sim − ledger: %+v): usage was counted twice", k, d)
		}
	}
	if rec.total.calls > int64(allowance) {
		t.Errorf("%d upstream calls the simulator answered have no usage row; at most %d (the tasks in flight at the orchestrator kill) may be missing; sim − ledger: %+v",
			rec.total.calls, allowance, rec.total)
	}
	if delta := rec.total.calls - phases[len(phases)-2].rec.total.calls; delta > int64(allowance) {
		t.Errorf("the orchestrator kill lost %d usage rows, more than the %d tasks in flight at the kill", delta, allowance)
	}
	if rec.total.calls == 0 && (rec.total.in != 0 || rec.total.out != 0 || rec.total.cacheRead != 0 || rec.total.cacheCreate != 0) {
		t.Errorf("every simulator call has a usage row, yet the token totals differ (sim − ledger: %+v)", rec.total)
	}
	if rec.total.calls > 0 && (rec.total.in > rec.total.calls*rec.maxRow.in || rec.total.out > rec.total.calls*rec.maxRow.out) {
		t.Errorf("token totals differ by more than %d calls can explain (sim − ledger: %+v; largest row: %+v)", rec.total.calls, rec.total, rec.maxRow)
	}
	if n := len(rec.doubled); n > allowance {
		t.Errorf("%d request ids ran the model twice (SUCCESS rows in two runs), more than the %d in flight at the orchestrator kill: %s", n, allowance, strings.Join(rec.doubled, ", "))
	}
	for _, id := range rec.doubled {
		if !inflight[id] {
			t.Errorf("request id %s ran the model twice but was not in flight at the orchestrator kill: %s", id, load.describe(id, final))
		}
	}
	if rec.extraRuns > int64(allowance) {
		t.Errorf("the simulator answered %d more successful calls than tasks succeeded; at most %d (the tasks in flight at the orchestrator kill) may have run twice", rec.extraRuns, allowance)
	}
	if len(rec.running) > 0 {
		t.Errorf("%d activities are still RUNNING after quiescence: %s", len(rec.running), strings.Join(rec.running, ", "))
	}
	for _, id := range rec.abandoned {
		if !inflight[id] {
			t.Errorf("the activity of request id %s was ABANDONED but that task was not in flight at the orchestrator kill: %s", id, load.describe(id, final))
		}
	}
	if len(rec.notCompleted) > 0 {
		t.Errorf("%d tasks answered SUCCESS but their activity is not COMPLETED: %s", len(rec.notCompleted), strings.Join(rec.notCompleted, ", "))
	}
	if len(rec.unbilled) > 0 {
		t.Errorf("%d tasks answered SUCCESS but the ledger has no SUCCESS row for their run: %s", len(rec.unbilled), strings.Join(rec.unbilled, ", "))
	}
	if final.dupAttempts > 0 || final.legacyRows > 0 || final.unknownAccountRows > 0 {
		t.Errorf("ledger: %d (request_id, attempt) pairs with more than one row, %d legacy-mode rows, %d rows of unknown accounts", final.dupAttempts, final.legacyRows, final.unknownAccountRows)
	}
	for _, p := range procs {
		if p.exited() {
			t.Errorf("%s exited on its own during the test", p.name)
		}
	}
	t.Logf("fault test took %s (quiescence after the orchestrator kill: %s; books exact without the allowance: %v)", time.Since(began).Round(time.Millisecond), waited.Round(time.Millisecond), exact)
}

// faultTokens are the bearer tokens of the fault test and their table.
type faultTokenSet struct {
	table                    string
	admin, orchestrator, org secret.String
}

func faultTokens(t *testing.T) faultTokenSet {
	t.Helper()
	var ts faultTokenSet
	var table strings.Builder
	for _, e := range []struct {
		dst       *secret.String
		principal string
	}{{&ts.admin, "admin"}, {&ts.orchestrator, "orchestrator"}, {&ts.org, "org:" + faultOrg}} {
		tok, err := auth.GenerateToken()
		if err != nil {
			t.Fatal(err)
		}
		*e.dst = tok
		fmt.Fprintf(&table, "%s %s\n", auth.HashToken(tok.Reveal()), e.principal)
	}
	ts.table = table.String()
	if _, err := auth.ParseTokens(ts.table); err != nil {
		t.Fatal(err)
	}
	return ts
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func orEmpty(lines []string) string {
	if len(lines) == 0 {
		return "(none)"
	}
	return strings.Join(lines, " | ")
}
