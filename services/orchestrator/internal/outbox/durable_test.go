package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/outbox"
)

// These tests pin the durable outbox's contract: Enqueue returns once a
// record is delivered, dropped or on disk; a record delivered within the
// hold is never written; deletes are not waited for; Close and Drain
// flush the writer.

var errDisk = errors.New("disk on fire")

// gated is a target some of whose records wait, inside their delivery,
// until the test opens their gate.
type gated struct {
	*target
	mu    sync.Mutex
	gates map[string]chan struct{}
}

func newGated() *gated { return &gated{target: &target{}, gates: map[string]chan struct{}{}} }

// gate makes the delivery of records with this body wait for open.
func (g *gated) gate(body string) (open func()) {
	c := make(chan struct{})
	g.mu.Lock()
	g.gates[body] = c
	g.mu.Unlock()
	return sync.OnceFunc(func() { close(c) })
}

func (g *gated) deliver(ctx context.Context, r outbox.Record) ([]byte, error) {
	g.mu.Lock()
	c := g.gates[string(r.Body)]
	g.mu.Unlock()
	if c != nil {
		<-c
	}
	return g.target.deliver(ctx, r)
}

func openHooked(t *testing.T, cfg outbox.Config) (*outbox.Outbox, *outbox.Hook) {
	t.Helper()
	cfg.Retryable = func(err error) bool { return errors.Is(err, errDown) }
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o, h, err := outbox.OpenHooked(cfg)
	require.NoError(t, err)
	return o, h
}

// enqueueAsync runs Enqueue in the background.
func enqueueAsync(o *outbox.Outbox, r outbox.Record) <-chan outbox.Result {
	c := make(chan outbox.Result, 1)
	go func() {
		res, err := o.Enqueue(context.Background(), r)
		if err != nil {
			res = outbox.Result{Err: err}
		}
		c <- res
	}()
	return c
}

func answer(t *testing.T, c <-chan outbox.Result) outbox.Result {
	t.Helper()
	select {
	case res := <-c:
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("Enqueue did not return")
		return outbox.Result{}
	}
}

func bodies(t *testing.T, dir string) []string {
	t.Helper()
	recs, err := outbox.Stored(dir)
	require.NoError(t, err)
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Lane+":"+string(r.Body))
	}
	return out
}

func lane(got []string, name string) []string {
	var out []string
	for _, g := range got {
		if len(g) > len(name) && g[:len(name)+1] == name+":" {
			out = append(out, g)
		}
	}
	return out
}

// frozen is a clock that does not move: a target that failed stays backed
// off (the writer's hold runs on the real clock).
func frozen() func() time.Time {
	now := time.Now()
	return func() time.Time { return now }
}

func TestDurableRecordSettledWithinTheHoldIsNeverWritten(t *testing.T) {
	dir := t.TempDir()
	tg := &target{}
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Minute})
	run(t, o)
	start := time.Now()
	for i := range 20 {
		for _, l := range []string{"task-1", "task-2"} {
			res, err := o.Enqueue(context.Background(), rec(l, fmt.Sprint(i)))
			require.NoError(t, err)
			require.True(t, res.Delivered)
		}
	}
	res, err := o.Enqueue(context.Background(), rec("task-1", "refuse"))
	require.NoError(t, err)
	require.ErrorIs(t, res.Err, errRefused, "a refused record is dropped within the hold too")
	require.Less(t, time.Since(start), 30*time.Second, "Enqueue does not wait out the hold")
	require.NoError(t, o.Close())

	puts, dels := h.Writes()
	require.Zero(t, puts, "a record acknowledged within the hold is not written")
	require.Zero(t, dels, "nor deleted")
	require.Empty(t, bodies(t, dir))
	require.Len(t, lane(tg.received(), "task-1"), 20)
}

