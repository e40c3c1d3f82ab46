package pool

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// MemState is the in-process State: maps behind one mutex. Its critical
// sections are a few map operations, so one lock is not the bottleneck of a
// single AccountPool process.
type MemState struct {
	mu        sync.Mutex
	breakers  map[accountKey]Breaker
	cooldowns map[quotaKey]Cooldown
	buckets   map[bucketKey]Buckets
	leases    map[string]*memLease
	due       leaseHeap
	cursors   map[string]uint64
}

type accountKey struct{ org, account string }
type quotaKey struct{ org, quota string }
type bucketKey struct {
	org, quota string
	family     Family
}

type memLease struct {
	lease  Lease
	status LeaseStatus
	due    time.Time // ExpireTime, then the time the lease is forgotten
	forget bool      // due is the forget time
}

var _ State = (*MemState)(nil)

// NewMemState returns an empty in-memory state.
func NewMemState() *MemState {
	return &MemState{
		breakers:  map[accountKey]Breaker{},
		cooldowns: map[quotaKey]Cooldown{},
		buckets:   map[bucketKey]Buckets{},
		leases:    map[string]*memLease{},
		cursors:   map[string]uint64{},
	}
}

func keys(r Ref) (accountKey, quotaKey, bucketKey) {
	return accountKey{r.OrgID, r.AccountID}, quotaKey{r.OrgID, r.QuotaKey}, bucketKey{r.OrgID, r.QuotaKey, r.Family}
}

// Snapshot implements State.
func (s *MemState) Snapshot(_ context.Context, refs []Ref) ([]Live, error) {
	out := make([]Live, len(refs))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range refs {
		ak, qk, bk := keys(r)
		out[i] = Live{Breaker: s.breakers[ak], Cooldown: s.cooldowns[qk], Buckets: s.buckets[bk]}
	}
	return out, nil
}

// Update implements State.
func (s *MemState) Update(_ context.Context, r Ref, fn func(*Live) error) error {
	ak, qk, bk := keys(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := Live{Breaker: s.breakers[ak], Cooldown: s.cooldowns[qk], Buckets: s.buckets[bk]}
	if err := fn(&l); err != nil {
		return err
	}
	setOrDelete(s.breakers, ak, l.Breaker)
	setOrDelete(s.cooldowns, qk, l.Cooldown)
	setOrDelete(s.buckets, bk, l.Buckets)
	return nil
}

func setOrDelete[K, V comparable](m map[K]V, k K, v V) {
	var zero V
	if v == zero {
		delete(m, k)
		return
	}
	m[k] = v
}

// AddLease implements State.
func (s *MemState) AddLease(_ context.Context, l Lease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &memLease{lease: l, status: LeaseOpen, due: l.ExpireTime}
	s.leases[l.ID] = e
	heap.Push(&s.due, e)
	return nil
}

// SettleLease implements State.
func (s *MemState) SettleLease(_ context.Context, orgID, accountID, leaseID string) (Lease, LeaseStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.leases[leaseID]
	if !ok || e.lease.Ref.OrgID != orgID || e.lease.Ref.AccountID != accountID {
		return Lease{}, LeaseUnknown, nil
	}
	was := e.status
	e.status = LeaseSettled
	return e.lease, was, nil
}

// ExpireLeases implements State.
func (s *MemState) ExpireLeases(_ context.Context, now time.Time) ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var expired []Lease
	for len(s.due) > 0 && !s.due[0].due.After(now) {
		e := s.due[0]
		if e.forget {
			heap.Pop(&s.due)
			delete(s.leases, e.lease.ID)
			continue
		}
		if e.status == LeaseOpen {
			e.status = LeaseExpired
			expired = append(expired, e.lease)
		}
		e.forget = true
		e.due = e.lease.ExpireTime.Add(max(e.lease.ExpireTime.Sub(e.lease.IssueTime), time.Second))
		heap.Fix(&s.due, 0)
	}
	return expired, nil
}

// NextCursor implements State.
func (s *MemState) NextCursor(_ context.Context, orgID string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cursors[orgID]
	s.cursors[orgID] = c + 1
	return c, nil
}

// leaseHeap orders leases by due time.
type leaseHeap []*memLease

func (h leaseHeap) Len() int           { return len(h) }
func (h leaseHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h leaseHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *leaseHeap) Push(x any)        { *h = append(*h, x.(*memLease)) }
func (h *leaseHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
