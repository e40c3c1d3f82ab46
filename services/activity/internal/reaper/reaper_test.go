package reaper

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// flakyStore fails sweeps while failing is set.
type flakyStore struct {
	store.Store
	failing atomic.Bool
}

func (f *flakyStore) AbandonExpired(ctx context.Context, now time.Time, grace time.Duration, limit int) (int, error) {
	if f.failing.Load() {
		return 0, errors.New("database on fire")
	}
	return f.Store.AbandonExpired(ctx, now, grace, limit)
}

type fixture struct {
	tracker *tracker.Tracker
	clock   *fakeclock.Clock
	store   *flakyStore
	logs    *bytes.Buffer
	reaper  *Reaper
}

func newFixture() *fixture {
	f := &fixture{clock: fakeclock.New(t0), store: &flakyStore{Store: memstore.New()}, logs: &bytes.Buffer{}}
	f.tracker = tracker.New(f.store, tracker.Config{Now: f.clock.Now})
	f.reaper = New(f.tracker, 30*time.Second, 10*time.Second, slog.New(slog.NewTextHandler(f.logs, nil)))
	return f
}

// expired starts an activity whose deadline and grace passed long ago.
func (f *fixture) expired(t *testing.T) string {
	t.Helper()
	a, _, err := f.tracker.Start(context.Background(), tracker.StartInput{OrganizationID: "org", Deadline: f.clock.Now().Add(-time.Hour)})
	require.NoError(t, err)
	return a.ID
}

func (f *fixture) status(t *testing.T, id string) store.Status {
	t.Helper()
	a, _, err := f.tracker.Get(context.Background(), "org", id)
	require.NoError(t, err)
	return a.Status
}

func TestSweepDrainsEveryBatch(t *testing.T) {
	f := newFixture()
	f.reaper.batch = 2
	var ids []string
	for range 5 {
		ids = append(ids, f.expired(t))
	}
	n, err := f.reaper.Sweep(context.Background())
	require.NoError(t, err)
	require.Equal(t, 5, n, "batches of 2, 2 and 1")
	for _, id := range ids {
		require.Equal(t, store.StatusAbandoned, f.status(t, id))
	}
	n, err = f.reaper.Sweep(context.Background())
	require.NoError(t, err)
	require.Zero(t, n)
}

// run is driven by an unbuffered tick channel: a send returns once the
// loop is waiting for it, that is once the sweep before it has finished.
func TestRunSweepsAtOnceAndAtEveryTick(t *testing.T) {
	f := newFixture()
	first := f.expired(t)
	ctx, cancel := context.WithCancel(context.Background())
	ticks := make(chan time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.reaper.run(ctx, ticks)
	}()

	// After each send one sweep may be in flight; a state set before a
	// send holds for every sweep after the next one.
	ticks <- t0
	require.Equal(t, store.StatusAbandoned, f.status(t, first), "swept at start")
	f.store.failing.Store(true)
	ticks <- t0
	second := f.expired(t)
	ticks <- t0
	require.Equal(t, store.StatusRunning, f.status(t, second), "the failed sweep changed nothing")
	f.store.failing.Store(false)
	ticks <- t0
	ticks <- t0
	require.Equal(t, store.StatusAbandoned, f.status(t, second), "the next tick after a failure sweeps again")
	cancel()
	<-done

	require.Contains(t, f.logs.String(), "abandoning expired activities failed")
	require.Contains(t, f.logs.String(), "database on fire")
	require.Contains(t, f.logs.String(), "abandoned activities still running past their deadline plus grace")
	require.Contains(t, f.logs.String(), "count=1")
}

func TestRunStopsWithItsContext(t *testing.T) {
	f := newFixture()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.reaper.Run(ctx)
	require.NotContains(t, f.logs.String(), "failed", "a sweep cut short by shutdown is no failure")
}