func TestDurablePendingRecordIsOnDiskWhenEnqueueReturns(t *testing.T) {
	dir := t.TempDir()
	tg := &target{}
	tg.setDown(true)
	// The hold never ends: only the failed first delivery gets the record
	// written, at once.
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Hour})
	res, err := o.Enqueue(context.Background(), rec("task-1", "a"))
	require.NoError(t, err)
	require.True(t, res.Pending())
	puts, _ := h.Writes()
	require.Equal(t, 1, puts, "a pending record is on disk when Enqueue returns")
	require.NoError(t, o.Close())
	require.Equal(t, []string{"task-1:a"}, bodies(t, dir))

	tg.setDown(false)
	second := open(t, dir, tg, 0)
	run(t, second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Zero(t, second.Drain(ctx))
	require.Equal(t, []string{"task-1:a"}, tg.received(), "the next process delivers it")
	require.NoError(t, second.Close())
	require.Empty(t, bodies(t, dir), "and forgets it")
}

func TestDurableQueuedRecordIsStoredAfterTheHold(t *testing.T) {
	dir := t.TempDir()
	tg := &target{}
	tg.setDown(true)
	const hold = 30 * time.Millisecond
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: hold, Now: frozen()})
	res, err := o.Enqueue(context.Background(), rec("task-1", "a"))
	require.NoError(t, err)
	require.True(t, res.Pending())

	for i, r := range []outbox.Record{rec("task-1", "b"), rec("task-2", "c")} { // behind its lane; behind its target
		start := time.Now()
		res, err := o.Enqueue(context.Background(), r)
		require.NoError(t, err)
		require.True(t, res.Pending())
		require.GreaterOrEqual(t, time.Since(start), hold, "a queued record is stored after the hold")
		puts, _ := h.Writes()
		require.Equal(t, i+2, puts, "and it is on disk when Enqueue returns")
	}
	tg.mu.Lock()
	attempts := tg.attempts
	tg.mu.Unlock()
	require.Equal(t, 1, attempts, "nothing but the first record was tried")
	require.NoError(t, o.Close())
	require.Equal(t, []string{"task-1:a", "task-1:b", "task-2:c"}, bodies(t, dir))
}

// storedSlowRecord opens a durable outbox whose target holds the delivery
// of one record until release, enqueues that record, and returns once the
// writer has stored it (its delivery outlasted the hold); c answers the
// Enqueue.
func storedSlowRecord(t *testing.T) (o *outbox.Outbox, h *outbox.Hook, dir string, release func(), c <-chan outbox.Result) {
	t.Helper()
	dir = t.TempDir()
	tg := newGated()
	release = tg.gate("slow")
	o, h = openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Millisecond})
	run(t, o)
	c = enqueueAsync(o, rec("task-1", "slow"))
	require.Eventually(t, func() bool { puts, _ := h.Writes(); return puts == 1 }, 5*time.Second, time.Millisecond,
		"a record whose delivery outlasts the hold is stored")
	return o, h, dir, release, c
}

func TestDurableSlowDeliveryIsStoredThenForgotten(t *testing.T) {
	o, h, dir, release, c := storedSlowRecord(t)
	release()
	require.True(t, answer(t, c).Delivered)
	require.Eventually(t, func() bool { _, dels := h.Writes(); return dels == 1 }, 5*time.Second, time.Millisecond,
		"and forgotten once delivered")
	require.NoError(t, o.Close())
	require.Empty(t, bodies(t, dir))
}

