package anthropicsim

import (
	"container/list"
	"crypto/sha256"
	"slices"
	"time"
)

// DefaultMaxKeys is Config.MaxKeys when it is not set.
const DefaultMaxKeys = 10_000

// maxCacheEntries bounds one key's prompt cache: the prefixes it keeps at
// once. Beyond it the entries that expire soonest go first. The real API
// allows 4 breakpoints a request, so a test that reuses a handful of system
// prompts never meets the bound.
const maxCacheEntries = 64

// The per-key state a Server keeps is bounded so that a caller sending ever
// new keys cannot grow it without end:
//
//   - keys (buckets, stats, usage, prompt cache) holds at most maxKeys
//     entries. Making room evicts the least recently used key that has no
//     request in flight, preferring keys without a scripted fault or a tier
//     assignment (the ones a test set up on purpose) to those with one. Only
//     when every tracked key has a request in flight does the table grow
//     past maxKeys, by at most the requests in flight.
//   - faults set over HTTP (POST /sim/faults) are refused beyond maxKeys
//     keys. SetFault and SetKeyTier, called in-process, are not limited.
//
// Eviction forgets a key's counters and refills its buckets the next time
// it is seen; its scripted fault and tier assignment, which live in
// s.faults and s.tierOf, are never evicted.
//
// The two recency lists hold *keyState, most recently used first: plain for
// keys without a fault or tier assignment, scripted for those with one.

// state returns apiKey's state, creating it on first use, and marks it the
// most recently used. s.mu must be held.
func (s *Server) state(apiKey string, now time.Time) *keyState {
	if st, ok := s.keys[apiKey]; ok {
		st.list.MoveToFront(st.elem)
		return st
	}
	if len(s.keys) >= s.maxKeys {
		s.evictOne()
	}
	st := &keyState{key: apiKey, cache: make(map[[sha256.Size]byte]time.Time)}
	st.setTier(s.tierFor(apiKey), s.tiers, now)
	st.list = s.listFor(apiKey)
	st.elem = st.list.PushFront(st)
	s.keys[apiKey] = st
	return st
}

// acquire is state for a request that is about to use the key: until
// release, the state is not evicted, so the request's counts land in it.
// s.mu must be held.
func (s *Server) acquire(apiKey string, now time.Time) *keyState {
	st := s.state(apiKey, now)
	st.inflight++
	return st
}

// release ends what acquire began. It takes s.mu.
func (s *Server) release(st *keyState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.inflight--
}

// evictOne forgets the least recently used idle key, plain keys first; it
// reports false when every key has a request in flight. s.mu must be held.
func (s *Server) evictOne() bool {
	for _, l := range []*list.List{s.plain, s.scripted} {
		for e := l.Back(); e != nil; e = e.Prev() {
			st := e.Value.(*keyState)
			if st.inflight > 0 {
				continue
			}
			l.Remove(e)
			delete(s.keys, st.key)
			return true
		}
	}
	return false
}

// listFor is the recency list apiKey belongs in. s.mu must be held.
func (s *Server) listFor(apiKey string) *list.List {
	_, faulted := s.faults[apiKey]
	_, tiered := s.tierOf[apiKey]
	if faulted || tiered {
		return s.scripted
	}
	return s.plain
}

// relist moves a tracked key to the list it now belongs in, after its fault
// or tier assignment changed. s.mu must be held.
func (s *Server) relist(apiKey string) {
	st, ok := s.keys[apiKey]
	if !ok {
		return
	}
	if l := s.listFor(apiKey); l != st.list {
		st.list.Remove(st.elem)
		st.list = l
		st.elem = l.PushFront(st)
	}
}

// trimCache drops the entries that expire soonest until at most
// maxCacheEntries remain.
func (st *keyState) trimCache() {
	n := len(st.cache) - maxCacheEntries
	if n <= 0 {
		return
	}
	type entry struct {
		hash [sha256.Size]byte
		exp  time.Time
	}
	all := make([]entry, 0, len(st.cache))
	for h, exp := range st.cache {
		all = append(all, entry{h, exp})
	}
	slices.SortFunc(all, func(a, b entry) int { return a.exp.Compare(b.exp) })
	for _, e := range all[:n] {
		delete(st.cache, e.hash)
	}
}
