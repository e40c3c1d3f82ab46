package pool

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// changes tells watchers that what ListAccounts shows of an organization
// may have changed in this process. The pool calls notify on its hot path
// (every lease granted, every request settled), so notify with nobody
// watching costs one atomic load, and with watchers one map lookup and a
// non-blocking send per watcher of that organization: it never blocks,
// never allocates and never takes a lock. Subscribing is rare (a stream
// starting or ending), so it copies the whole table under a mutex and
// publishes the copy.
//
// The zero value is ready to use.
type changes struct {
	mu   sync.Mutex // serializes subscribe and unsubscribe
	subs atomic.Pointer[map[string][]chan struct{}]
}

// notify wakes every watcher of orgID. A watcher that has not taken its
// last wake-up yet keeps that one: changes coalesce until it looks.
func (c *changes) notify(orgID string) {
	m := c.subs.Load()
	if m == nil {
		return
	}
	for _, ch := range (*m)[orgID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// subscribe returns a channel that receives after each notify of orgID
// (coalesced, see notify), and the function that ends the subscription.
func (c *changes) subscribe(orgID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.update(func(m map[string][]chan struct{}) { m[orgID] = append(slices.Clone(m[orgID]), ch) })
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			c.update(func(m map[string][]chan struct{}) {
				rest := slices.DeleteFunc(slices.Clone(m[orgID]), func(x chan struct{}) bool { return x == ch })
				if len(rest) == 0 {
					delete(m, orgID)
				} else {
					m[orgID] = rest
				}
			})
		})
	}
}

// update publishes a changed copy of the table; an empty table is
// published as nil, so notify is back to one atomic load. fn must not
// write to the slices it finds in the copy (notify may be reading them),
// only replace them.
func (c *changes) update(fn func(map[string][]chan struct{})) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[string][]chan struct{}{}
	if m := c.subs.Load(); m != nil {
		next = maps.Clone(*m)
	}
	fn(next)
	if len(next) == 0 {
		c.subs.Store(nil)
		return
	}
	c.subs.Store(&next)
}

// Changes returns a channel that receives soon after anything ListAccounts
// shows of the organization may have changed through this process: a lease
// granted or expired, a request settled (capacity, a cool-down, the
// breaker), an admin change, or a reload of the organization's accounts
// after another process changed them in the store. A change made while a
// wake-up is pending is coalesced into it, and wake-ups may be spurious, so
// a watcher reads the accounts again and compares. Some changes send
// nothing: capacity refilling with time, cool-downs and breakers running
// out, and live state changed by another replica sharing it (Redis); a
// watcher also reads again periodically for those.
//
// The channel is never closed; call stop, which may be called more than
// once, when done watching.
func (p *Pool) Changes(orgID string) (changed <-chan struct{}, stop func()) {
	return p.changes.subscribe(orgID)
}
