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

var errDown = errors.New("unavailable")
var errRefused = errors.New("invalid argument")

// target is a fake service: it records what it was sent and can be down.
type target struct {
	mu       sync.Mutex
	down     bool
	got      []string
	attempts int
}

func (t *target) deliver(_ context.Context, r outbox.Record) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.attempts++
	if t.down {
		return nil, errDown
	}
	if string(r.Body) == "refuse" {
		return nil, errRefused
	}
	t.got = append(t.got, r.Lane+":"+string(r.Body))
	return []byte("ack " + string(r.Body)), nil
}

func (t *target) setDown(down bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.down = down
}

func (t *target) received() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.got...)
}

func open(t *testing.T, dir string, tg *target, max int) *outbox.Outbox {
	t.Helper()
	o, err := outbox.Open(outbox.Config{
		Dir: dir, MaxRecords: max, Deliver: tg.deliver,
		Retryable: func(err error) bool { return errors.Is(err, errDown) },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	return o
}

func run(t *testing.T, o *outbox.Outbox) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func rec(lane, body string) outbox.Record {
	return outbox.Record{Lane: lane, Target: "pool", Method: "/svc/M", Body: []byte(body)}
}

func TestDeliversAtOnceWhenTheTargetIsUp(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		tg := &target{}
		o := open(t, dir, tg, 0)
		run(t, o)
		res, err := o.Enqueue(context.Background(), rec("task-1", "a"))
		require.NoError(t, err)
		require.True(t, res.Delivered)
		require.Equal(t, "ack a", string(res.Response))
		depth, _, _ := o.Stats()
		require.Zero(t, depth)
		require.NoError(t, o.Close())
	}
}

func TestPendingRecordsAreDeliveredInOrderAfterAnOutage(t *testing.T) {
	tg := &target{}
	tg.setDown(true)
	o := open(t, "", tg, 0)
	run(t, o)
	for i := range 5 {
		for _, lane := range []string{"task-1", "task-2"} {
			res, err := o.Enqueue(context.Background(), rec(lane, fmt.Sprint(i)))
			require.NoError(t, err)
			require.True(t, res.Pending())
		}
	}
	depth, oldest, _ := o.Stats()
	require.Equal(t, 10, depth)
	require.False(t, oldest.IsZero())

	time.Sleep(300 * time.Millisecond) // an outage: the target is probed, not flooded
	tg.mu.Lock()
	probes := tg.attempts
	tg.mu.Unlock()
	require.Less(t, probes, 10, "one probe per backoff interval, not one call per record")

	tg.setDown(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Zero(t, o.Drain(ctx))
	got := tg.received()
	require.Len(t, got, 10)
	var one, two []string
	for _, g := range got {
		if g[:6] == "task-1" {
			one = append(one, g)
		} else {
			two = append(two, g)
		}
	}
	require.Equal(t, []string{"task-1:0", "task-1:1", "task-1:2", "task-1:3", "task-1:4"}, one, "a lane is delivered in order")
	require.Equal(t, []string{"task-2:0", "task-2:1", "task-2:2", "task-2:3", "task-2:4"}, two)
	require.ErrorIs(t, o.Admit(), outbox.ErrClosed, "a drained outbox takes no new tasks")
}

func TestARefusedRecordIsDroppedNotRetried(t *testing.T) {
	tg := &target{}
	o := open(t, "", tg, 0)
	run(t, o)
	res, err := o.Enqueue(context.Background(), rec("task-1", "refuse"))
	require.NoError(t, err)
	require.ErrorIs(t, res.Err, errRefused)
	res, err = o.Enqueue(context.Background(), rec("task-1", "next"))
	require.NoError(t, err)
	require.True(t, res.Delivered, "the lane is not blocked by the refused record")
	depth, _, dropped := o.Stats()
	require.Zero(t, depth)
	require.Equal(t, 1, dropped)
}

func TestAdmitIsBounded(t *testing.T) {
	tg := &target{}
	tg.setDown(true)
	o := open(t, "", tg, 3)
	for i := range 3 {
		require.NoError(t, o.Admit())
		_, err := o.Enqueue(context.Background(), rec(fmt.Sprint("task-", i), "x"))
		require.NoError(t, err)
	}
	require.ErrorIs(t, o.Admit(), outbox.ErrFull)
}

func TestDurableRecordsSurviveTheProcess(t *testing.T) {
	dir := t.TempDir()
	tg := &target{}
	tg.setDown(true)
	first := open(t, dir, tg, 0)
	for i := range 3 {
		res, err := first.Enqueue(context.Background(), rec("task-1", fmt.Sprint(i)))
		require.NoError(t, err)
		require.True(t, res.Pending())
	}
	// The process dies here: no drain; the file is all that is left.
	require.NoError(t, first.Close())

	tg.setDown(false)
	second := open(t, dir, tg, 0)
	depth, _, _ := second.Stats()
	require.Equal(t, 3, depth, "the next process finds what was pending")
	run(t, second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Zero(t, second.Drain(ctx))
	require.Equal(t, []string{"task-1:0", "task-1:1", "task-1:2"}, tg.received())
	require.NoError(t, second.Close())

	third := open(t, dir, tg, 0)
	depth, _, _ = third.Stats()
	require.Zero(t, depth, "delivered records are forgotten")
	require.NoError(t, third.Close())
}

func TestASecondProcessCannotShareTheDirectory(t *testing.T) {
	dir := t.TempDir()
	first := open(t, dir, &target{}, 0)
	defer first.Close()
	_, err := outbox.Open(outbox.Config{Dir: dir, Deliver: (&target{}).deliver, Retryable: func(error) bool { return true }})
	require.ErrorContains(t, err, "another orchestrator")
}
