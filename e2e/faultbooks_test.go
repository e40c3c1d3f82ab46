//go:build linux

package e2e_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// ---- Snapshots of the books.

type faultClients struct {
	pool     accountpoolv1.AccountPoolServiceClient
	activity activityv1.ActivityServiceClient
	sim      simControl
	keyOf    map[string]string // account id -> key
}

type ledgerSums struct {
	rows, charged, success                 int64
	in, out, cacheRead, cacheCreate        int64
	maxIn, maxOut, maxCacheRead, maxCreate int64
}

type faultSnapshot struct {
	at     time.Time
	sim    map[string]simStats   // by key
	ledger map[string]ledgerSums // by key
	rows   int
	// rowsByRequest: client request id -> ledger request id -> outcomes
	rowsByRequest      map[string]map[string][]string
	dupAttempts        int
	legacyRows         int
	unknownAccountRows int
	// activities (all of them only when full)
	full          bool
	acts          map[string]*activityv1.Activity // by id
	actsByRequest map[string][]*activityv1.Activity
	running       []*activityv1.Activity
	abandoned     []*activityv1.Activity
}

func (s *faultSnapshot) fingerprint() string {
	var simAnswered, simIn, simOut, in, out, charged int64
	for _, k := range faultKeys {
		simAnswered += s.sim[k].Succeeded + s.sim[k].StreamsBroken
		simIn += s.sim[k].Usage.InputTokens
		simOut += s.sim[k].Usage.OutputTokens
		in += s.ledger[k].in
		out += s.ledger[k].out
		charged += s.ledger[k].charged
	}
	return fmt.Sprintf("sim answered=%d in=%d out=%d; ledger rows=%d charged=%d in=%d out=%d; running=%d abandoned=%d",
		simAnswered, simIn, simOut, s.rows, charged, in, out, len(s.running), len(s.abandoned))
}

// splitRun splits a ledger request id into the client's request id and the
// run number ("<id>~run<n>", 1 without a suffix).
func splitRun(rid string) (string, int) {
	id, suffix, ok := strings.Cut(rid, "~run")
	if !ok {
		return rid, 1
	}
	var n int
	if _, err := fmt.Sscanf(suffix, "%d", &n); err != nil {
		return rid, 1
	}
	return id, n
}

func runOf(a *activityv1.Activity) int {
	if v, ok := a.GetMetadata().GetFields()["run"]; ok {
		return int(v.GetNumberValue())
	}
	return 1
}

func requestOf(a *activityv1.Activity) string {
	return a.GetMetadata().GetFields()["request_id"].GetStringValue()
}

