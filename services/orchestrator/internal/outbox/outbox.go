// Package outbox delivers the Orchestrator's bookkeeping — usage records
// for AccountPool, progress and completions for Activity — so that none is
// lost when a service or its database is down, and none overtakes another
// of the same task.
//
// Enqueue tries a record's first delivery at once when its lane and target
// are clear, and returns only once the record is acknowledged by its
// target, dropped, or stored as pending: the caller learns the answer of
// that first try, or that the record is pending. Pending records are
// retried in the background with backoff until acknowledged; records of
// one lane (a task's records for one target) are delivered one at a time,
// in order. A target whose delivery failed is backed off as a whole
// (100 ms doubling to 5 s), so an outage costs one probe per interval, not
// one call per record, and the backlog drains, at Workers deliveries at a
// time, once a probe succeeds. An error the Retryable func rejects is
// permanent: the record is dropped and logged, since retrying it would
// block its lane for good.
//
// Without a directory a record is stored in memory. With one, a pending
// record is on disk (bbolt, fsynced) before Enqueue returns, but the disk
// is kept off the common path: Enqueue hands the record to a background
// writer as its first delivery starts, and the writer stores it after a
// short hold (Config.PersistDelay, 5 ms by default) unless its delivery
// has ended by then, so a record acknowledged within the hold is never
// written. A record whose first delivery fails retryably is stored at
// once, and Enqueue waits for that; a record queued behind its lane or a
// backed-off target is stored after the hold, and Enqueue returns it as
// pending once it is on disk. The writer commits in groups: one
// transaction (one fsync) takes every record and delete queued while the
// previous one ran. This opens one window: a process crash during the
// hold, while the first delivery is unanswered, may lose that record —
// exactly as a crash just before Enqueue would, and in both cases the
// caller has no answer yet. Once a stored record is delivered its delete
// is queued to the writer, not waited for; a delete lost in a crash means
// only that the record is delivered again after the restart, and every
// target deduplicates what it can (usage by its upstream call, completions
// by content).
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
	// Enqueued is when the record was enqueued.
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
	// PersistDelay is how long, with a Dir, the writer holds a new record
	// before storing it, so that one whose first delivery ends (delivered
	// or refused) within it is never written; default 5 ms. A record whose
	// first delivery fails retryably is stored at once. Negative stores
	// each record as soon as the writer is free. A process crash within
	// the hold may lose a record whose Enqueue has not returned yet.
	PersistDelay time.Duration
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
	store store // nil in a memory outbox
	// closeTimeout bounds Close's wait for the writer.
	closeTimeout time.Duration

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

	// The writer's queues (with a store only).
	wputs []*entry // records handed to the writer, in enqueue order, not yet taken
	wdels []uint64 // stored records delivered since, to forget
	// wdelsAfter is when wdels may be written again after a failure.
	wdelsAfter time.Time
	wflush     []chan struct{} // closed once everything queued before is written
	wclosing   bool            // Close has begun: write everything, accept no new record
	wexited    bool            // the writer is gone
	wwake      chan struct{}
	wdone      chan struct{} // closed when the writer is gone
}

// entry is a record in the outbox and what became of it. Its fields are
// guarded by Outbox.mu.
type entry struct {
	Record
	// due is when the writer stores the record unless it is done by then.
	due time.Time
	// urgent: its first delivery failed; the writer stores it at once.
	urgent bool
	// writing: it is in the writer's transaction; persisted: on disk.
	writing, persisted bool
	// done: out of the outbox (delivered, dropped, or withdrawn because it
	// could not be stored); res is then what became of it.
	done bool
	res  Result
	// werr is why the writer could not store it. withdraw asks the
	// delivery in progress to take it out of the outbox, unless that
	// delivery succeeds: a pending record must be stored.
	werr     error
	withdraw bool
	// settled is closed once the record is persisted or done; nil in a
	// memory outbox and for records loaded from disk.
	settled chan struct{}
}

