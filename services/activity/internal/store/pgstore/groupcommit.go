package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// committer writes CreateActivity, AppendProgress and CompleteActivity by
// group commit, as the AccountPool's usage ledger writes its rows: a writer
// goroutine takes every write queued while its previous one ran (up to
// maxBatch), sends them as one pgx batch, hence one implicit transaction,
// one round trip and one WAL flush, and answers each caller only after that
// transaction committed. Under load the batches grow by themselves; with one
// caller at a time a write waits for nothing but its own round trip.
//
// The batch holds, per organization, the tenant setting (transaction-local,
// so each setting covers the statements after it until the next one) and
// then every write's statements, exactly those a write alone would send,
// and ends with the change feed's stamping (stamp.go). READ COMMITTED
// gives each statement a fresh snapshot that also sees what the statements
// before it in the transaction wrote, so the writes of one batch behave as
// if they ran one after another in queue order.
//
// Writes are ordered by (organization, activity id) in a batch, stably, so
// writes of one activity keep their queue order, and every batch, of this
// process or another replica, takes its row locks in that order: batches
// wait for each other but cannot deadlock. Writes of different activities
// in one batch were concurrent (none was answered before the other was
// queued), so any order between them is one their callers may observe.
//
// There are a few writers (WithWriters, 2 by default: one batch runs on
// one database backend, so one writer is bound by one database core, and
// on the two-core test machine two writers took 64 concurrent callers'
// writes about 1.4 times as fast as one, and three or four no faster
// than two). An organization always goes to the same writer, chosen by
// hashing its id, so that writes of one activity still queue in order, two
// writers never wait for each other's row locks, and they never wait for
// each other's change locks either: the stamping holds an organization's
// change lock until the commit, so two batches with writes of one
// organization commit one after the other, and writers that shared
// organizations would lose the overlap of their commits that makes a
// second writer pay.
//
// A batch the database rejected (a statement failed: bad data, a
// constraint, a serialization failure, a deadlock with another
// transaction such as the reaper's) rolled back whole, so each of its
// writes is retried alone, in its own transaction, and gets its own result:
// one bad write never fails the writes that shared its batch by chance. A
// batch whose connection failed, or whose fate is unknown, is not retried:
// every write in it gets that failure (store.ErrUnavailable, or
// store.ErrOutcomeUnknown when it may have committed), as a lone write
// would.
type committer struct {
	pool         *pgxpool.Pool
	maxBatch     int
	flushTimeout time.Duration
	// direct means no group commit (maxBatch 1): each write runs in its
	// caller's goroutine, under its caller's context.
	direct bool
	seed   maphash.Seed

	// mu guards closed and the sends on queues, so close can close the
	// queues knowing no sender is inside enqueue.
	mu     sync.RWMutex
	closed bool
	queues []chan *pending
	done   sync.WaitGroup

	// metrics are the group commit's instruments.
	metrics pgxutil.FlushMetrics
	// flushes and writes count committed batches and the writes in them;
	// fallbacks counts the batches whose writes were retried one by one.
	// For tests and benchmarks.
	flushes, writes, fallbacks atomic.Int64
}

// A write is one of the three calls, as the committer sees it.
type write interface {
	// queue adds the write's statements (not the tenant setting) to b, with
	// callbacks that record what they read in the write. It first forgets
	// what an earlier, rolled back, attempt recorded.
	queue(b *pgx.Batch)
	// settle computes the write's result from what its statements read,
	// once their transaction committed, and returns the error the call
	// returns with it (nil, or one of the store's errors for the call).
	settle() error
}

// The states of a pending write. The writer moves it from queued to taken
// when it puts it in a batch; a caller that gives up moves it from queued
// to abandoned, and so does the writer for a caller whose context ended
// before the writer reached it. Whoever moves it first decides whether it
// may be written.
const (
	queued int32 = iota
	taken
	abandoned
)

type pending struct {
	ctx     context.Context
	org, id string
	doing   string // "creating activity": what errors say
	w       write
	state   atomic.Int32
	result  chan error // buffered: the writer never waits for a caller
}

func newCommitter(pool *pgxpool.Pool, cfg config) *committer {
	c := &committer{
		pool:         pool,
		maxBatch:     cfg.maxBatch,
		flushTimeout: cfg.flushTimeout,
		direct:       cfg.maxBatch == 1,
		seed:         maphash.MakeSeed(),
	}
	c.metrics = pgxutil.NewFlushMetrics(cfg.meter, pgxutil.FlushMetricNames{
		Scope:  "github.com/switchyard-dev/switchyard/services/activity/internal/store/pgstore",
		Prefix: "switchyard.activity.flush", What: "one Activity store group commit",
		Items: "writes", Unit: "{write}",
		ItemsDescription: "Writes (CreateActivity, AppendProgress, CompleteActivity) per Activity store group commit, by outcome.",
	})
	if c.direct {
		return c
	}
	c.queues = make([]chan *pending, cfg.writers)
	for i := range c.queues {
		q := make(chan *pending, cfg.maxBatch)
		c.queues[i] = q
		c.done.Go(func() { c.run(q) })
	}
	return c
}