// snapshot reads the simulator's counters, the whole usage ledger and the
// activities: every activity when full, else only RUNNING and ABANDONED.
func (c faultClients) snapshot(ctx context.Context, full bool) (*faultSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s := &faultSnapshot{at: time.Now(), sim: map[string]simStats{}, ledger: map[string]ledgerSums{},
		rowsByRequest: map[string]map[string][]string{}, full: full,
		acts: map[string]*activityv1.Activity{}, actsByRequest: map[string][]*activityv1.Activity{}}
	for _, k := range faultKeys {
		st, err := c.sim.stats(ctx, k)
		if err != nil {
			return nil, err
		}
		s.sim[k] = st
	}
	seen := map[string]bool{}
	token := ""
	for page := 0; ; page++ {
		resp, err := c.pool.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: faultOrg, IncludeRecords: true, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("GetUsage page %d: %w", page, err)
		}
		for _, r := range resp.GetRecords() {
			s.rows++
			key := fmt.Sprintf("%s#%d", r.GetRequestId(), r.GetAttempt())
			if seen[key] {
				s.dupAttempts++
			}
			seen[key] = true
			id, _ := splitRun(r.GetRequestId())
			if s.rowsByRequest[id] == nil {
				s.rowsByRequest[id] = map[string][]string{}
			}
			s.rowsByRequest[id][r.GetRequestId()] = append(s.rowsByRequest[id][r.GetRequestId()], strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
			apiKey, ok := c.keyOf[r.GetAccountId()]
			switch {
			case r.GetAccountId() == "":
				s.legacyRows++
				continue
			case !ok:
				s.unknownAccountRows++
				continue
			}
			l := s.ledger[apiKey]
			l.rows++
			if r.GetInputTokens()+r.GetOutputTokens()+r.GetCacheReadTokens()+r.GetCacheCreationTokens() > 0 {
				l.charged++
			}
			if r.GetOutcome() == accountpoolv1.Outcome_OUTCOME_SUCCESS {
				l.success++
			}
			l.in += r.GetInputTokens()
			l.out += r.GetOutputTokens()
			l.cacheRead += r.GetCacheReadTokens()
			l.cacheCreate += r.GetCacheCreationTokens()
			l.maxIn, l.maxOut = max(l.maxIn, r.GetInputTokens()), max(l.maxOut, r.GetOutputTokens())
			l.maxCacheRead, l.maxCreate = max(l.maxCacheRead, r.GetCacheReadTokens()), max(l.maxCreate, r.GetCacheCreationTokens())
			s.ledger[apiKey] = l
		}
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
		if page > 1000 {
			return nil, fmt.Errorf("GetUsage: more than 1000 pages")
		}
	}
	statuses := []activityv1.ActivityStatus{activityv1.ActivityStatus_ACTIVITY_STATUS_UNSPECIFIED}
	if !full {
		statuses = []activityv1.ActivityStatus{activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING, activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED}
	}
	for _, st := range statuses {
		token := ""
		for page := 0; ; page++ {
			resp, err := c.activity.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: faultOrg, Status: st, PageSize: 500, PageToken: token})
			if err != nil {
				return nil, fmt.Errorf("ListActivities page %d: %w", page, err)
			}
			for _, a := range resp.GetActivities() {
				if _, dup := s.acts[a.GetId()]; dup {
					continue
				}
				s.acts[a.GetId()] = a
				s.actsByRequest[requestOf(a)] = append(s.actsByRequest[requestOf(a)], a)
				switch a.GetStatus() {
				case activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING:
					s.running = append(s.running, a)
				case activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED:
					s.abandoned = append(s.abandoned, a)
				}
			}
			token = resp.GetNextPageToken()
			if token == "" {
				break
			}
			if page > 1000 {
				return nil, fmt.Errorf("ListActivities: more than 1000 pages")
			}
		}
	}
	return s, nil
}

