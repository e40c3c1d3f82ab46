// Package outbox delivers the Orchestrator's bookkeeping — usage records
// for AccountPool, progress and completions for Activity — so that none is
// lost when a service or its database is down, and none overtakes another
// of the same task.
//
// A record is stored before Enqueue returns (on disk with fsync when the
// outbox has a directory, in memory otherwise), then delivered at once when
// its lane and target are clear; the caller learns the answer of that first
// try, or that the record is pending. Pending records are retried in the
// background with backoff until acknowledged; records of one lane (a task's
// records for one target) are delivered one at a time, in order. A target
// whose delivery failed is backed off as a whole (100 ms doubling to 5 s),
// so an outage costs one probe per interval, not one call per record, and
// the backlog drains, at Workers deliveries at a time, once a probe
// succeeds. An error the Retryable func rejects is permanent: the record is
// dropped and logged, since retrying it would block its lane for good.
//
// The outbox is bounded: Admit fails with ErrFull once MaxRecords are
// pending, so a task that could not record its work is refused before it
// runs instead of losing the records afterwards.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrFull is Admit's answer when MaxRecords are pending.
var ErrFull = errors.New("the bookkeeping outbox is full: AccountPool or Activity has been unreachable for a while")

// ErrClosed is Admit's answer once Drain has begun.
var ErrClosed = errors.New("the orchestrator is shutting down")

// Record is one bookkeeping call.
type Record struct {
	// Lane orders records: those of one lane are delivered one at a time,
	// in the order they were enqueued.
	Lane string
	// Target is the service the record goes to; delivery backs off per
	// target.
	Target string
	// Method is the full gRPC method name; Body the marshalled request.
	Method string
	Body   []byte
	// Enqueued is when the record was stored.
	Enqueued time.Time

	seq uint64
}

// Result is what became of a record's first delivery.
type Result struct {
	// Delivered is true when the target acknowledged the record; Response
	// is then its marshalled answer.
	Delivered bool
	Response  []byte
	// Err is the permanent error that made the outbox drop the record.
	// When neither Delivered nor Err is set the record is pending.
	Err error
}

// Pending reports whether the record is queued for a later delivery.
func (r Result) Pending() bool { return !r.Delivered && r.Err == nil }

// Config configures an Outbox.
type Config struct {
	// Dir holds the durable outbox (outbox.db, a bbolt file). Empty keeps
	// records in memory: they survive outages of the targets, but not the
	// process.
	Dir string
	// MaxRecords bounds the pending records; default 100,000.
	MaxRecords int
	// Workers bounds concurrent background deliveries; default 16.
	Workers int
	// Deliver sends one record and returns the target's marshalled answer.
	Deliver func(ctx context.Context, r Record) ([]byte, error)
	// Retryable says whether a Deliver error is transient (retry later) or
	// permanent (drop the record).
	Retryable func(error) bool
	// AttemptTimeout bounds one delivery; default 10s.
	AttemptTimeout time.Duration
	// ReportInterval is how often the depth and age of a non-empty outbox
	// is logged; default 30s.
	ReportInterval time.Duration
	Logger         *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Outbox queues and delivers records. Create it with Open, run it with
// Run, and stop it with Drain. It is safe for concurrent use.
type Outbox struct {
	cfg   Config
	store store

	mu      sync.Mutex
	seq     uint64
	lanes   map[string]*lane
	targets map[string]*target
	depth   int
	dropped int
	// failures counts deliveries that failed, per target (retried or
	// dropped).
	failures map[string]uint64
	draining bool
	wake     chan struct{}
	idle     chan struct{} // closed and replaced whenever depth reaches 0
}

// lane is the pending records of one lane, oldest first.
type lane struct {
	name    string
	target  string
	records []Record
	busy    bool // a delivery of its head is in progress
	queued  bool // it is in its target's ready queue
}

// target is the delivery state of one service.
type target struct {
	ready     []*lane // lanes with records, not busy, waiting for a worker
	downUntil time.Time
	backoff   time.Duration
}

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Open returns an outbox holding the records a previous process left in
// cfg.Dir, ready to deliver them once Run starts.
func Open(cfg Config) (*Outbox, error) {
	if cfg.Deliver == nil || cfg.Retryable == nil {
		return nil, errors.New("outbox: Deliver and Retryable are required")
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = 100_000
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var st store = memStore{}
	if cfg.Dir != "" {
		bs, err := openBolt(cfg.Dir)
		if err != nil {
			return nil, err
		}
		st = bs
	}
	o := &Outbox{cfg: cfg, store: st, lanes: map[string]*lane{}, targets: map[string]*target{},
		wake: make(chan struct{}, 1), idle: make(chan struct{})}
	left, err := st.load()
	if err != nil {
		_ = st.close()
		return nil, err
	}
	for _, r := range left {
		o.seq = max(o.seq, r.seq)
		o.add(r)
	}
	if len(left) > 0 {
		cfg.Logger.Info("outbox: delivering records left by the previous process", "records", len(left), "dir", cfg.Dir)
	}
	return o, nil
}

// Durable reports whether records survive the process.
func (o *Outbox) Durable() bool { return o.cfg.Dir != "" }

// Admit reports whether a new task may run: ErrFull when the outbox is at
// its bound, ErrClosed once it drains.
func (o *Outbox) Admit() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.draining:
		return ErrClosed
	case o.depth >= o.cfg.MaxRecords:
		return fmt.Errorf("%w (%d records pending)", ErrFull, o.depth)
	}
	return nil
}