// do hands w to a writer and waits for its transaction, or for ctx.
//
// A caller whose context ends first is answered at once with the
// context's error. When the write had not been taken into a batch yet, it
// never will be, and the error is the context's alone. When it had, it may
// commit after the caller left, and the error also wraps
// store.ErrOutcomeUnknown: the api answers the caller's end (Canceled,
// DeadlineExceeded) either way, and a retry is as safe as after any
// unknown outcome (CreateActivity and CompleteActivity are, AppendProgress
// may append twice).
func (c *committer) do(ctx context.Context, org, id, doing string, w write) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	p := &pending{ctx: ctx, org: org, id: id, doing: doing, w: w}
	if c.direct {
		return c.doDirect(ctx, p)
	}
	p.result = make(chan error, 1)
	if err := c.enqueue(ctx, p); err != nil {
		return err
	}
	select {
	case err := <-p.result:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-p.result: // answered while ctx ended: the answer stands
		return err
	default:
	}
	if p.state.CompareAndSwap(queued, abandoned) || p.state.Load() == abandoned {
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	}
	return fmt.Errorf("%s: %w (the write was on its way to the database and may yet commit): %w", doing, ctx.Err(), store.ErrOutcomeUnknown)
}

// doDirect writes p alone under its caller's context, without a writer.
func (c *committer) doDirect(ctx context.Context, p *pending) error {
	c.mu.RLock()
	closed := c.closed
	c.mu.RUnlock()
	if closed {
		return fmt.Errorf("%s: the store is closed: %w", p.doing, store.ErrUnavailable)
	}
	if err := c.send(ctx, []*pending{p}); err != nil {
		return wrap(ctx, p.doing, err)
	}
	return p.w.settle()
}

func (c *committer) enqueue(ctx context.Context, p *pending) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return fmt.Errorf("%s: the store is closed: %w", p.doing, store.ErrUnavailable)
	}
	q := c.queues[0]
	if len(c.queues) > 1 {
		var h maphash.Hash
		h.SetSeed(c.seed)
		h.WriteString(p.org)
		q = c.queues[h.Sum64()%uint64(len(c.queues))]
	}
	select {
	case q <- p:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: queueing for the group commit: %w", p.doing, ctx.Err())
	}
}

// close stops taking writes, lets the writers finish every queued one, and
// waits for them.
func (c *committer) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for _, q := range c.queues {
			close(q)
		}
	}
	c.mu.Unlock()
	c.done.Wait()
}

func (c *committer) run(q chan *pending) {
	pgxutil.RunBatches(q, c.maxBatch, c.flush)
}

// flush writes one batch and answers every caller in it.
func (c *committer) flush(batch []*pending) {
	live := make([]*pending, 0, len(batch))
	for _, p := range batch {
		if p.ctx.Err() != nil {
			// The caller gave up before its write was reached: it is not
			// written, and the caller says so (see do).
			p.state.CompareAndSwap(queued, abandoned)
			continue
		}
		if p.state.CompareAndSwap(queued, taken) {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return
	}
	slices.SortStableFunc(live, func(a, b *pending) int {
		return cmp.Or(cmp.Compare(a.org, b.org), cmp.Compare(a.id, b.id))
	})

	start := time.Now()
	timedOut, err := c.sendTimed(live)
	c.metrics.Observe(context.Background(), start, len(live), err)
	switch {
	case err == nil:
		for _, p := range live {
			p.result <- p.w.settle()
		}
	case len(live) > 1 && !timedOut && perWrite(err):
		// The database rejected one of the batch's writes and rolled the
		// batch back: each write is tried alone, in the batch's order, so
		// that each gets its own outcome, within one more flush timeout
		// in all, so that a batch of writes that all fail slowly cannot
		// hold the writer for the batch size times the timeout.
		c.fallbacks.Add(1)
		giveUp := time.Now().Add(c.flushTimeout)
		for _, p := range live {
			if time.Now().After(giveUp) {
				p.result <- fmt.Errorf("%s: the database rejected the batch it was in, and retrying its writes one by one took longer than %s: %w: %v", p.doing, c.flushTimeout, store.ErrUnavailable, err)
				continue
			}
			if err := p.ctx.Err(); err != nil {
				// The caller left, told the write may commit; it did not,
				// and will not.
				p.result <- fmt.Errorf("%s: %w", p.doing, err)
				continue
			}
			if timedOut, err := c.sendTimed([]*pending{p}); err != nil {
				p.result <- c.failure(p, timedOut, err)
			} else {
				p.result <- p.w.settle()
			}
		}
	default:
		for _, p := range live {
			p.result <- c.failure(p, timedOut, err)
		}
	}
}

// sendTimed is send under a fresh flush timeout, and says whether the
// timeout fired.
func (c *committer) sendTimed(ps []*pending) (timedOut bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.flushTimeout)
	defer cancel()
	err = c.send(ctx, ps)
	return err != nil && ctx.Err() != nil, err
}