// quiesce polls the books until they balance exactly (or, with the tasks
// in flight at the orchestrator kill, until no activity is RUNNING and
// every upstream call has its usage row, or nothing changed for
// faultStableFor), at most bound. It returns a full
// snapshot, how long it waited and whether the books balanced exactly.
func (c faultClients) quiesce(ctx context.Context, t *testing.T, load *faultLoad, bound time.Duration, inflight map[string]bool) (*faultSnapshot, time.Duration, bool) {
	t.Helper()
	start := time.Now()
	var last string
	var lastChange time.Time
	for {
		snap, err := c.snapshot(ctx, false)
		if err != nil {
			t.Logf("quiescence poll: %v", err)
		} else {
			rec := reconcile(load, snap)
			if rec.balanced() {
				break
			}
			// After the orchestrator kill: once every upstream call has
			// its row and nothing runs, nothing more is coming.
			if inflight != nil && rec.usageExact() && len(rec.running) == 0 && subset(rec.abandoned, inflight) {
				break
			}
			if fp := snap.fingerprint(); fp != last {
				last, lastChange = fp, time.Now()
			} else if inflight != nil && len(snap.running) == 0 && time.Since(lastChange) >= faultStableFor {
				break
			}
		}
		if time.Since(start) > bound || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
	waited := time.Since(start)
	full, err := c.snapshot(ctx, true)
	if err != nil {
		t.Fatalf("snapshot after quiescence: %v", err)
	}
	return full, waited, reconcile(load, full).balanced()
}

// ---- Reconciliation.

// diff is simulator minus ledger: calls the simulator answered (with
// usage) that have no usage row, and their tokens.
type diff struct {
	calls, in, out, cacheRead, cacheCreate int64
}

func (d diff) zero() bool { return d == diff{} }

type reconciliation struct {
	perKey map[string]diff
	total  diff
	maxRow diff
	// extraRuns: successful upstream calls beyond one per task answered
	// SUCCESS (a model run that was doubled or never answered).
	extraRuns     int64
	simSucceeded  int64
	tasksSuccess  int64
	unanswered    int
	unansweredIDs []string
	doubled       []string // request ids with SUCCESS rows in two or more runs
	running       []string // request ids (activity id) of RUNNING activities
	abandoned     []string // request ids of ABANDONED activities
	notCompleted  []string // SUCCESS answers whose activity is not COMPLETED (full snapshots)
	unbilled      []string // SUCCESS answers without a SUCCESS row for their run (full snapshots)
	dupAttempts   int
	otherRows     int
}

// usageExact: every upstream call the simulator answered has exactly one
// usage row, for every key.
func (r reconciliation) usageExact() bool {
	for _, d := range r.perKey {
		if !d.zero() {
			return false
		}
	}
	return r.otherRows == 0 && r.dupAttempts == 0
}

// withinAllowance is the contract after the orchestrator kill: what is
// lost, run twice or abandoned is among the tasks in flight at the kill
// and no more than them; everything else balances.
func (r reconciliation) withinAllowance(inflight map[string]bool) bool {
	n := int64(len(inflight))
	for _, d := range r.perKey {
		if d.calls < 0 || d.in < 0 || d.out < 0 || d.cacheRead < 0 || d.cacheCreate < 0 {
			return false
		}
	}
	return r.total.calls <= n && r.extraRuns <= n && int64(len(r.doubled)) <= n && subset(r.doubled, inflight) &&
		subset(r.abandoned, inflight) && len(r.running) == 0 && r.unanswered == 0 &&
		len(r.notCompleted) == 0 && len(r.unbilled) == 0 && r.dupAttempts == 0 && r.otherRows == 0
}

func subset(ids []string, of map[string]bool) bool {
	for _, id := range ids {
		if !of[id] {
			return false
		}
	}
	return true
}

// balanced: nothing lost, nothing doubled, nothing running or abandoned,
// every task answered.
func (r reconciliation) balanced() bool {
	if r.total.calls != 0 || r.extraRuns != 0 || r.unanswered != 0 || len(r.doubled) != 0 ||
		len(r.running) != 0 || len(r.abandoned) != 0 || len(r.notCompleted) != 0 || len(r.unbilled) != 0 ||
		r.dupAttempts != 0 || r.otherRows != 0 {
		return false
	}
	for _, d := range r.perKey {
		if !d.zero() {
			return false
		}
	}
	return true
}

func (r reconciliation) problems() string {
	var p []string
	for _, k := range faultKeys {
		if d := r.perKey[k]; !d.zero() {
			p = append(p, fmt.Sprintf("key %s sim−ledger %+v", k, d))
		}
	}
	if r.extraRuns != 0 {
		p = append(p, fmt.Sprintf("extra model runs %d (sim successes %d, SUCCESS tasks %d)", r.extraRuns, r.simSucceeded, r.tasksSuccess))
	}
	if r.unanswered != 0 {
		p = append(p, fmt.Sprintf("unanswered %d: %v", r.unanswered, r.unansweredIDs))
	}
	for _, l := range []struct {
		what string
		ids  []string
	}{{"ran twice", r.doubled}, {"RUNNING", r.running}, {"ABANDONED", r.abandoned}, {"SUCCESS without COMPLETED activity", r.notCompleted}, {"SUCCESS without usage row", r.unbilled}} {
		if len(l.ids) > 0 {
			p = append(p, fmt.Sprintf("%s %d: %s", l.what, len(l.ids), strings.Join(l.ids, ", ")))
		}
	}
	if r.dupAttempts != 0 || r.otherRows != 0 {
		p = append(p, fmt.Sprintf("duplicate attempt rows %d, legacy/unknown-account rows %d", r.dupAttempts, r.otherRows))
	}
	if len(p) == 0 {
		return "balanced"
	}
	return strings.Join(p, "; ")
}

func reconcile(load *faultLoad, s *faultSnapshot) reconciliation {
	r := reconciliation{perKey: map[string]diff{}, dupAttempts: s.dupAttempts, otherRows: s.legacyRows + s.unknownAccountRows}
	for _, k := range faultKeys {
		sim, led := s.sim[k], s.ledger[k]
		d := diff{
			calls: sim.Succeeded + sim.StreamsBroken - led.charged,
			in:    sim.Usage.InputTokens - led.in, out: sim.Usage.OutputTokens - led.out,
			cacheRead: sim.Usage.CacheReadTokens - led.cacheRead, cacheCreate: sim.Usage.CacheCreationTokens - led.cacheCreate,
		}
		r.perKey[k] = d
		r.total = diff{r.total.calls + d.calls, r.total.in + d.in, r.total.out + d.out, r.total.cacheRead + d.cacheRead, r.total.cacheCreate + d.cacheCreate}
		r.maxRow = diff{0, max(r.maxRow.in, led.maxIn), max(r.maxRow.out, led.maxOut), max(r.maxRow.cacheRead, led.maxCacheRead), max(r.maxRow.cacheCreate, led.maxCreate)}
		r.simSucceeded += sim.Succeeded
	}
	for id, rows := range s.rowsByRequest {
		runs := 0
		for _, outcomes := range rows {
			for _, o := range outcomes {
				if o == "SUCCESS" {
					runs++
					break
				}
			}
		}
		if runs >= 2 {
			r.doubled = append(r.doubled, id)
		}
	}
	for _, a := range s.running {
		r.running = append(r.running, requestOf(a)+" ("+a.GetId()+")")
	}
	for _, a := range s.abandoned {
		r.abandoned = append(r.abandoned, requestOf(a))
	}

	load.mu.Lock()
	defer load.mu.Unlock()
	for _, task := range load.tasks {
		if task.unanswered {
			r.unanswered++
			r.unansweredIDs = append(r.unansweredIDs, task.id)
		}
		if task.resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
			continue
		}
		r.tasksSuccess++
		if !s.full {
			continue
		}
		a := s.acts[task.resp.GetMetadata().GetActivityId()]
		if a == nil || a.GetStatus() != activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED {
			r.notCompleted = append(r.notCompleted, fmt.Sprintf("%s (activity %s: %v)", task.id, task.resp.GetMetadata().GetActivityId(), a.GetStatus()))
		}
		rid := task.id
		if a != nil && runOf(a) > 1 {
			rid = fmt.Sprintf("%s~run%d", task.id, runOf(a))
		}
		billed := false
		for _, o := range s.rowsByRequest[task.id][rid] {
			billed = billed || o == "SUCCESS"
		}
		if !billed {
			r.unbilled = append(r.unbilled, rid)
		}
	}
	r.extraRuns = r.simSucceeded - r.tasksSuccess
	sort.Strings(r.doubled)
	sort.Strings(r.running)
	sort.Strings(r.abandoned)
	return r
}