func TestDurableWriterNeverBlocksADeliveredEnqueue(t *testing.T) {
	dir := t.TempDir()
	tg := newGated()
	release := tg.gate("slow")
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Millisecond})
	run(t, o)

	// 1. The writer is stuck writing a record whose delivery is slow.
	h.Block()
	slow := enqueueAsync(o, rec("task-1", "slow"))
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	res, err := o.Enqueue(context.Background(), rec("task-2", "quick"))
	require.NoError(t, err)
	require.True(t, res.Delivered, "a delivered record does not wait for the writer")
	release()
	require.True(t, answer(t, slow).Delivered, "nor does one delivered while it is being written")
	h.Unblock()
	require.Eventually(t, func() bool { puts, dels := h.Writes(); return puts == 1 && dels == 1 }, 5*time.Second, time.Millisecond,
		"delivered while written: forgotten after the write")

	// 2. The writer is stuck writing a delete.
	release = tg.gate("slow-2")
	slow = enqueueAsync(o, rec("task-1", "slow-2"))
	require.Eventually(t, func() bool { puts, _ := h.Writes(); return puts == 2 }, 5*time.Second, time.Millisecond)
	h.Block()
	release()
	require.True(t, answer(t, slow).Delivered, "a delete is not waited for")
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	for i := range 5 {
		for _, l := range []string{"task-1", "task-3"} {
			res, err := o.Enqueue(context.Background(), rec(l, fmt.Sprint(i)))
			require.NoError(t, err)
			require.True(t, res.Delivered)
		}
	}
	require.Equal(t, 1, h.Waiting())
	_, dels := h.Writes()
	require.Equal(t, 1, dels, "the delete is still held up")

	closed := make(chan error, 1)
	go func() { closed <- o.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned before the writer was done")
	case <-time.After(50 * time.Millisecond):
	}
	h.Unblock()
	require.NoError(t, <-closed)
	puts, dels := h.Writes()
	require.Equal(t, 2, puts)
	require.Equal(t, 2, dels)
	require.Empty(t, bodies(t, dir))
	require.Equal(t, []string{"task-1:slow", "task-1:slow-2", "task-1:0", "task-1:1", "task-1:2", "task-1:3", "task-1:4"},
		lane(tg.received(), "task-1"))
}

func TestDurableCloseFlushesQueuedDeletes(t *testing.T) {
	dir := t.TempDir()
	tg := newGated()
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Millisecond})
	run(t, o)
	var releases []func()
	var answers []<-chan outbox.Result
	for i := range 3 {
		body := fmt.Sprint("slow-", i)
		releases = append(releases, tg.gate(body))
		answers = append(answers, enqueueAsync(o, rec(fmt.Sprint("task-", i), body)))
	}
	require.Eventually(t, func() bool { puts, _ := h.Writes(); return puts == 3 }, 5*time.Second, time.Millisecond)
	h.Block()
	releases[0]()
	require.True(t, answer(t, answers[0]).Delivered)
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i < 3; i++ {
		releases[i]()
		require.True(t, answer(t, answers[i]).Delivered) // its delete is queued behind the stuck write
	}
	closed := make(chan error, 1)
	go func() { closed <- o.Close() }()
	h.Unblock()
	require.NoError(t, <-closed)
	_, dels := h.Writes()
	require.Equal(t, 3, dels, "Close writes the queued deletes")
	require.Empty(t, bodies(t, dir))
}

func TestDurableDrainFlushesTheWriter(t *testing.T) {
	o, h, _, release, c := storedSlowRecord(t)
	release()
	require.True(t, answer(t, c).Delivered)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Zero(t, o.Drain(ctx))
	_, dels := h.Writes()
	require.Equal(t, 1, dels, "the delete is written when Drain returns")
	require.NoError(t, o.Close())
}

