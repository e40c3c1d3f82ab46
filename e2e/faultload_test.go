//go:build linux

package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// ---- The load.

// faultTask is one request_id and what became of it.
type faultTask struct {
	id     string
	caller int // -1 for a recovery probe
	phase  int // the phase of its first send
	first  time.Time
	sends  int
	failed map[codes.Code]int
	// inFlight: a send is outstanding.
	inFlight   bool
	answered   bool
	answeredAt time.Time
	resp       *orchestratorv1.DelegateTaskResponse
	unanswered bool // given up after faultTaskBound
	lastErr    string
}

type sendEvent struct {
	at   time.Time
	code codes.Code // OK when the send got an answer
}

type faultLoad struct {
	orch orchestratorv1.OrchestratorServiceClient

	mu      sync.Mutex
	tasks   []*faultTask
	byID    map[string]*faultTask
	sends   []sendEvent
	phase   int
	open    bool          // callers may start tasks
	gate    chan struct{} // closed while open
	stopped bool
	stop    chan struct{}
	busy    int // callers running a task
	wg      sync.WaitGroup
}

func newFaultLoad(orch orchestratorv1.OrchestratorServiceClient) *faultLoad {
	return &faultLoad{orch: orch, byID: map[string]*faultTask{}, gate: make(chan struct{}), stop: make(chan struct{})}
}

func (l *faultLoad) setPhase(p int) {
	l.mu.Lock()
	l.phase = p
	l.mu.Unlock()
}

func (l *faultLoad) start(ctx context.Context, callers int) {
	for c := range callers {
		l.wg.Go(func() { l.caller(ctx, c) })
	}
}

func (l *faultLoad) caller(ctx context.Context, c int) {
	for n := 0; ; {
		l.mu.Lock()
		if l.stopped || ctx.Err() != nil {
			l.mu.Unlock()
			return
		}
		if l.open {
			l.busy++
			task := l.newTaskLocked(fmt.Sprintf("fault-%d-%05d", c, n), c)
			n++
			l.mu.Unlock()
			l.runTask(ctx, task)
			l.mu.Lock()
			l.busy--
			l.mu.Unlock()
			sleepCtx(ctx, rand.N(faultThinkMax))
			continue
		}
		gate := l.gate
		l.mu.Unlock()
		select {
		case <-gate:
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (l *faultLoad) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		l.open = true
		close(l.gate)
	}
}

func (l *faultLoad) pause() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open {
		l.open = false
		l.gate = make(chan struct{})
	}
}

// waitIdle waits until no caller runs a task.
func (l *faultLoad) waitIdle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		busy := l.busy
		l.mu.Unlock()
		if busy == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shutdown stops the callers once their current task is over, waiting at
// most timeout.
func (l *faultLoad) shutdown(timeout time.Duration) {
	l.mu.Lock()
	if !l.stopped {
		l.stopped = true
		close(l.stop)
	}
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

func (l *faultLoad) newTaskLocked(id string, caller int) *faultTask {
	task := &faultTask{id: id, caller: caller, phase: l.phase, first: time.Now(), failed: map[codes.Code]int{}}
	l.tasks = append(l.tasks, task)
	l.byID[id] = task
	return task
}

func faultRequest(task *faultTask) *orchestratorv1.DelegateTaskRequest {
	user := fmt.Sprintf("caller-%d", task.caller)
	if task.caller < 0 {
		user = "probe"
	}
	return &orchestratorv1.DelegateTaskRequest{
		OrganizationId: faultOrg, Category: "quick", RequestId: task.id, MaxTokens: 256,
		Prompt:    "Fault test task " + task.id + ": answer in one line.",
		SessionId: "fault-session-" + user, UserId: user,
	}
}

// send makes one DelegateTask call for task.
func (l *faultLoad) send(ctx context.Context, task *faultTask) (*orchestratorv1.DelegateTaskResponse, error) {
	l.mu.Lock()
	task.sends++
	task.inFlight = true
	l.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, faultCallTimeout)
	resp, err := l.orch.DelegateTask(cctx, faultRequest(task))
	cancel()
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	task.inFlight = false
	code := status.Code(err)
	l.sends = append(l.sends, sendEvent{at: now, code: code})
	if err != nil {
		task.failed[code]++
		msg := status.Convert(err).Message()
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		task.lastErr = code.String() + ": " + msg
		return nil, err
	}
	task.answered, task.answeredAt, task.resp = true, now, resp
	return resp, nil
}

// runTask re-sends task (the same request_id) until it gets an answer or
// faultTaskBound passes.
func (l *faultLoad) runTask(ctx context.Context, task *faultTask) {
	bound := time.Now().Add(faultTaskBound)
	pause := 50 * time.Millisecond
	for {
		if _, err := l.send(ctx, task); err == nil {
			return
		}
		if ctx.Err() != nil || time.Now().After(bound) {
			l.mu.Lock()
			task.unanswered = true
			l.mu.Unlock()
			return
		}
		sleepCtx(ctx, pause)
		pause = min(2*pause, time.Second)
	}
}