// Enqueue stores r and tries its first delivery when nothing is ahead of
// it in its lane and its target is not backing off. It returns once r is
// stored and that try (if any) is over. An error means r was not stored.
func (o *Outbox) Enqueue(ctx context.Context, r Record) (Result, error) {
	o.mu.Lock()
	o.seq++
	r.seq = o.seq
	r.Enqueued = o.cfg.Now()
	o.mu.Unlock()
	if err := o.store.put(r); err != nil {
		return Result{}, fmt.Errorf("outbox: storing a record: %w", err)
	}

	o.mu.Lock()
	l := o.add(r)
	t := o.target(r.Target)
	mine := !l.busy && len(l.records) == 1 && !o.cfg.Now().Before(t.downUntil)
	if mine {
		l.busy = true
		o.unready(l)
	}
	o.mu.Unlock()
	if !mine {
		o.signal()
		return Result{}, nil
	}
	return o.deliver(ctx, l), nil
}

// add queues r in its lane. o.mu must be held.
func (o *Outbox) add(r Record) *lane {
	l, ok := o.lanes[r.Lane]
	if !ok {
		l = &lane{name: r.Lane, target: r.Target}
		o.lanes[r.Lane] = l
	}
	l.records = append(l.records, r)
	o.depth++
	if !l.busy {
		o.ready(l)
	}
	return l
}

func (o *Outbox) target(name string) *target {
	t, ok := o.targets[name]
	if !ok {
		t = &target{}
		o.targets[name] = t
	}
	return t
}

// ready puts l in its target's queue. o.mu must be held.
func (o *Outbox) ready(l *lane) {
	if !l.queued {
		t := o.target(l.target)
		t.ready = append(t.ready, l)
		l.queued = true
	}
}

// unready takes l out of its target's queue. o.mu must be held.
func (o *Outbox) unready(l *lane) {
	if !l.queued {
		return
	}
	t := o.target(l.target)
	for i, q := range t.ready {
		if q == l {
			t.ready = append(t.ready[:i], t.ready[i+1:]...)
			break
		}
	}
	l.queued = false
}

// deliver sends l's head (l is busy) and settles the outcome.
func (o *Outbox) deliver(ctx context.Context, l *lane) Result {
	o.mu.Lock()
	r := l.records[0]
	o.mu.Unlock()

	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.AttemptTimeout)
	resp, err := o.cfg.Deliver(actx, r)
	cancel()

	var res Result
	switch {
	case err == nil:
		res = Result{Delivered: true, Response: resp}
	case !o.cfg.Retryable(err):
		res = Result{Err: err}
		o.cfg.Logger.Error("outbox: the target refused a record; dropped", "method", r.Method, "lane", r.Lane, "error", err)
	}
	if !res.Pending() {
		if derr := o.store.delete(r.seq); derr != nil {
			// It will be delivered again after a restart: every target
			// deduplicates what it can (usage by its upstream call,
			// completions by content).
			o.cfg.Logger.Warn("outbox: could not forget a delivered record", "error", derr)
		}
	}

	o.mu.Lock()
	t := o.target(l.target)
	if err != nil {
		if o.failures == nil {
			o.failures = map[string]uint64{}
		}
		o.failures[l.target]++
	}
	if res.Pending() {
		t.backoff = min(maxBackoff, max(minBackoff, 2*t.backoff))
		t.downUntil = o.cfg.Now().Add(t.backoff)
	} else {
		t.backoff, t.downUntil = 0, time.Time{}
		l.records = l.records[1:]
		o.depth--
		if res.Err != nil {
			o.dropped++
		}
	}
	l.busy = false
	if len(l.records) > 0 {
		o.ready(l)
	} else {
		delete(o.lanes, l.name)
	}
	if o.depth == 0 {
		close(o.idle)
		o.idle = make(chan struct{})
	}
	o.mu.Unlock()
	o.signal()
	return res
}

