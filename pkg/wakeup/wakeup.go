// Package wakeup tells watchers that something they watch may have
// changed: the AccountPool's account watches after a lease, a settled
// request or an admin change, the Activity service's activity watches after
// a committed write. A wake-up carries nothing; the watcher reads the
// current state itself, so a wake-up that is merged with another costs
// nothing but a read, and a spurious one only a read.
package wakeup

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Hub wakes the watchers of a key (an organization id). Notify runs on
// hot paths (every lease granted, every write committed), so with nobody
// watching it costs one atomic load, and with watchers one map lookup and
// a non-blocking send per watcher of that key: it never blocks, never
// allocates and never takes a lock, so a slow watcher never holds up the
// notifier. Subscribing is rare (a stream starting or ending): it copies
// the whole table under a mutex and publishes the copy.
//
// The zero value is ready to use. A Hub must not be copied after first use.
type Hub struct {
	mu   sync.Mutex // serializes Subscribe and its stop
	subs atomic.Pointer[map[string][]chan struct{}]
}

// Notify wakes every watcher of key. A watcher that has not taken its
// last wake-up yet keeps that one: wake-ups coalesce until it looks.
func (h *Hub) Notify(key string) {
	m := h.subs.Load()
	if m == nil {
		return
	}
	for _, ch := range (*m)[key] {
		wake(ch)
	}
}

// NotifyAll wakes every watcher, for a change that spans keys and does not
// say which (the Activity reaper's sweep).
func (h *Hub) NotifyAll() {
	m := h.subs.Load()
	if m == nil {
		return
	}
	for _, chs := range *m {
		for _, ch := range chs {
			wake(ch)
		}
	}
}

// Subscribe returns a channel that receives after each Notify of key
// (coalesced, see Notify) and each NotifyAll, and the function that ends
// the subscription, which may be called more than once. The channel is
// never closed.
func (h *Hub) Subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.update(func(m map[string][]chan struct{}) { m[key] = append(slices.Clone(m[key]), ch) })
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.update(func(m map[string][]chan struct{}) {
				rest := slices.DeleteFunc(slices.Clone(m[key]), func(x chan struct{}) bool { return x == ch })
				if len(rest) == 0 {
					delete(m, key)
				} else {
					m[key] = rest
				}
			})
		})
	}
}

// idle reports whether nobody watches, so Notify is one atomic load.
func (h *Hub) idle() bool { return h.subs.Load() == nil }

// update publishes a changed copy of the table; an empty table is
// published as nil. fn must not write to the slices it finds in the copy
// (Notify may be reading them), only replace them.
func (h *Hub) update(fn func(map[string][]chan struct{})) {
	h.mu.Lock()
	defer h.mu.Unlock()
	next := map[string][]chan struct{}{}
	if m := h.subs.Load(); m != nil {
		next = maps.Clone(*m)
	}
	fn(next)
	if len(next) == 0 {
		h.subs.Store(nil)
		return
	}
	h.subs.Store(&next)
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
