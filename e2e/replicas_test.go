//go:build linux

package e2e_test

// TestReplicasShareOnlyPostgreSQL runs two Orchestrator and two Activity
// processes (and one AccountPool) that share nothing but PostgreSQL: each
// orchestrator is given both Activity replicas as a comma-separated
// SWITCHYARD_ACTIVITY_ADDR and balances over them (round_robin). Tasks sent
// to both orchestrators all complete, their activities read the same
// through either Activity replica, and killing one Activity replica (kill
// -9) under load leaves every task completing: TrackStart is retried on
// the other replica, the bookkeeping outbox delivers there.
//
// Like the fault test it runs only with SWITCHYARD_FAULT_TEST=1 and
// SWITCHYARD_TEST_DATABASE_URL, on Linux:
//
//	SWITCHYARD_FAULT_TEST=1 go test -race -count=1 -run TestReplicas -v ./e2e/

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
)

const (
	replicasCallers = 6
	// Tasks of the first part, both Activity replicas up.
	replicasTasksUp = 24
	// In the second part, one Activity replica is killed once this many
	// tasks have been answered, and the load goes on until this many more
	// have been answered after the kill.
	replicasBeforeKill = 12
	replicasAfterKill  = 24
	// Bounds of waits (never measured): a task's call, and the outbox
	// delivering what it still holds (it backs off at most 5 s).
	replicasCallTimeout = 30 * time.Second
	replicasSettleBound = 30 * time.Second
)

var replicasKeys = []string{"sk-ant-sim-scale-replicas-a", "sk-ant-sim-scale-replicas-b"}

// replicaTask is one task of the test and its only answer.
type replicaTask struct {
	id   string
	orch int // the orchestrator it was sent to
	resp *orchestratorv1.DelegateTaskResponse
	err  error
}