// TargetStats is what waits for one target.
type TargetStats struct {
	Target string
	// Records waiting, and the enqueue time of the oldest (zero when none).
	Records int
	Oldest  time.Time
	// Failures counts the deliveries to it that failed since the process
	// started.
	Failures uint64
}

// TargetStats reports, per target, what waits and how many deliveries
// failed, in target order. It walks every lane: for metrics scrapes, not
// the hot path.
func (o *Outbox) TargetStats() []TargetStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	by := map[string]*TargetStats{}
	get := func(t string) *TargetStats {
		st, ok := by[t]
		if !ok {
			st = &TargetStats{Target: t, Failures: o.failures[t]}
			by[t] = st
		}
		return st
	}
	for t := range o.failures {
		get(t)
	}
	for _, l := range o.lanes {
		st := get(l.target)
		st.Records += len(l.records)
		if len(l.records) > 0 && (st.Oldest.IsZero() || l.records[0].Enqueued.Before(st.Oldest)) {
			st.Oldest = l.records[0].Enqueued
		}
	}
	out := make([]TargetStats, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b TargetStats) int { return strings.Compare(a.Target, b.Target) })
	return out
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Run delivers pending records until ctx ends, and logs the outbox's
// depth and age while it is not empty.
func (o *Outbox) Run(ctx context.Context) {
	sem := make(chan struct{}, o.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	report := time.NewTicker(o.cfg.ReportInterval)
	defer report.Stop()
	for {
		next := o.dispatch(ctx, sem, &wg)
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-o.wake:
		case <-timer.C:
		case <-report.C:
			o.report()
		}
		timer.Stop()
	}
}

// dispatch starts deliveries for ready lanes of targets that are not
// backing off, as far as workers are free, and returns how long until a
// backed-off target may be tried again.
func (o *Outbox) dispatch(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	next := time.Minute
	for _, t := range o.targets {
		if now.Before(t.downUntil) {
			next = min(next, t.downUntil.Sub(now))
			continue
		}
		for len(t.ready) > 0 {
			select {
			case sem <- struct{}{}:
			default:
				return min(next, 10*time.Millisecond) // workers busy: look again soon
			}
			l := t.ready[0]
			t.ready = t.ready[1:]
			l.queued, l.busy = false, true
			wg.Go(func() {
				defer func() { <-sem }()
				o.deliver(ctx, l)
			})
			if t.backoff > 0 {
				break // a backed-off target gets one probe, not the whole backlog
			}
		}
	}
	return next
}

func (o *Outbox) report() {
	depth, oldest, dropped := o.Stats()
	if depth == 0 {
		return
	}
	o.cfg.Logger.Warn("outbox: bookkeeping records are waiting for AccountPool or Activity",
		"pending", depth, "oldest_age", o.cfg.Now().Sub(oldest).Round(time.Second), "dropped", dropped, "durable", o.Durable())
}

// Stats returns the pending records, when the oldest was enqueued, and how
// many records were dropped as permanently refused.
func (o *Outbox) Stats() (depth int, oldest time.Time, dropped int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range o.lanes {
		if len(l.records) > 0 && (oldest.IsZero() || l.records[0].Enqueued.Before(oldest)) {
			oldest = l.records[0].Enqueued
		}
	}
	return o.depth, oldest, o.dropped
}

// Drain stops admitting tasks and waits until every pending record is
// delivered or ctx ends; Run must still be running. It returns the records
// left, which a durable outbox keeps for the next process.
func (o *Outbox) Drain(ctx context.Context) int {
	o.mu.Lock()
	o.draining = true
	o.mu.Unlock()
	for {
		o.mu.Lock()
		depth, idle := o.depth, o.idle
		o.mu.Unlock()
		if depth == 0 {
			return 0
		}
		o.signal()
		select {
		case <-idle:
		case <-ctx.Done():
			return depth
		}
	}
}

// Close releases the store. Records still pending stay on disk in a
// durable outbox and are lost in a memory one.
func (o *Outbox) Close() error {
	depth, _, _ := o.Stats()
	if depth > 0 && !o.Durable() {
		o.cfg.Logger.Error("outbox: closing with undelivered records that only lived in memory; they are lost", "records", depth)
	}
	return o.store.close()
}