// lane is the pending records of one lane, oldest first.
type lane struct {
	name    string
	target  string
	records []*entry
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
// cfg.Dir, ready to deliver them once Run starts. With a Dir it starts the
// writer, which Close stops.
func Open(cfg Config) (*Outbox, error) { return open(cfg, nil) }

// open is Open with a hook for tests, which wraps the store.
func open(cfg Config, wrap func(store) store) (*Outbox, error) {
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
	switch {
	case cfg.PersistDelay == 0:
		cfg.PersistDelay = 5 * time.Millisecond
	case cfg.PersistDelay < 0:
		cfg.PersistDelay = 0
	}
	o := &Outbox{cfg: cfg, closeTimeout: defaultCloseTimeout, lanes: map[string]*lane{}, targets: map[string]*target{},
		wake: make(chan struct{}, 1), idle: make(chan struct{})}
	if cfg.Dir == "" {
		return o, nil
	}
	bs, err := openBolt(cfg.Dir)
	if err != nil {
		return nil, err
	}
	var st store = bs
	if wrap != nil {
		st = wrap(st)
	}
	left, err := st.load()
	if err != nil {
		_ = st.close()
		return nil, err
	}
	for _, r := range left {
		o.seq = max(o.seq, r.seq)
		o.add(&entry{Record: r, persisted: true})
	}
	if len(left) > 0 {
		cfg.Logger.Info("outbox: delivering records left by the previous process", "records", len(left), "dir", cfg.Dir)
	}
	o.store, o.wwake, o.wdone = st, make(chan struct{}, 1), make(chan struct{})
	go o.writer()
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

// Enqueue adds r to the outbox and tries its first delivery at once when
// nothing is ahead of it in its lane and its target is not backing off.
// It returns only once r is acknowledged by its target (Delivered), dropped
// as refused (Err), or stored as pending: in memory without a Dir, on disk
// with one. With a Dir a record whose first try succeeds within
// PersistDelay is never written, so a process crash before Enqueue returns
// may lose r, as a crash before the call would; a pending answer means r is
// on disk. A record queued behind its lane or target is stored after
// PersistDelay and may be delivered by then (the answer then says so).
// An error means r could not be stored and was taken out of the outbox:
// it is not pending, and not delivered unless a try whose outcome was
// unknown reached the target.
func (o *Outbox) Enqueue(ctx context.Context, r Record) (Result, error) {
	o.mu.Lock()
	if o.store != nil && o.wclosing {
		o.mu.Unlock()
		return Result{}, errors.New("outbox: storing a record: the outbox is closed")
	}
	o.seq++
	r.seq = o.seq
	r.Enqueued = o.cfg.Now()
	e := &entry{Record: r}
	l := o.add(e)
	if o.store != nil {
		e.settled = make(chan struct{})
		e.due = time.Now().Add(o.cfg.PersistDelay)
		if len(o.wputs) == 0 {
			o.wakeWriter() // else it is already timed for an earlier one
		}
		o.wputs = append(o.wputs, e)
	}
	t := o.target(r.Target)
	mine := !l.busy && len(l.records) == 1 && !o.cfg.Now().Before(t.downUntil)
	if mine {
		l.busy = true
		o.unready(l)
	}
	o.mu.Unlock()
	if !mine {
		o.signal()
		if e.settled == nil {
			return Result{}, nil
		}
		return o.await(e)
	}
	res := o.deliver(ctx, l)
	if !res.Pending() || e.settled == nil {
		return res, nil // a put the writer has not taken yet is skipped
	}
	o.mu.Lock()
	if !e.persisted && !e.done {
		e.urgent = true
		o.wakeWriter()
	}
	o.mu.Unlock()
	return o.await(e)
}

// await waits until e is on disk or out of the outbox, and says which.
func (o *Outbox) await(e *entry) (Result, error) {
	<-e.settled
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case e.done && !e.res.Pending():
		return e.res, nil
	case e.werr != nil:
		return Result{}, fmt.Errorf("outbox: storing a record: %w", e.werr)
	}
	return Result{}, nil
}

// add queues e in its lane. o.mu must be held.
func (o *Outbox) add(e *entry) *lane {
	l, ok := o.lanes[e.Lane]
	if !ok {
		l = &lane{name: e.Lane, target: e.Target}
		o.lanes[e.Lane] = l
	}
	l.records = append(l.records, e)
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
	e := l.records[0]
	o.mu.Unlock()

	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.AttemptTimeout)
	resp, err := o.cfg.Deliver(actx, e.Record)
	cancel()

	var res Result
	switch {
	case err == nil:
		res = Result{Delivered: true, Response: resp}
	case !o.cfg.Retryable(err):
		res = Result{Err: err}
		o.cfg.Logger.Error("outbox: the target refused a record; dropped", "method", e.Method, "lane", e.Lane, "error", err)
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
	}
	if !res.Pending() || e.withdraw {
		l.records[0] = nil
		l.records = l.records[1:]
		o.depth--
		if res.Err != nil {
			o.dropped++
		}
		o.finish(e, res)
	}
	l.busy = false
	if len(l.records) > 0 {
		o.ready(l)
	} else {
		delete(o.lanes, l.name)
	}
	o.noteIdle()
	o.mu.Unlock()
	o.signal()
	return res
}

