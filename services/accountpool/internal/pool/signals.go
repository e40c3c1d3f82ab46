package pool

import "sync"

// Signals wakes goroutines waiting for something to happen to an
// organization: Wait returns a channel that the next Notify of that
// organization closes. A State uses one for Freed. The zero value is ready
// to use.
//
// Only organizations someone waits on hold an entry, and Notify removes it,
// so a Signals holds no more than one channel per waited-on organization.
type Signals struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

// Wait returns the channel the next Notify(orgID) closes.
func (s *Signals) Wait(orgID string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = map[string]chan struct{}{}
	}
	c, ok := s.ch[orgID]
	if !ok {
		c = make(chan struct{})
		s.ch[orgID] = c
	}
	return c
}

// Notify wakes every goroutine waiting on orgID. Without waiters it costs
// one map lookup.
func (s *Signals) Notify(orgID string) {
	s.mu.Lock()
	c, ok := s.ch[orgID]
	if ok {
		delete(s.ch, orgID)
	}
	s.mu.Unlock()
	if ok {
		close(c)
	}
}
