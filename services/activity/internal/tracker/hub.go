package tracker

import "sync"

// hub wakes the watches of an organization after a write of it has
// committed, so they read the store at once instead of at their next
// poll. A wake-up carries nothing: the store is the only source of what a
// watch sends, so a wake-up that is lost or merged with another costs
// latency, never a change.
//
// Each watch has a channel of one slot. notify never blocks: when the slot
// is full the watch has a wake-up pending already, which its next read
// serves too. A slow client therefore never holds up a writer.
type hub struct {
	mu      sync.Mutex
	watches map[string]map[chan struct{}]struct{}
}

func newHub() *hub {
	return &hub{watches: make(map[string]map[chan struct{}]struct{})}
}

// subscribe registers a watch of org. It returns the channel that
// receives its wake-ups and the function that unregisters it.
func (h *hub) subscribe(org string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watches[org] == nil {
		h.watches[org] = make(map[chan struct{}]struct{})
	}
	h.watches[org][ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.watches[org], ch)
		if len(h.watches[org]) == 0 {
			delete(h.watches, org)
		}
	}
}

// notify wakes every watch of org.
func (h *hub) notify(org string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.watches[org] {
		wake(ch)
	}
}

// notifyAll wakes every watch, for a write that spans organizations (the
// reaper's) and does not say which.
func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, watches := range h.watches {
		for ch := range watches {
			wake(ch)
		}
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