// send writes ps, ordered by organization, in one batch: one implicit
// transaction and one round trip, ending with the change feed's stamping
// (queueStamp). An error means the transaction did not commit, or (see
// failure) that whether it did is unknown.
func (c *committer) send(ctx context.Context, ps []*pending) error {
	b := &pgx.Batch{}
	for i, p := range ps {
		if i == 0 || p.org != ps[i-1].org {
			pgxutil.QueueTenant(b, p.org)
		}
		p.w.queue(b)
	}
	queueStamp(b, ps)
	if err := c.pool.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	c.flushes.Add(1)
	c.writes.Add(int64(len(ps)))
	return nil
}

// failure is p's error when the batch that carried it failed with err. A
// batch that ran out of its flush timeout is reported as unavailable, with
// an unknown outcome unless the server said it rejected the batch, and the
// driver's error (which wraps context.DeadlineExceeded) only as text: the
// caller's own deadline did not pass.
func (c *committer) failure(p *pending, timedOut bool, err error) error {
	if timedOut {
		unavailable := store.ErrOutcomeUnknown
		if rejected(err) {
			unavailable = store.ErrUnavailable
		}
		return fmt.Errorf("%s: the database did not answer within %s: %w: %v", p.doing, c.flushTimeout, unavailable, err)
	}
	// The writer's context had not ended, so the error is classified
	// as the database's alone.
	return wrap(context.Background(), p.doing, err)
}

// perWrite reports whether a batch that failed with err failed for one of
// its writes, so that retrying them one by one gives each its own outcome:
// it certainly did not commit (rejected), and the cause is a write's data
// (SQLSTATE class 22), a constraint (23), a serialization failure or a
// deadlock (40), or a parameter pgx could not encode. Other refusals — a
// statement or lock timeout, a full disk, a read-only server after a
// failover — would fail every write again, each after its own wait, and
// are reported for the whole batch.
func perWrite(err error) bool {
	if !rejected(err) {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code[:2] {
		case "22", "23", "40":
			return true
		}
		return false
	}
	return true // pgx refused to send a parameter: nothing was sent
}

// rejected reports whether a batch that failed with err certainly did not
// commit, for what it held rather than for the connection, so that its
// writes may be retried one by one: the server refused one of its
// statements, which rolled the transaction back (any SQLSTATE but those of
// a lost connection, a server going away or an unknown outcome), or pgx
// refused to send it (a parameter it could not encode; nothing was sent).
// A batch whose connection failed is not retried: its writes would only
// fail again, or, when the batch may have committed, apply twice.
func rejected(err error) bool {
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch code := pgErr.Code; {
		case code == pgerrcode.TransactionResolutionUnknown, code == pgerrcode.StatementCompletionUnknown,
			strings.HasPrefix(code, pgerrcode.ConnectionException[:2]),
			code == pgerrcode.AdminShutdown, code == pgerrcode.CrashShutdown, code == pgerrcode.CannotConnectNow,
			code == pgerrcode.IdleSessionTimeout:
			return false
		}
		return true
	}
	if _, ok := errors.AsType[pgx.ErrPreprocessingBatch](err); ok {
		return pgxutil.Classify(err) == pgxutil.ClassPermanent
	}
	return false
}

// keep is how a write's callbacks return a statement's error: to the batch
// when the batch cannot go on (the server refused the statement, which
// aborts the transaction, or the connection failed), and otherwise into
// *dst only. An error reading a result the server sent (a Scan, no row) is
// the write's alone: the transaction goes on and commits, and the batch
// must not take it for its own failure.
func keep(dst *error, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*pgconn.PgError](err); ok || pgxutil.Classify(err) != pgxutil.ClassPermanent {
		return err
	}
	if *dst == nil {
		*dst = err
	}
	return nil
}
