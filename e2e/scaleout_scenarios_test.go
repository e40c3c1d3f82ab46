//go:build linux

package e2e_test

// The scenarios of TestScaleOutAccountPools (scaleout_test.go).

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// ---- 1. A burst against tier-1 accounts never overdraws their buckets.
func (e *scaleEnv) burst(t *testing.T) {
	const org = "scale-burst"
	keys := []string{"sk-ant-sim-tier1-burst-a-" + e.uniq, "sk-ant-sim-tier1-burst-b-" + e.uniq}
	var ids []string
	for i, key := range keys {
		ids = append(ids, e.register(t, i, org, fmt.Sprintf("burst-%c", 'a'+i), key, "tier1", 0))
	}
	e.waitVisible(t, org, ids, 0)
	selectsBefore := make([]int, len(e.pools))
	for i, p := range e.pools {
		selectsBefore[i] = accessLogSelects(p)
	}

	type outcome struct {
		resp *orchestratorv1.DelegateTaskResponse
		err  error
	}
	results := make([]outcome, burstTasks)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range burstCallers {
		wg.Go(func() {
			for {
				n := int(next.Add(1) - 1)
				if n >= burstTasks || e.ctx.Err() != nil {
					return
				}
				cctx, cancel := context.WithTimeout(e.ctx, burstDeadline)
				results[n].resp, results[n].err = e.orchs[n%2].DelegateTask(cctx, &orchestratorv1.DelegateTaskRequest{
					OrganizationId: org, Category: "quick", RequestId: fmt.Sprintf("burst-%03d", n), MaxTokens: 64,
					Prompt: fmt.Sprintf("Burst task %d: answer in one line.", n), UserId: "scaleout",
				})
				cancel()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	var succeeded, rateLimited, exhausted, deadline int
	for n, r := range results {
		switch {
		case r.err == nil && r.resp.GetStatus() == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS:
			succeeded++
		case r.err == nil && r.resp.GetStatus() == orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED:
			rateLimited++
			for _, a := range r.resp.GetMetadata().GetAttemptDetails() {
				t.Errorf("task %d ended RATE_LIMITED after an attempt on %s (%s, HTTP %d): the pool let a call through that the upstream rejected",
					n, a.GetAccountName(), a.GetOutcome(), a.GetHttpStatus())
			}
		case r.err != nil && status.Code(r.err) == codes.ResourceExhausted:
			exhausted++
		case r.err != nil && status.Code(r.err) == codes.DeadlineExceeded:
			// The caller's 3 s passed while the task waited for capacity.
			deadline++
		case r.err != nil:
			t.Errorf("task %d failed with %v", n, r.err)
		default:
			t.Errorf("task %d answered %s: %s", n, r.resp.GetStatus(), r.resp.GetError())
		}
	}
	rejected := rateLimited + exhausted + deadline
	t.Logf("burst of %d tasks (%d callers, %s deadline each) over 2 tier-1 accounts took %s: %d succeeded, %d rejected (%d RATE_LIMITED, %d ResourceExhausted, %d DeadlineExceeded)",
		burstTasks, burstCallers, burstDeadline, elapsed.Round(time.Millisecond), succeeded, rejected, rateLimited, exhausted, deadline)
	if succeeded+rejected != burstTasks {
		t.Errorf("%d successes + %d rejections != %d tasks", succeeded, rejected, burstTasks)
	}

	// What the upstream saw. Every bucket starts full (tier-1: 50 requests)
	// and refills 50/60 a second; the test's elapsed time bounds the
	// refill each key got (the stats are read after elapsed).
	var requests, simOK, sim429 int64
	for i, key := range keys {
		cctx, cancel := e.call()
		st, err := e.sim.stats(cctx, key)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("simulator, account burst-%c: %d requests, %d succeeded, %d rate limited (%d for capacity)",
			'a'+i, st.Requests, st.Succeeded, st.RateLimited, st.CapacityRejected)
		requests += st.Requests
		simOK += st.Succeeded
		sim429 += st.RateLimited
	}
	allowed := int64(len(keys)) * (tier1RPM + int64(time.Since(start).Seconds()*tier1RPM/60+1))
	t.Logf("simulator in total: %d requests, %d succeeded, %d rate limited; the buckets allow at most %d in %s",
		requests, simOK, sim429, allowed, time.Since(start).Round(time.Millisecond))
	if sim429 != 0 {
		t.Errorf("the simulator answered %d calls with 429: the pool replicas together admitted more than the tier-1 buckets hold", sim429)
	}
	if requests == 0 || requests > allowed {
		t.Errorf("the simulator got %d requests; want 1..%d (two tier-1 buckets and their refill over the test)", requests, allowed)
	}
	if spent := simOK - int64(succeeded); spent > 0 {
		t.Logf("%d upstream calls succeeded for tasks that answered no success (their %s deadline passed before the orchestrator answered)", spent, burstDeadline)
	}
	if int64(succeeded) > simOK {
		t.Errorf("%d tasks succeeded but the simulator answered only %d calls", succeeded, simOK)
	}
	if rejected == 0 {
		t.Errorf("no task was rejected: the burst of %d did not overrun the buckets, so the test proves nothing", burstTasks)
	}

	// round_robin: both orchestrators spread the burst's selections over
	// all three pool replicas.
	var spread []string
	for i, p := range e.pools {
		n := accessLogSelects(p) - selectsBefore[i]
		spread = append(spread, fmt.Sprintf("%s %d", p.name, n))
		if n == 0 {
			t.Errorf("%s served no SelectAccount of the burst: the orchestrators do not balance over every pool replica", p.name)
		}
	}
	t.Logf("SelectAccount calls of the burst per replica (access logs): %s", strings.Join(spread, ", "))
}

// ---- 2. A 429 cool-down learned through one replica is honoured by all.
func (e *scaleEnv) cooldown(t *testing.T) {
	const org = "scale-cooldown"
	key429 := "sk-ant-sim-429-cool-" + e.uniq
	bad := e.register(t, 0, org, "cool-429", key429, "scale", 0)
	good := e.register(t, 1, org, "cool-good", "sk-ant-sim-scale-cool-"+e.uniq, "scale", 1)
	// Priority: the 429 account (priority 0) goes first while it may.
	e.setStrategy(t, 2, org, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY)
	e.waitVisible(t, org, []string{bad, good}, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY)

	task := func(orch int, id string) *orchestratorv1.DelegateTaskResponse {
		t.Helper()
		cctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		defer cancel()
		resp, err := e.orchs[orch].DelegateTask(cctx, &orchestratorv1.DelegateTaskRequest{
			OrganizationId: org, Category: "quick", RequestId: id, MaxTokens: 64, Prompt: "Cool-down task " + id + ".", UserId: "scaleout",
		})
		if err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		if resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
			t.Fatalf("task %s answered %s: %s", id, resp.GetStatus(), resp.GetError())
		}
		return resp
	}
	first := task(0, "cool-1")
	var tried []string
	for _, a := range first.GetMetadata().GetAttemptDetails() {
		tried = append(tried, fmt.Sprintf("%s:%s", a.GetAccountName(), a.GetOutcome()))
	}
	t.Logf("first task's attempts: %s", strings.Join(tried, ", "))
	if ad := first.GetMetadata().GetAttemptDetails(); len(ad) != 2 || ad[0].GetAccountId() != bad || ad[1].GetAccountId() != good {
		t.Fatalf("the first task should have tried the 429 account, then the good one; attempts: %s", strings.Join(tried, ", "))
	}

	// The 429's RecordRequest may still be in the orchestrator's outbox:
	// wait (bounded) for one replica to show the cool-down, then every
	// replica must show the very same one.
	deadline := time.Now().Add(scaleVisibleBound)
	var ref *accountpoolv1.Account
	for {
		ref = e.getAccount(t, 0, org, bad)
		if ref.GetCooldownUntil() != nil && ref.GetCooldownUntil().AsTime().After(time.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("accountpool-0 shows no cool-down on the 429 account within %s: %v", scaleVisibleBound, ref)
		}
		sleepCtx(e.ctx, 50*time.Millisecond)
	}
	until := ref.GetCooldownUntil().AsTime()
	t.Logf("the 429 account cools down until %s (%s from now)", until.Format(time.RFC3339Nano), time.Until(until).Round(time.Millisecond))
	for i := range e.pools {
		a := e.getAccount(t, i, org, bad)
		switch {
		case a.GetCooldownUntil() == nil:
			t.Errorf("accountpool-%d shows no cool-down on the 429 account", i)
		case !a.GetCooldownUntil().AsTime().Equal(until):
			t.Errorf("accountpool-%d shows the cool-down until %s, accountpool-0 until %s", i, a.GetCooldownUntil().AsTime(), until)
		case !a.GetCooldownUntil().AsTime().After(time.Now()):
			t.Errorf("accountpool-%d shows a cool-down in the past (%s)", i, a.GetCooldownUntil().AsTime())
		}
		if g := e.getAccount(t, i, org, good); g.GetCooldownUntil() != nil {
			t.Errorf("accountpool-%d shows a cool-down on the good account: %s", i, g.GetCooldownUntil().AsTime())
		}
	}

	// Honoured: every replica selects the good account, though the 429
	// account has priority.
	for i := range e.pools {
		id := fmt.Sprintf("cool-direct-%d", i)
		sel := e.selectOn(t, i, &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: scaleModel, RequestId: id, EstimatedInputTokens: 10})
		if got := sel.GetLease().GetAccountId(); got != good {
			t.Errorf("accountpool-%d selected %s (%s) while the 429 account cools down; want the good account", i, sel.GetLease().GetAccountName(), got)
		}
		for _, c := range sel.GetCandidates() {
			if c.GetAccountId() == bad {
				t.Logf("accountpool-%d: the 429 account skipped: %s", i, c.GetSkipReason())
			}
		}
		e.recordOn(t, (i+1)%scalePools, success(org, id, sel, 10, 10))
	}
	for orch := range e.orchs {
		id := fmt.Sprintf("cool-after-%d", orch)
		resp := task(orch, id)
		if ad := resp.GetMetadata().GetAttemptDetails(); len(ad) != 1 || ad[0].GetAccountId() != good {
			t.Errorf("task %s through orchestrator-%d made attempts %v; want one, on the good account", id, orch, ad)
		}
	}
	cctx, cancel := e.call()
	defer cancel()
	st, err := e.sim.stats(cctx, key429)
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != 1 {
		t.Errorf("the simulator got %d calls on the 429 key; want 1 (the one that taught the cool-down)", st.Requests)
	}
}

// ---- 3. A breaker opened through one replica is open on all.
func (e *scaleEnv) breaker(t *testing.T) {
	const org = "scale-breaker"
	key500 := "sk-ant-sim-500-brk-" + e.uniq
	acct := e.register(t, 0, org, "brk-500", key500, "scale", 0)
	e.waitVisible(t, org, []string{acct}, 0)

	// Five consecutive upstream errors (the breaker's threshold), each
	// selected on one replica and recorded on the next.
	const threshold = 5
	for i := range threshold {
		id := fmt.Sprintf("brk-%d", i)
		sel := e.selectOn(t, i%scalePools, &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: scaleModel, RequestId: id, EstimatedInputTokens: 10})
		e.recordOn(t, (i+1)%scalePools, &accountpoolv1.RecordRequestRequest{
			OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: acct, RequestId: id, Attempt: 1,
			Outcome: accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR, Model: scaleModel, HttpStatus: 500,
			ErrorType: "api_error", ErrorMessage: "simulated", DurationMs: 1,
		})
		if i < threshold-1 {
			b := e.getAccount(t, (i+2)%scalePools, org, acct).GetBreaker()
			if b.GetState() != accountpoolv1.BreakerState_BREAKER_STATE_CLOSED || b.GetConsecutiveFailures() != int32(i+1) {
				t.Errorf("after %d failures accountpool-%d shows the breaker %s with %d consecutive failures; want CLOSED with %d",
					i+1, (i+2)%scalePools, b.GetState(), b.GetConsecutiveFailures(), i+1)
			}
		}
	}
	var openUntil time.Time
	for i := range e.pools {
		b := e.getAccount(t, i, org, acct).GetBreaker()
		now := time.Now()
		if b.GetOpenUntil() == nil {
			t.Errorf("accountpool-%d shows the breaker %s with no open_until: %v", i, b.GetState(), b)
			continue
		}
		ou := b.GetOpenUntil().AsTime()
		if i == 0 {
			openUntil = ou
			t.Logf("breaker open until %s (%s from now)", ou.Format(time.RFC3339Nano), time.Until(ou).Round(time.Millisecond))
		} else if !ou.Equal(openUntil) {
			t.Errorf("accountpool-%d shows the breaker open until %s, accountpool-0 until %s", i, ou, openUntil)
		}
		switch st := b.GetState(); {
		case st == accountpoolv1.BreakerState_BREAKER_STATE_OPEN:
		case st == accountpoolv1.BreakerState_BREAKER_STATE_HALF_OPEN && !now.Before(ou):
			t.Logf("accountpool-%d: the breaker is already HALF_OPEN (open_until passed)", i)
		default:
			t.Errorf("accountpool-%d shows the breaker %s; want OPEN", i, st)
		}
	}
	// Every replica fails fast on it: ResourceExhausted without RetryInfo.
	for i := range e.pools {
		if time.Until(openUntil) < 500*time.Millisecond {
			t.Logf("the breaker is about to go half-open; not asking accountpool-%d..2", i)
			break
		}
		cctx, cancel := e.call()
		_, err := e.orchTok[i].SelectAccount(asOrchestrator(cctx, org), &accountpoolv1.SelectAccountRequest{
			OrganizationId: org, Model: scaleModel, RequestId: fmt.Sprintf("brk-after-%d", i),
		})
		cancel()
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("SelectAccount on accountpool-%d with the breaker open: %v; want ResourceExhausted", i, err)
			continue
		}
		for _, d := range status.Convert(err).Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				t.Errorf("SelectAccount on accountpool-%d with the breaker open carries RetryInfo %s; an open breaker is never waited for", i, ri.GetRetryDelay().AsDuration())
			}
		}
	}
	// A task through either orchestrator fails without calling the
	// upstream, whichever replica it selects on.
	for orch := range e.orchs {
		if time.Until(openUntil) < 2*time.Second {
			t.Logf("the breaker is about to go half-open; no task through orchestrator-%d", orch)
			break
		}
		cctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		resp, err := e.orchs[orch].DelegateTask(cctx, &orchestratorv1.DelegateTaskRequest{
			OrganizationId: org, Category: "quick", RequestId: fmt.Sprintf("brk-task-%d", orch), MaxTokens: 64, Prompt: "Breaker task.", UserId: "scaleout",
		})
		cancel()
		switch {
		case err != nil:
			t.Logf("task through orchestrator-%d with the breaker open: %v", orch, err)
		case resp.GetStatus() == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS || len(resp.GetMetadata().GetAttemptDetails()) > 0:
			t.Errorf("task through orchestrator-%d with the breaker open made attempts: %s %v", orch, resp.GetStatus(), resp.GetMetadata().GetAttemptDetails())
		default:
			t.Logf("task through orchestrator-%d with the breaker open: %s: %s", orch, resp.GetStatus(), resp.GetError())
		}
	}
	cctx, cancel := e.call()
	defer cancel()
	st, err := e.sim.stats(cctx, key500)
	if err != nil {
		t.Fatal(err)
	}
	if st.Requests != 0 {
		t.Errorf("the simulator got %d calls on the 500 key; the open breaker should have kept every task off it", st.Requests)
	}
}