func TestDurableLaneOrderHoldsThroughItAll(t *testing.T) {
	dir := t.TempDir()
	tg := newGated()
	first, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Millisecond})
	stop := run(t, first)
	enqueue := func(o *outbox.Outbox, body string) outbox.Result {
		t.Helper()
		res, err := o.Enqueue(context.Background(), rec("task-1", body))
		require.NoError(t, err)
		return res
	}
	// Delivered at once, never written.
	require.True(t, enqueue(first, "0").Delivered)
	require.True(t, enqueue(first, "1").Delivered)
	// A slow delivery, stored meanwhile, with one queued behind it.
	release := tg.gate("2")
	slow := enqueueAsync(first, rec("task-1", "2"))
	require.Eventually(t, func() bool { puts, _ := h.Writes(); return puts == 1 }, 5*time.Second, time.Millisecond)
	require.True(t, enqueue(first, "3").Pending(), "queued behind a delivery in progress")
	release()
	require.True(t, answer(t, slow).Delivered)
	// An outage: pending, on disk.
	tg.setDown(true)
	for _, b := range []string{"4", "5"} {
		res := enqueue(first, b)
		require.True(t, res.Pending() || res.Delivered) // "4" may be behind "3", still in flight
	}
	stop()
	require.NoError(t, first.Close())
	left := bodies(t, dir)
	require.Equal(t, []string{"task-1:4", "task-1:5"}, left[len(left)-2:], "what is left is on disk, in order")

	// The next process delivers what was left before what comes after.
	tg.setDown(false)
	second := open(t, dir, tg.target, 0)
	res := enqueue(second, "6")
	require.True(t, res.Pending(), "queued behind the records left")
	run(t, second)
	res = enqueue(second, "7")
	require.True(t, res.Pending() || res.Delivered)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Zero(t, second.Drain(ctx))
	require.NoError(t, second.Close())
	require.Equal(t, []string{"task-1:0", "task-1:1", "task-1:2", "task-1:3", "task-1:4", "task-1:5", "task-1:6", "task-1:7"},
		lane(tg.received(), "task-1"), "one lane, in order, each once")
	require.Empty(t, bodies(t, dir))
}

func TestDurableRecordThatCannotBeStoredIsWithdrawn(t *testing.T) {
	dir := t.TempDir()
	tg := newGated()
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: 20 * time.Millisecond})
	h.Fail(errDisk)

	res, err := o.Enqueue(context.Background(), rec("task-1", "a"))
	require.NoError(t, err)
	require.True(t, res.Delivered, "a record delivered within the hold needs no disk")

	// Its write fails while its first delivery runs, which then fails.
	release := tg.gate("b")
	c := enqueueAsync(o, rec("task-2", "b"))
	time.Sleep(50 * time.Millisecond) // past the hold: the write was tried and failed
	tg.setDown(true)
	release()
	require.ErrorIs(t, answer(t, c).Err, errDisk)

	// Its write fails after its first delivery failed.
	_, err = o.Enqueue(context.Background(), rec("task-3", "c"))
	require.ErrorIs(t, err, errDisk, "a record that could not be stored is not reported pending")
	depth, _, _ := o.Stats()
	require.Zero(t, depth, "nor kept")

	h.Fail(nil)
	res, err = o.Enqueue(context.Background(), rec("task-3", "d"))
	require.NoError(t, err)
	require.True(t, res.Pending())
	require.NoError(t, o.Close())
	require.Equal(t, []string{"task-3:d"}, bodies(t, dir))
}

func TestDurableFailedDeleteIsRetriedWithTheNextWrite(t *testing.T) {
	o, h, dir, release, c := storedSlowRecord(t)
	h.Fail(errDisk) // the delete of the delivered record fails once
	release()
	require.True(t, answer(t, c).Delivered)
	require.Eventually(t, func() bool { return h.Failed() == 1 }, 5*time.Second, time.Millisecond, "the delete was tried and failed")
	h.Fail(nil)
	_, dels := h.Writes()
	require.Zero(t, dels)
	require.NoError(t, o.Close(), "Close writes the delete that failed")
	_, dels = h.Writes()
	require.Equal(t, 1, dels)
	require.Empty(t, bodies(t, dir), "a clean stop leaves no delivered record to deliver again")
}

func TestDurableCloseGivesUpOnAStuckWriter(t *testing.T) {
	dir := t.TempDir()
	tg := newGated()
	release := tg.gate("slow")
	o, h := openHooked(t, outbox.Config{Dir: dir, Deliver: tg.deliver, PersistDelay: time.Millisecond})
	outbox.SetCloseTimeout(o, 50*time.Millisecond)
	run(t, o)
	h.Block() // the disk stops answering
	c := enqueueAsync(o, rec("task-1", "slow"))
	require.Eventually(t, func() bool { return h.Waiting() == 1 }, 5*time.Second, time.Millisecond, "the writer is stuck storing the record")
	err := o.Close()
	require.ErrorContains(t, err, "did not finish", "Close returns instead of waiting on a stuck disk")
	h.Unblock()
	release()
	<-c
}
