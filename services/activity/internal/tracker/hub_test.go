package tracker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func pending(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestHubWakesTheOrganizationsWatchesOnceWithoutBlocking(t *testing.T) {
	h := newHub()
	a1, stopA1 := h.subscribe("a")
	a2, stopA2 := h.subscribe("a")
	b, stopB := h.subscribe("b")
	defer stopB()

	for range 3 {
		h.notify("a") // a full slot does not block the writer
	}
	require.True(t, pending(a1))
	require.False(t, pending(a1), "wake-ups coalesce into one")
	require.True(t, pending(a2))
	require.False(t, pending(b), "another organization's write")

	stopA1()
	h.notify("a")
	require.False(t, pending(a1), "unsubscribed")
	require.True(t, pending(a2))

	h.notifyAll()
	require.True(t, pending(a2))
	require.True(t, pending(b))

	stopA2()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NotContains(t, h.watches, "a", "an organization without watches is forgotten")
}