// ---- 4. A session pin made on one replica is used by the others.
func (e *scaleEnv) session(t *testing.T) {
	const org = "scale-session"
	var ids []string
	for i := range 3 {
		ids = append(ids, e.register(t, i, org, fmt.Sprintf("sess-%c", 'a'+i), fmt.Sprintf("sk-ant-sim-scale-sess-%c-%s", 'a'+i, e.uniq), "scale", 0))
	}
	e.setStrategy(t, 0, org, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY)
	e.waitVisible(t, org, ids, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY)

	pinned := map[string]bool{}
	for s := range 3 {
		session := fmt.Sprintf("session-%d", s)
		first := s % scalePools // each session is pinned on a different replica
		pin := e.selectOn(t, first, &accountpoolv1.SelectAccountRequest{
			OrganizationId: org, Model: scaleModel, RequestId: session + "-pin", SessionId: session, EstimatedInputTokens: 10,
		})
		if pin.GetStrategy() != accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY {
			t.Errorf("accountpool-%d selected with strategy %s; want SESSION_AFFINITY", first, pin.GetStrategy())
		}
		want := pin.GetLease().GetAccountId()
		pinned[want] = true
		t.Logf("%s pinned to %s on accountpool-%d", session, pin.GetLease().GetAccountName(), first)
		e.recordOn(t, (first+1)%scalePools, success(org, session+"-pin", pin, 10, 10))

		// Make the pinned account the most loaded by far (half its input
		// bucket held), so that without the pin the others would choose
		// another one: a fresh session shows that they do.
		hog := e.selectOn(t, first, &accountpoolv1.SelectAccountRequest{
			OrganizationId: org, Model: scaleModel, RequestId: session + "-hog", EstimatedInputTokens: hogInput, AllowedAccountIds: []string{want},
		})
		for j := 1; j < scalePools; j++ {
			via := (first + j) % scalePools
			id := fmt.Sprintf("%s-%d", session, j)
			fresh := e.selectOn(t, via, &accountpoolv1.SelectAccountRequest{
				OrganizationId: org, Model: scaleModel, RequestId: id + "-fresh", SessionId: id + "-fresh", EstimatedInputTokens: 10,
			})
			if fresh.GetLease().GetAccountId() == want {
				t.Errorf("accountpool-%d chose the hogged account %s for a fresh session: the hog does not make the pin matter", via, fresh.GetLease().GetAccountName())
			}
			e.recordOn(t, (via+1)%scalePools, success(org, id+"-fresh", fresh, 10, 10))

			sel := e.selectOn(t, via, &accountpoolv1.SelectAccountRequest{
				OrganizationId: org, Model: scaleModel, RequestId: id, SessionId: session, EstimatedInputTokens: 10,
			})
			if got := sel.GetLease().GetAccountId(); got != want {
				t.Errorf("%s selected %s on accountpool-%d; it was pinned to %s on accountpool-%d", session, sel.GetLease().GetAccountName(), via, pin.GetLease().GetAccountName(), first)
			}
			e.recordOn(t, (via+1)%scalePools, success(org, id, sel, 10, 10))
		}
		e.recordOn(t, (first+2)%scalePools, success(org, session+"-hog", hog, 10, 10))
	}
	t.Logf("3 sessions pinned to %d distinct accounts", len(pinned))
}

