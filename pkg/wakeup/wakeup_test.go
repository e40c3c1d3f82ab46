package wakeup

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func woke(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Notifying never blocks: wake-ups a watcher has not taken coalesce into
// one. Other keys' watchers are not woken; NotifyAll wakes everyone.
// Stopping unsubscribes, once however often it is called, and the table is
// empty again once nobody watches.
func TestHubCoalescesScopesAndStops(t *testing.T) {
	var h Hub
	first, stopFirst := h.Subscribe("org-a")
	second, stopSecond := h.Subscribe("org-a")
	other, stopOther := h.Subscribe("org-b")
	for range 1_000 {
		h.Notify("org-a")
	}
	require.True(t, woke(first))
	require.False(t, woke(first), "a thousand changes, one wake-up")
	require.True(t, woke(second))
	require.False(t, woke(other), "another key's change")

	h.NotifyAll()
	require.True(t, woke(first))
	require.True(t, woke(other))
	require.True(t, woke(second))

	stopFirst()
	stopFirst()
	h.Notify("org-a")
	require.False(t, woke(first), "a stopped subscription is not woken")
	require.True(t, woke(second), "stopping one leaves the other")
	stopSecond()
	stopOther()
	require.True(t, h.idle(), "nobody watches: Notify is one atomic load")
}

// Notify allocates nothing, watched or not: it runs on every selection,
// every settled request and every committed activity write.
func TestHubNotifyAllocatesNothing(t *testing.T) {
	var h Hub
	require.Zero(t, testing.AllocsPerRun(100, func() { h.Notify("org-a") }))
	_, stopOther := h.Subscribe("org-b")
	defer stopOther()
	require.Zero(t, testing.AllocsPerRun(100, func() { h.Notify("org-a") }))
	_, stop := h.Subscribe("org-a")
	defer stop()
	require.Zero(t, testing.AllocsPerRun(100, func() { h.Notify("org-a") }))
}

// Subscribing and stopping race notifies safely (run with -race), and a
// subscription taken before a Notify is always woken by it.
func TestHubConcurrentSubscribers(t *testing.T) {
	var h Hub
	done := make(chan struct{})
	var notifiers sync.WaitGroup
	for range 2 {
		notifiers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
					h.Notify("org-a")
					h.NotifyAll()
				}
			}
		})
	}
	var watchers sync.WaitGroup
	for range 4 {
		watchers.Go(func() {
			for range 100 {
				ch, stop := h.Subscribe("org-a")
				<-ch
				stop()
			}
		})
	}
	watchers.Wait()
	close(done)
	notifiers.Wait()
	require.True(t, h.idle())
}

// BenchmarkHubNotify is what a notifier pays, with nobody watching, with
// watchers of another key only, and with a watcher of the key.
func BenchmarkHubNotify(b *testing.B) {
	for _, tc := range []struct {
		name  string
		watch []string
	}{
		{"unwatched", nil},
		{"other-key-watched", []string{"org-b"}},
		{"watched", []string{"org-a"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var h Hub
			for _, key := range tc.watch {
				_, stop := h.Subscribe(key)
				defer stop()
			}
			b.ReportAllocs()
			for b.Loop() {
				h.Notify("org-a")
			}
		})
	}
}