// probe sends new tasks, one at a time, until one succeeds (not a replay)
// or bound passes, and returns how long after since that was. Probes that
// got an error are then re-sent until answered, like any task.
func (l *faultLoad) probe(ctx context.Context, label string, since time.Time, bound time.Duration) (time.Duration, bool) {
	var left []*faultTask
	defer func() {
		for _, task := range left {
			l.runTask(ctx, task)
		}
	}()
	for i := 0; ; i++ {
		l.mu.Lock()
		task := l.newTaskLocked(fmt.Sprintf("fault-probe-%s-%03d", label, i), -1)
		l.mu.Unlock()
		resp, err := l.send(ctx, task)
		if err == nil && resp.GetStatus() == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS && !resp.GetMetadata().GetReplayed() {
			return time.Since(since), true
		}
		if err != nil {
			left = append(left, task)
		}
		if time.Since(since) > bound || ctx.Err() != nil {
			return time.Since(since), false
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// unansweredIDs are the tasks started and not answered yet.
func (l *faultLoad) unansweredIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for _, task := range l.tasks {
		if !task.answered && !task.unanswered {
			ids = append(ids, task.id)
		}
	}
	return ids
}

// answeredAfter summarises when the tasks ids were answered, counted
// from since.
func (l *faultLoad) answeredAfter(ids []string, since time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var lo, hi time.Duration
	n, replayed := 0, 0
	for _, id := range ids {
		task := l.byID[id]
		if task == nil || !task.answered {
			continue
		}
		d := task.answeredAt.Sub(since)
		if n == 0 || d < lo {
			lo = d
		}
		hi = max(hi, d)
		n++
		if task.resp.GetMetadata().GetReplayed() {
			replayed++
		}
	}
	if n == 0 {
		return "none answered"
	}
	return fmt.Sprintf("%d of %d answered, %.1fs to %.1fs after the kill (%d of them replayed the killed run's stored result)", n, len(ids), lo.Seconds(), hi.Seconds(), replayed)
}

// describe is one task's story, for the log.
func (l *faultLoad) describe(id string, snap *faultSnapshot) string {
	l.mu.Lock()
	task := l.byID[id]
	var b strings.Builder
	if task == nil {
		fmt.Fprintf(&b, "%s: not a task of this test", id)
	} else {
		fmt.Fprintf(&b, "%s: sends=%d failed=%v answered=%v unanswered=%v", id, task.sends, codeCounts(task.failed), task.answered, task.unanswered)
		if r := task.resp; r != nil {
			md := r.GetMetadata()
			fmt.Fprintf(&b, " status=%s replayed=%v attempts=%d bookkeeping_pending=%v activity=%s", r.GetStatus(), md.GetReplayed(), md.GetAttempts(), md.GetBookkeepingPending(), md.GetActivityId())
		}
		if task.lastErr != "" {
			fmt.Fprintf(&b, " last_error=%q", task.lastErr)
		}
	}
	l.mu.Unlock()
	if snap != nil {
		var runs []string
		for _, a := range snap.actsByRequest[id] {
			runs = append(runs, fmt.Sprintf("run%d:%s", runOf(a), strings.TrimPrefix(a.GetStatus().String(), "ACTIVITY_STATUS_")))
		}
		sort.Strings(runs)
		var rows []string
		for rid, o := range snap.rowsByRequest[id] {
			rows = append(rows, rid+":"+strings.Join(o, "+"))
		}
		sort.Strings(rows)
		fmt.Fprintf(&b, " activities=[%s] usage_rows=[%s]", strings.Join(runs, " "), strings.Join(rows, " "))
	}
	return b.String()
}

func idSet(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// dump is every task as a line of tab-separated values, times in seconds
// since began.
func (l *faultLoad) dump(began time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	b.WriteString("request_id\tcaller\tphase\tfirst_send_s\tanswered_s\tsends\tfailed_sends\tstatus\treplayed\tattempts\tbookkeeping_pending\tbookkeeping_errors\tactivity_id\tlast_error\n")
	for _, task := range l.tasks {
		answered := ""
		if task.answered {
			answered = fmt.Sprintf("%.3f", task.answeredAt.Sub(began).Seconds())
		}
		md := task.resp.GetMetadata()
		fmt.Fprintf(&b, "%s\t%d\t%d\t%.3f\t%s\t%d\t%s\t%s\t%v\t%d\t%s\t%s\t%s\t%s\n",
			task.id, task.caller, task.phase, task.first.Sub(began).Seconds(), answered, task.sends, codeCounts(task.failed),
			task.resp.GetStatus(), md.GetReplayed(), md.GetAttempts(), strings.Join(md.GetBookkeepingPending(), ";"),
			strings.Join(md.GetBookkeepingErrors(), ";"), md.GetActivityId(), task.lastErr)
	}
	return b.String()
}

func codeCounts(m map[codes.Code]int) string {
	var parts []string
	for c, n := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", c, n))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}