// ---- 5. A lease issued by replica A settles through replica B.
func (e *scaleEnv) lease(t *testing.T) {
	const org = "scale-lease"
	acct := e.register(t, 0, org, "lease-tier1", "sk-ant-sim-tier1-lease-"+e.uniq, "tier1", 0)
	e.waitVisible(t, org, []string{acct}, 0)

	const reqID = "lease-1"
	sel := e.selectOn(t, 0, &accountpoolv1.SelectAccountRequest{
		OrganizationId: org, Model: scaleModel, RequestId: reqID, EstimatedInputTokens: 10_000, EstimatedOutputTokens: 500,
	})
	if !e.isOpenLease(t, org, sel.GetLease().GetLeaseId()) {
		t.Errorf("lease %s is not in %s after SelectAccount", sel.GetLease().GetLeaseId(), e.openLeases())
	}
	reserved := capacityOf(e.getAccount(t, 2, org, acct), scaleFamily)
	t.Logf("accountpool-2 with the lease of accountpool-0 out: %v", reserved)
	if reserved.GetInputTokensLimit() != tier1InputTPM {
		t.Errorf("input limit %d; want tier-1's %d", reserved.GetInputTokensLimit(), tier1InputTPM)
	}
	if in := reserved.GetInputTokensRemaining(); in < 19_900 || in > 20_000 {
		t.Errorf("accountpool-2 shows %d input tokens remaining with 10,000 reserved through accountpool-0; want about 20,000", in)
	}
	if r := reserved.GetRequestsRemaining(); r != tier1RPM-1 {
		t.Errorf("accountpool-2 shows %d requests remaining with one reserved; want %d", r, tier1RPM-1)
	}

	rr := e.recordOn(t, 1, success(org, reqID, sel, 100, 20))
	if rr.GetDuplicate() {
		t.Errorf("the first RecordRequest (accountpool-1) was answered as a duplicate")
	}
	if e.isOpenLease(t, org, sel.GetLease().GetLeaseId()) {
		t.Errorf("lease %s is still open in Redis after accountpool-1 settled it", sel.GetLease().GetLeaseId())
	}
	settled := capacityOf(e.getAccount(t, 2, org, acct), scaleFamily)
	t.Logf("accountpool-2 after accountpool-1 settled it with 100 input tokens: %v", settled)
	if in := settled.GetInputTokensRemaining(); in < 29_000 || in > tier1InputTPM {
		t.Errorf("accountpool-2 shows %d input tokens remaining after the settle; want at least 29,000 (reservation released, 100 metered)", in)
	}

	dup := e.recordOn(t, 2, success(org, reqID, sel, 100, 20))
	if !dup.GetDuplicate() {
		t.Errorf("the same attempt recorded again (accountpool-2) was not answered as a duplicate: %v", dup)
	}
	after := capacityOf(e.getAccount(t, 0, org, acct), scaleFamily)
	if after.GetInputTokensRemaining() < settled.GetInputTokensRemaining() || after.GetRequestsRemaining() < settled.GetRequestsRemaining() {
		t.Errorf("the duplicate RecordRequest charged capacity again: %v before, %v after", settled, after)
	}
}