// ---- The report.

type faultPhase struct {
	idx         int
	name, label string
	// start: load resumed; inject: the fault; restore: restart or Up;
	// end: the load paused for the checkpoint and every caller's task
	// answered (or given up).
	start, inject, restore, end time.Time
	health                      time.Duration // restarted process SERVING after restore; -1: n/a
	firstSuccess                time.Duration // first new task SUCCESS after restore
	recovered                   bool
	orchKill                    bool     // the orchestrator kill, with an allowance
	inflight                    []string // unanswered at the inject (orchestrator kill)
	snap, prev                  *faultSnapshot
	rec                         reconciliation
	quiesced                    time.Duration
	exact                       bool
}

func logFaultReport(t *testing.T, load *faultLoad, phases []*faultPhase, allowance int, began time.Time) {
	t.Helper()
	load.mu.Lock()
	defer load.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\nFAULT TEST RESULTS (%d callers, simulator delay per call %v by account, %s per-send deadline; outage = fault injected → restart/Up)\n", faultCallers, faultSimDelays, faultCallTimeout)
	fmt.Fprintf(&b, "%-27s | %7s | %9s | %11s | %9s | %10s | %10s | %7s | %7s | %9s | %10s | %10s | %s\n",
		"fault", "outage", "answered", "failed", "answered", "usage rows", "lost calls", "ran", "RUNNING", "ABANDONED", "health", "first new", "books")
	fmt.Fprintf(&b, "%-27s | %7s | %9s | %11s | %9s | %10s | %10s | %7s | %7s | %9s | %10s | %10s | %s\n",
		"", "", "in outage", "sends in", "in phase", "in phase", "(sim−ledgr)", "twice", "at end", "at end", "SERVING", "SUCCESS", "")
	fmt.Fprintf(&b, "%-27s | %7s | %9s | %11s | %9s | %10s | %10s | %7s | %7s | %9s | %10s | %10s | %s\n",
		"", "", "", "outage", "", "", "in phase", "in phase", "", "", "after rst", "after rst", "")
	for _, ph := range phases {
		var inOutage, inPhase, failedOutage int
		for _, task := range load.tasks {
			if !task.answered {
				continue
			}
			if !task.answeredAt.Before(ph.inject) && !task.answeredAt.After(ph.restore) {
				inOutage++
			}
			if !task.answeredAt.Before(ph.start) && !task.answeredAt.After(ph.end) {
				inPhase++
			}
		}
		failedCodes := map[codes.Code]int{}
		for _, e := range load.sends {
			if e.code != codes.OK && !e.at.Before(ph.inject) && !e.at.After(ph.restore) {
				failedOutage++
				failedCodes[e.code]++
			}
		}
		prevRows, prevLost, prevDoubled := 0, int64(0), 0
		if ph.prev != nil {
			prevRows = ph.prev.rows
			for _, p := range phases {
				if p.snap == ph.prev {
					prevLost, prevDoubled = p.rec.total.calls, len(p.rec.doubled)
				}
			}
		}
		health := "n/a"
		if ph.health >= 0 {
			health = fmt.Sprintf("%.2fs", ph.health.Seconds())
		}
		first := "n/a"
		if ph.idx > 0 {
			first = fmt.Sprintf("%.2fs", ph.firstSuccess.Seconds())
			if !ph.recovered {
				first = "NEVER"
			}
		}
		books := fmt.Sprintf("exact after %.1fs", ph.quiesced.Seconds())
		switch {
		case ph.rec.balanced():
		case ph.orchKill && ph.rec.withinAllowance(idSet(ph.inflight)):
			books = fmt.Sprintf("within allowance after %.1fs", ph.quiesced.Seconds())
		case ph.orchKill:
			books = fmt.Sprintf("NOT within allowance after %.1fs", ph.quiesced.Seconds())
		default:
			books = fmt.Sprintf("NOT exact after %.1fs", ph.quiesced.Seconds())
		}
		fmt.Fprintf(&b, "%-27s | %6.1fs | %9d | %11d | %9d | %10d | %10d | %7d | %7d | %9d | %10s | %10s | %s\n",
			ph.name, ph.restore.Sub(ph.inject).Seconds(), inOutage, failedOutage, inPhase, ph.snap.rows-prevRows,
			ph.rec.total.calls-prevLost, len(ph.rec.doubled)-prevDoubled, len(ph.rec.running), len(ph.rec.abandoned), health, first, books)
		var ok, replayed, pending, bkErrors, other int
		for _, task := range load.tasks {
			if !task.answered || task.answeredAt.Before(ph.start) || task.answeredAt.After(ph.end) {
				continue
			}
			md := task.resp.GetMetadata()
			if task.resp.GetStatus() == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
				ok++
			} else {
				other++
			}
			if md.GetReplayed() {
				replayed++
			}
			if len(md.GetBookkeepingPending()) > 0 {
				pending++
			}
			if len(md.GetBookkeepingErrors()) > 0 {
				bkErrors++
			}
		}
		phaseCodes := map[codes.Code]int{}
		for _, e := range load.sends {
			if e.code != codes.OK && !e.at.Before(ph.start) && !e.at.After(ph.end) {
				phaseCodes[e.code]++
			}
		}
		rel := func(at time.Time) float64 { return at.Sub(began).Seconds() }
		fmt.Fprintf(&b, "%-27s   answers in phase: SUCCESS %d, not SUCCESS %d, replayed %d, with bookkeeping_pending %d, with bookkeeping_errors %d; failed sends in outage %s, in phase %s\n",
			"", ok, other, replayed, pending, bkErrors, codeCounts(failedCodes), codeCounts(phaseCodes))
		fmt.Fprintf(&b, "%-27s   timeline (s since test start): load resumed %.2f, fault %.2f, restore %.2f, load paused and callers idle %.2f\n",
			"", rel(ph.start), rel(ph.inject), rel(ph.restore), rel(ph.end))
	}
	// Totals.
	var tasks, sends, success, failedSt, rateLimited, replayed, pending, bkErrors, unanswered, probes int
	attempts := map[int32]int{}
	for _, task := range load.tasks {
		tasks++
		sends += task.sends
		if task.caller < 0 {
			probes++
		}
		if task.unanswered {
			unanswered++
		}
		if task.resp == nil {
			continue
		}
		switch task.resp.GetStatus() {
		case orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS:
			success++
		case orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED:
			rateLimited++
		default:
			failedSt++
		}
		md := task.resp.GetMetadata()
		if md.GetReplayed() {
			replayed++
		}
		if len(md.GetBookkeepingPending()) > 0 {
			pending++
		}
		if len(md.GetBookkeepingErrors()) > 0 {
			bkErrors++
		}
		attempts[md.GetAttempts()]++
	}
	last := phases[len(phases)-1]
	fmt.Fprintf(&b, "tasks: %d (%d recovery probes), sends: %d, answers: SUCCESS %d, FAILED %d, RATE_LIMITED %d; replayed answers %d; answers with bookkeeping_pending %d, with bookkeeping_errors %d; unanswered %d; attempts per answer %v\n",
		tasks, probes, sends, success, failedSt, rateLimited, replayed, pending, bkErrors, unanswered, attempts)
	fmt.Fprintf(&b, "final books: usage rows %d; simulator successful calls %d; sim−ledger total %+v; extra model runs (sim successes − SUCCESS tasks) %d; ran twice (ledger) %d; RUNNING %d; ABANDONED %d; allowance (tasks in flight at the orchestrator kill) %d\n",
		last.snap.rows, last.rec.simSucceeded, last.rec.total, last.rec.extraRuns, len(last.rec.doubled), len(last.rec.running), len(last.rec.abandoned), allowance)
	for _, k := range faultKeys {
		st, l := last.snap.sim[k], last.snap.ledger[k]
		fmt.Fprintf(&b, "  %s: sim requests %d succeeded %d broken %d rate-limited %d in/out %d/%d | ledger rows %d charged %d success %d in/out %d/%d\n",
			k, st.Requests, st.Succeeded, st.StreamsBroken, st.RateLimited, st.Usage.InputTokens, st.Usage.OutputTokens, l.rows, l.charged, l.success, l.in, l.out)
	}
	fmt.Fprintf(&b, "final reconciliation: %s", last.rec.problems())
	t.Log(b.String())
}