// finish marks e, just taken out of its lane, as done. o.mu must be held.
func (o *Outbox) finish(e *entry, res Result) {
	e.done, e.res = true, res
	switch {
	case e.persisted:
		o.forget(e.seq)
	case e.settled != nil:
		// Not on disk: the writer skips it, or forgets it once its
		// transaction (if it is writing it) commits.
		close(e.settled)
	}
}

// noteIdle wakes Drain when nothing is pending. o.mu must be held.
func (o *Outbox) noteIdle() {
	if o.depth == 0 {
		close(o.idle)
		o.idle = make(chan struct{})
	}
}

// Drain stops admitting tasks and waits until every pending record is
// delivered or ctx ends; Run must still be running. Then it waits, within
// ctx too, for the writer to write what is queued (stored records,
// deletes); Close writes what is left. It returns the
// records left, which a durable outbox keeps for the next process.
func (o *Outbox) Drain(ctx context.Context) int {
	o.mu.Lock()
	o.draining = true
	o.mu.Unlock()
	left := o.drain(ctx)
	o.flush(ctx)
	return left
}

func (o *Outbox) drain(ctx context.Context) int {
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

// Close writes what the writer has queued (records not yet stored,
// deletes), stops it, and releases the store; a writer stuck for 30 s in a
// write makes it return an error instead of waiting on. Records still pending stay
// on disk in a durable outbox and are lost in a memory one. A durable
// outbox refuses Enqueue once Close has begun.
func (o *Outbox) Close() error {
	depth, _, _ := o.Stats()
	if depth > 0 && !o.Durable() {
		o.cfg.Logger.Error("outbox: closing with undelivered records that only lived in memory; they are lost", "records", depth)
	}
	if o.store == nil {
		return nil
	}
	o.mu.Lock()
	o.wclosing = true
	o.wakeWriter()
	o.mu.Unlock()
	timer := time.NewTimer(o.closeTimeout)
	defer timer.Stop()
	select {
	case <-o.wdone:
	case <-timer.C:
		// The writer is stuck in a write (a disk that does not answer):
		// closing the file would wait for it too. The process is stopping;
		// what the file holds is delivered by the next one.
		return fmt.Errorf("outbox: the writer did not finish within %s (is the disk stuck?); the outbox file was left open", o.closeTimeout)
	}
	return o.store.close()
}

// defaultCloseTimeout bounds how long Close waits for the writer.
const defaultCloseTimeout = 30 * time.Second