func TestReplicasShareOnlyPostgreSQL(t *testing.T) {
	skipUnlessProcessTests(t, "the replicas test runs six service processes and kills one")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	f := newProcessFixture(t)
	dir, bin, schema, toks, keyring, skillsDir := f.dir, f.bin, f.schema, f.toks, f.keyring, f.skillsDir

	addrs := freeAddrs(t, 6)
	simAddr, poolAddr := addrs[0], addrs[1]
	actAddrs, orchAddrs := addrs[2:4], addrs[4:6]
	// Debug: the test counts calls in the access log, whose lines for
	// calls that succeed are at debug.
	common := []string{"SWITCHYARD_LOG_LEVEL=debug", "SWITCHYARD_LOG_FORMAT=text", "SWITCHYARD_TOKENS=" + toks.table}
	withCommon := func(env ...string) []string { return append(append([]string{}, common...), env...) }
	simToken, simTokenEnv := newSimToken()
	sim := newProc(t, dir, bin, "sim", simAddr, []string{"sim"}, []string{"SWITCHYARD_SIM_ADDR=" + simAddr, simTokenEnv})
	pool := newProc(t, dir, bin, "accountpool", poolAddr, []string{"accountpool"}, withCommon(
		"SWITCHYARD_ACCOUNTPOOL_ADDR="+poolAddr, "SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL="+schema.AppURL,
		"SWITCHYARD_KEYRING="+keyring))
	var acts, orchs []*proc
	for i, addr := range actAddrs {
		acts = append(acts, newProc(t, dir, bin, fmt.Sprintf("activity-%d", i+1), addr, []string{"activity"}, withCommon(
			"SWITCHYARD_ACTIVITY_ADDR="+addr, "SWITCHYARD_STORE=postgres", "SWITCHYARD_DATABASE_URL="+schema.AppURL)))
	}
	for i, addr := range orchAddrs {
		outbox := filepath.Join(dir, fmt.Sprintf("outbox-%d", i+1))
		if err := os.Mkdir(outbox, 0o700); err != nil {
			t.Fatal(err)
		}
		orchs = append(orchs, newProc(t, dir, bin, fmt.Sprintf("orchestrator-%d", i+1), addr, []string{"orchestrator"}, withCommon(
			"SWITCHYARD_ORCHESTRATOR_TOKEN="+toks.orchestrator.Reveal(), "SWITCHYARD_ORCHESTRATOR_ADDR="+addr,
			"SWITCHYARD_ACCOUNTPOOL_ADDR="+poolAddr,
			// Both Activity replicas, as an operator would list them.
			"SWITCHYARD_ACTIVITY_ADDR="+actAddrs[0]+","+actAddrs[1],
			"SWITCHYARD_ANTHROPIC_BASE_URL=http://"+simAddr, "SWITCHYARD_OUTBOX_DIR="+outbox, "SWITCHYARD_SKILLS_DIR="+skillsDir)))
	}
	procs := append(append([]*proc{sim, pool}, acts...), orchs...)
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

	health := map[*proc]healthpb.HealthClient{}
	for _, p := range procs[1:] {
		health[p] = healthpb.NewHealthClient(dialFast(t, p.addr, secret.String{}))
	}
	mustStart := func(ps ...*proc) {
		t.Helper()
		for _, p := range ps {
			if err := p.start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustServe := func(ps ...*proc) {
		t.Helper()
		for _, p := range ps {
			if _, err := waitServing(ctx, health[p], p, 60*time.Second); err != nil {
				t.Fatalf("%v\n%s log:\n%s", err, p.name, p.logTail(30))
			}
		}
	}
	httpClient := &http.Client{Timeout: 10 * time.Second}
	simc := simControl{base: "http://" + simAddr, client: httpClient, token: simToken}
	mustStart(sim)
	if err := waitHTTP(ctx, httpClient, simc.base+"/healthz", 30*time.Second); err != nil {
		t.Fatalf("%v\nsim log:\n%s", err, sim.logTail(30))
	}
	mustStart(append([]*proc{pool}, acts...)...)
	mustServe(append([]*proc{pool}, acts...)...)
	mustStart(orchs...)
	mustServe(orchs...)

	poolAdmin := accountpoolv1.NewAccountPoolServiceClient(dialFast(t, poolAddr, toks.admin))
	for i, key := range replicasKeys {
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := poolAdmin.RegisterAccount(rctx, &accountpoolv1.RegisterAccountRequest{
			OrganizationId: faultOrg, Name: fmt.Sprintf("replicas-%c", 'a'+i), ApiKey: key, Tier: "scale",
		})
		rcancel()
		if err != nil {
			t.Fatalf("registering account %d: %v", i, err)
		}
		// Calls that take a while, so that the kill finds tasks in flight.
		if err := simc.setDelay(ctx, key, 40*time.Millisecond); err != nil {
			t.Fatalf("scripting the simulator delay: %v", err)
		}
	}
	var orchClients []orchestratorv1.OrchestratorServiceClient
	for _, addr := range orchAddrs {
		orchClients = append(orchClients, orchestratorv1.NewOrchestratorServiceClient(dialFast(t, addr, toks.org)))
	}
	var actClients []activityv1.ActivityServiceClient
	for _, addr := range actAddrs {
		actClients = append(actClients, activityv1.NewActivityServiceClient(dialFast(t, addr, toks.admin)))
	}

	// The load: callers take task numbers in turn and send each task once,
	// to the orchestrators alternately, until stop says so.
	var (
		mu       sync.Mutex
		tasks    []*replicaTask
		answered atomic.Int64
	)
	run := func(prefix string, stop func(answered int64) bool) []*replicaTask {
		var next atomic.Int64
		var mine []*replicaTask
		var wg sync.WaitGroup
		for range replicasCallers {
			wg.Go(func() {
				for ctx.Err() == nil && !stop(answered.Load()) {
					n := next.Add(1) - 1
					task := &replicaTask{id: fmt.Sprintf("%s-%03d", prefix, n), orch: int(n % 2)}
					cctx, ccancel := context.WithTimeout(ctx, replicasCallTimeout)
					task.resp, task.err = orchClients[task.orch].DelegateTask(cctx, &orchestratorv1.DelegateTaskRequest{
						OrganizationId: faultOrg, Category: "quick", RequestId: task.id, MaxTokens: 128,
						Prompt: "Replicas test task " + task.id + ": answer in one line.", SessionId: "replicas-" + prefix, UserId: "replicas",
					})
					ccancel()
					answered.Add(1)
					mu.Lock()
					tasks, mine = append(tasks, task), append(mine, task)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return mine
	}
	checkAnswers := func(part string, ts []*replicaTask) {
		t.Helper()
		perOrch := [2]int{}
		for _, task := range ts {
			perOrch[task.orch]++
			switch {
			case task.err != nil:
				t.Errorf("%s: task %s (orchestrator-%d) failed: %v", part, task.id, task.orch+1, task.err)
			case task.resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS:
				t.Errorf("%s: task %s (orchestrator-%d) answered %s: %s", part, task.id, task.orch+1, task.resp.GetStatus(), task.resp.GetError())
			case len(task.resp.GetMetadata().GetBookkeepingErrors()) > 0:
				t.Errorf("%s: task %s (orchestrator-%d) lost bookkeeping: %v", part, task.id, task.orch+1, task.resp.GetMetadata().GetBookkeepingErrors())
			case task.resp.GetMetadata().GetActivityId() == "":
				t.Errorf("%s: task %s (orchestrator-%d) has no activity", part, task.id, task.orch+1)
			}
		}
		t.Logf("%s: %d tasks answered, %d by orchestrator-1 and %d by orchestrator-2", part, len(ts), perOrch[0], perOrch[1])
	}
	trackStarts := func(p *proc) int { return len(p.logLines(`msg="finished call"`, "grpc.method=TrackStart")) }

	// ---- 1. Both Activity replicas up.
	up := run("up", func(n int64) bool { return n >= replicasTasksUp })
	checkAnswers("both Activity replicas up", up)
	for _, p := range acts {
		n := trackStarts(p)
		t.Logf("%s served %d TrackStart calls", p.name, n)
		if n == 0 {
			t.Errorf("%s served no TrackStart: the orchestrators do not balance over both Activity replicas", p.name)
		}
	}
	requireReadableThroughEach(ctx, t, actClients, up)

	// ---- 2. Kill one Activity replica under load.
	killed := acts[1]
	var killedAt atomic.Int64
	killedAt.Store(-1)
	var killOnce sync.Once
	base := answered.Load()
	under := run("kill", func(n int64) bool {
		if n-base >= replicasBeforeKill {
			killOnce.Do(func() {
				killed.kill()
				killedAt.Store(n)
				t.Logf("killed %s (kill -9) after %d tasks of this part were answered", killed.name, n-base)
			})
		}
		at := killedAt.Load()
		return at >= 0 && n-at >= replicasAfterKill
	})
	checkAnswers("one Activity replica killed", under)
	if n := trackStarts(acts[0]); n == 0 {
		t.Errorf("%s served no TrackStart", acts[0].name)
	}

	// The books, with the killed replica back: every task's activity is
	// COMPLETED and reads the same through either replica, and every task
	// has exactly one successful usage row.
	if err := killed.start(); err != nil {
		t.Fatal(err)
	}
	mustServe(killed)
	mu.Lock()
	all := append([]*replicaTask(nil), tasks...)
	mu.Unlock()
	requireReadableThroughEach(ctx, t, actClients, all)
	requireOneSuccessRowEach(ctx, t, poolAdmin, all)
	for _, a := range actClients {
		resp, err := a.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: faultOrg,
			Status: activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING, PageSize: 100})
		if err != nil {
			t.Fatalf("ListActivities: %v", err)
		}
		if n := len(resp.GetActivities()); n > 0 {
			t.Errorf("%d activities are still RUNNING", n)
		}
	}
	for _, p := range procs {
		if p.exited() {
			t.Errorf("%s exited on its own during the test", p.name)
		}
	}
}

// requireReadableThroughEach waits until every task's activity is
// COMPLETED through the first replica (a completion the outbox still held
// when the task answered is delivered soon after), then reads each through
// every replica and requires the same activity from all.
func requireReadableThroughEach(ctx context.Context, t *testing.T, replicas []activityv1.ActivityServiceClient, tasks []*replicaTask) {
	t.Helper()
	get := func(c activityv1.ActivityServiceClient, id string) (*activityv1.Activity, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := c.GetActivity(cctx, &activityv1.GetActivityRequest{OrganizationId: faultOrg, ActivityId: id})
		return resp.GetActivity(), err
	}
	deadline := time.Now().Add(replicasSettleBound)
	for _, task := range tasks {
		id := task.resp.GetMetadata().GetActivityId()
		if task.err != nil || id == "" {
			continue // reported by checkAnswers
		}
		var first *activityv1.Activity
		for {
			a, err := get(replicas[0], id)
			if err == nil && a.GetStatus() == activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED {
				first = a
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the activity of task %s is not COMPLETED within %s of the load ending: %v, %v", task.id, replicasSettleBound, a.GetStatus(), status.Convert(err).Message())
				break
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
		if first == nil {
			continue
		}
		if got := requestOf(first); got != task.id {
			t.Errorf("the activity of task %s carries request_id %q", task.id, got)
		}
		for i, c := range replicas[1:] {
			a, err := get(c, id)
			if err != nil {
				t.Errorf("reading the activity of task %s through activity-%d: %v", task.id, i+2, err)
				continue
			}
			if !proto.Equal(a, first) {
				t.Errorf("the activity of task %s reads differently through activity-1 and activity-%d:\n%v\n%v", task.id, i+2, first, a)
			}
		}
	}
}

// requireOneSuccessRowEach requires exactly one SUCCESS usage row for every
// task (none missing, none doubled), waiting for the outbox as above.
func requireOneSuccessRowEach(ctx context.Context, t *testing.T, pool accountpoolv1.AccountPoolServiceClient, tasks []*replicaTask) {
	t.Helper()
	deadline := time.Now().Add(replicasSettleBound)
	for {
		success := map[string]int{}
		token := ""
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := pool.GetUsage(cctx, &accountpoolv1.GetUsageRequest{OrganizationId: faultOrg, IncludeRecords: true, PageSize: 1000, PageToken: token})
			cancel()
			if err != nil {
				t.Fatalf("GetUsage: %v", err)
			}
			for _, r := range resp.GetRecords() {
				if r.GetOutcome() == accountpoolv1.Outcome_OUTCOME_SUCCESS {
					success[r.GetRequestId()]++
				}
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		var wrong []string
		for _, task := range tasks {
			if n := success[task.id]; n != 1 && task.err == nil {
				wrong = append(wrong, fmt.Sprintf("%s: %d", task.id, n))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(wrong)
			t.Errorf("tasks without exactly one SUCCESS usage row %s after the load ended: %s", replicasSettleBound, strings.Join(wrong, ", "))
			return
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}