// ---- 6. An AccountPool replica killed mid-load loses no capacity for good.
func (e *scaleEnv) kill(t *testing.T) {
	const org = "scale-kill"
	keys := []string{"sk-ant-sim-scale-kill-a-" + e.uniq, "sk-ant-sim-scale-kill-b-" + e.uniq}
	var ids []string
	for i, key := range keys {
		ids = append(ids, e.register(t, i, org, fmt.Sprintf("kill-%c", 'a'+i), key, "scale", 0))
		if err := e.sim.setDelay(e.ctx, key, killSimDelay); err != nil {
			t.Fatalf("scripting the simulator delay: %v", err)
		}
	}
	e.waitVisible(t, org, ids, 0)
	victim := 1
	survivors := []int{0, 2}

	type killTask struct {
		n       int
		started time.Time
		took    time.Duration
		resp    *orchestratorv1.DelegateTaskResponse
		err     error
	}
	var (
		mu    sync.Mutex
		tasks []*killTask
		next  atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for range killCallers {
		wg.Go(func() {
			for !stop.Load() && e.ctx.Err() == nil {
				task := &killTask{n: int(next.Add(1) - 1), started: time.Now()}
				cctx, cancel := context.WithTimeout(e.ctx, killCallTimeout)
				task.resp, task.err = e.orchs[task.n%2].DelegateTask(cctx, &orchestratorv1.DelegateTaskRequest{
					OrganizationId: org, Category: "quick", RequestId: fmt.Sprintf("kill-%04d", task.n), MaxTokens: 64,
					Prompt: fmt.Sprintf("Kill task %d: answer in one line.", task.n), UserId: "scaleout",
				})
				cancel()
				task.took = time.Since(task.started)
				mu.Lock()
				tasks = append(tasks, task)
				mu.Unlock()
			}
		})
	}
	sleepCtx(e.ctx, killBefore)
	// Besides whatever the load has in flight there, the victim holds one
	// lease for sure that nobody will settle, with a reservation large
	// enough to see: a call whose orchestrator never heard back.
	orphanAt := time.Now()
	orphan := e.selectOn(t, victim, &accountpoolv1.SelectAccountRequest{
		OrganizationId: org, Model: scaleModel, RequestId: "kill-orphan", EstimatedInputTokens: orphanInput,
		AllowedAccountIds: ids[:1],
	})
	selectsOfVictim := accessLogSelects(e.pools[victim])
	e.pools[victim].kill()
	killAt := time.Now()
	t.Logf("killed %s (kill -9) with the load running; it had served %d SelectAccount calls and holds lease %s of %d input tokens on %s",
		e.pools[victim].name, selectsOfVictim, orphan.GetLease().GetLeaseId(), orphanInput, orphan.GetLease().GetAccountName())
	if selectsOfVictim == 0 {
		t.Errorf("%s served no SelectAccount before the kill: the kill proves nothing", e.pools[victim].name)
	}
	// The dead replica's reservation is shared state: the survivors count it.
	if c := capacityOf(e.getAccount(t, survivors[0], org, ids[0]), scaleFamily); c.GetInputTokensRemaining() > c.GetInputTokensLimit()-orphanInput {
		t.Errorf("accountpool-%d shows %d of %d input tokens remaining with the dead replica's lease of %d open",
			survivors[0], c.GetInputTokensRemaining(), c.GetInputTokensLimit(), orphanInput)
	}
	sleepCtx(e.ctx, killAfter)
	stop.Store(true)
	wg.Wait()
	loadEnd := time.Now()

	var ok, failed, failedLate int
	var longest time.Duration
	codesSeen := map[string]int{}
	for _, task := range tasks {
		longest = max(longest, task.took)
		if task.err == nil && task.resp.GetStatus() == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
			ok++
			continue
		}
		failed++
		what := ""
		if task.err != nil {
			st, isStatus := status.FromError(task.err)
			what = st.Code().String()
			switch {
			case !isStatus:
				t.Errorf("task %d failed with a non-status error: %v", task.n, task.err)
			case st.Code() == codes.DeadlineExceeded:
				t.Errorf("task %d hung: no answer within %s (%v)", task.n, killCallTimeout, task.err)
			}
		} else {
			what = task.resp.GetStatus().String()
		}
		codesSeen[what]++
		late := task.started.Sub(killAt) >= killSettleAfter
		if late {
			failedLate++
			t.Errorf("task %d, started %s after the kill, failed (%s): the surviving replicas should serve it: %v %s",
				task.n, task.started.Sub(killAt).Round(time.Millisecond), what, task.err, task.resp.GetError())
		} else {
			t.Logf("task %d (started %s from the kill, took %s) failed: %s %v %s", task.n, task.started.Sub(killAt).Round(time.Millisecond),
				task.took.Round(time.Millisecond), what, task.err, task.resp.GetError())
		}
	}
	t.Logf("load of %d tasks (%d callers, simulator delay %s): %d succeeded, %d failed %v; longest task %s",
		len(tasks), killCallers, killSimDelay, ok, failed, codesSeen, longest.Round(time.Millisecond))
	if len(tasks) == 0 || failed*2 >= len(tasks) {
		t.Errorf("%d of %d tasks failed; only a minority (those in flight on the killed replica) may", failed, len(tasks))
	}

	// Every lease, those the dead replica issued included, is settled or
	// expires. Expiry is looked for on selections and account reads, so
	// the wait reads the accounts through the survivors.
	openAtEnd, err := e.rdb.ZCard(e.ctx, e.openLeases()).Result()
	if err != nil {
		t.Fatalf("ZCARD %s: %v", e.openLeases(), err)
	}
	deadline := time.Now().Add(scaleLeasesBound)
	var open int64
	for {
		for _, i := range survivors {
			cctx, cancel := e.call()
			_, err := e.admin[i].ListAccounts(cctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
			cancel()
			if err != nil {
				t.Fatalf("ListAccounts through accountpool-%d: %v", i, err)
			}
		}
		if open, err = e.rdb.ZCard(e.ctx, e.openLeases()).Result(); err != nil {
			t.Fatalf("ZCARD %s: %v", e.openLeases(), err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			members, _ := e.rdb.ZRangeWithScores(e.ctx, e.openLeases(), 0, 9).Result()
			t.Fatalf("%d leases still open in %s %s after the load ended (lease timeout %s): %v",
				open, e.openLeases(), scaleLeasesBound, scaleLeaseTimeout, members)
		}
		sleepCtx(e.ctx, 200*time.Millisecond)
	}
	t.Logf("%d leases were open in Redis when the load ended (the orphan %s old); none %s later",
		openAtEnd, loadEnd.Sub(orphanAt).Round(time.Millisecond), time.Since(loadEnd).Round(time.Millisecond))

	// And every bucket is whole again: nothing is reserved, the usage has
	// refilled (scale: 10,000 requests a minute).
	whole := func(via int) (bool, string) {
		var desc []string
		all := true
		for _, id := range ids {
			c := capacityOf(e.getAccount(t, via, org, id), scaleFamily)
			desc = append(desc, c.String())
			if c.GetRequestsRemaining() != c.GetRequestsLimit() || c.GetInputTokensRemaining() != c.GetInputTokensLimit() ||
				c.GetOutputTokensRemaining() != c.GetOutputTokensLimit() {
				all = false
			}
		}
		return all, strings.Join(desc, "; ")
	}
	deadline = time.Now().Add(scaleVisibleBound)
	for _, i := range survivors {
		for {
			ok, desc := whole(i)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("accountpool-%d: the accounts' buckets are not whole %s after the load ended: %s", i, scaleVisibleBound, desc)
			}
			sleepCtx(e.ctx, 100*time.Millisecond)
		}
	}

	// The killed replica comes back and serves, on the same shared state.
	if err := e.pools[victim].start(); err != nil {
		t.Fatal(err)
	}
	e.mustServe(e.pools[victim])
	if ok, desc := whole(victim); !ok {
		t.Errorf("the restarted %s does not show the buckets whole: %s", e.pools[victim].name, desc)
	}
	sel := e.selectOn(t, victim, &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: scaleModel, RequestId: "kill-restarted", EstimatedInputTokens: 10})
	if e.isOpenLease(t, org, sel.GetLease().GetLeaseId()) {
		e.recordOn(t, survivors[0], success(org, "kill-restarted", sel, 10, 10))
	} else {
		t.Errorf("the restarted replica's lease %s is not in Redis", sel.GetLease().GetLeaseId())
	}
	if e.isOpenLease(t, org, sel.GetLease().GetLeaseId()) {
		t.Errorf("the restarted replica's lease %s did not settle through accountpool-%d", sel.GetLease().GetLeaseId(), survivors[0])
	}
}
