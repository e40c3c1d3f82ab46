package pool

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// MemState is the in-process State: maps behind one mutex per
// organization, so selections of different organizations never wait for
// each other, plus one mutex for the expiry queues. Its critical sections
// are map operations and the pool's pure policy functions, so these locks
// are not the bottleneck of a single AccountPool process.
type MemState struct {
	mu   sync.Mutex // guards orgs (the map, not the entries)
	orgs map[string]*memOrg
	// zero backs the Records of refs never written; Read's callers only
	// read it, nothing writes it.
	zero Live

	freed Signals

	queueMu sync.Mutex
	// expiring holds the leases not yet past their ExpireTime, forgetting
	// the ones past it, until they are forgotten; each by due time.
	expiring, forgetting leaseQueue
}

// memOrg is one organization's live records and leases. Records are
// pointers, stable for as long as they exist, so a memRefSet can remember
// where they are; gen counts the records added and removed, which is what
// invalidates that memory.
type memOrg struct {
	mu       sync.Mutex
	breakers map[string]*Breaker  // by account id
	quotas   map[string]*memQuota // by quota key
	leases   map[string]*memLease // by lease id
	gen      uint64
	cursor   uint64
	// scratch is the Live that Update hands to fn. fn is opaque, so a local
	// Live would escape to the heap on every call; under mu one suffices.
	scratch Live
	pins    map[string]*list.Element // by session id; values are *memPin
	lru     list.List                // pins, most recently used first
}

// memQuota is what one quota key holds: its cool-down and a set of buckets
// per model family.
type memQuota struct {
	cooldown Cooldown
	buckets  [numFamilies]Buckets
}

func (q *memQuota) zero() bool {
	if q.cooldown != (Cooldown{}) {
		return false
	}
	for _, b := range q.buckets {
		if b != (Buckets{}) {
			return false
		}
	}
	return true
}

// memRefSet is a RefSet prepared by a MemState. Selection reads every
// account of an organization on every call; with valid hints that read
// hashes nothing.
type memRefSet struct {
	state *MemState
	refs  []Ref
	// hints[i] is where refs[i]'s records were when its organization's
	// records were at generation gen. They are read and written only under
	// the organization's lock, and go stale as soon as a record of the
	// organization is added or removed.
	hints []refHint
}

func (rs *memRefSet) Refs() []Ref { return rs.refs }

type refHint struct {
	org     *memOrg
	gen     uint64
	breaker *Breaker
	quota   *memQuota
}

// lookup returns the records of r, through h when it is valid and updating
// it when it is not (h may be nil). o.mu must be held.
func (o *memOrg) lookup(r *Ref, h *refHint) (*Breaker, *memQuota) {
	if h != nil && h.org == o && h.gen == o.gen {
		return h.breaker, h.quota
	}
	b, q := o.breakers[r.AccountID], o.quotas[r.QuotaKey]
	if h != nil {
		*h = refHint{org: o, gen: o.gen, breaker: b, quota: q}
	}
	return b, q
}

type memPin struct {
	session, account string
	used             time.Time
}

// memLease is one lease and where it is in its life; status is guarded by
// its organization's lock.
type memLease struct {
	org    *memOrg
	lease  Lease
	status LeaseStatus
}

var _ State = (*MemState)(nil)

// NewMemState returns an empty in-memory state.
func NewMemState() *MemState {
	return &MemState{orgs: map[string]*memOrg{}}
}

// org returns the organization's records, creating them when create is set;
// nil when they do not exist and create is not set.
func (s *MemState) org(orgID string, create bool) *memOrg {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.orgs[orgID]
	if o == nil && create {
		o = &memOrg{breakers: map[string]*Breaker{}, quotas: map[string]*memQuota{}, leases: map[string]*memLease{}, pins: map[string]*list.Element{}}
		s.orgs[orgID] = o
	}
	return o
}

// Prepare implements State.
func (s *MemState) Prepare(refs []Ref) RefSet {
	return &memRefSet{state: s, refs: refs, hints: make([]refHint, len(refs))}
}

// Read implements State.
func (s *MemState) Read(_ context.Context, set RefSet, fn func(int, Records)) error {
	refs := set.Refs()
	if len(refs) == 0 {
		return nil
	}
	var hints []refHint
	if rs, ok := set.(*memRefSet); ok && rs.state == s {
		hints = rs.hints
	}
	// An organization never written has only zero records: reading it
	// creates nothing.
	o := s.org(refs[0].OrgID, false)
	if o == nil {
		for i := range refs {
			fn(i, s.zero.Records())
		}
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range refs {
		r := &refs[i]
		var h *refHint
		if hints != nil {
			h = &hints[i]
		}
		rec := s.zero.Records()
		b, q := o.lookup(r, h)
		if b != nil {
			rec.Breaker = b
		}
		if q != nil {
			rec.Cooldown, rec.Buckets = &q.cooldown, &q.buckets[r.Family.index()]
		}
		fn(i, rec)
	}
	return nil
}

// Update implements State.
func (s *MemState) Update(_ context.Context, r Ref, fn func(*Live) error) error {
	o := s.org(r.OrgID, true)
	o.mu.Lock()
	err := o.update(&r, fn)
	o.mu.Unlock()
	if err == nil {
		s.freed.Notify(r.OrgID)
	}
	return err
}

// update runs fn on r's records and keeps its changes when it returns nil.
// o.mu must be held.
func (o *memOrg) update(r *Ref, fn func(*Live) error) error {
	l, b, q := o.load(r)
	if err := fn(l); err != nil {
		return err
	}
	o.store(r, l, b, q)
	return nil
}

// load copies r's records into o.scratch, returning it and where the
// records are (nil when never written). o.mu must be held.
func (o *memOrg) load(r *Ref) (*Live, *Breaker, *memQuota) {
	b, q := o.lookup(r, nil)
	l := &o.scratch
	*l = Live{}
	if b != nil {
		l.Breaker = *b
	}
	if q != nil {
		l.Cooldown, l.Buckets = q.cooldown, q.buckets[r.Family.index()]
	}
	return l, b, q
}

// store writes l back as r's records, b and q being what load found; zero
// records are dropped. o.mu must be held.
func (o *memOrg) store(r *Ref, l *Live, b *Breaker, q *memQuota) {
	switch {
	case l.Breaker != (Breaker{}) && b != nil:
		*b = l.Breaker
	case l.Breaker != (Breaker{}):
		b = new(Breaker)
		*b = l.Breaker
		o.breakers[r.AccountID] = b
		o.gen++
	case b != nil:
		delete(o.breakers, r.AccountID)
		o.gen++
	}
	if q == nil {
		if l.Cooldown == (Cooldown{}) && l.Buckets == (Buckets{}) {
			return
		}
		q = &memQuota{}
		o.quotas[r.QuotaKey] = q
		o.gen++
	}
	q.cooldown, q.buckets[r.Family.index()] = l.Cooldown, l.Buckets
	if l.Cooldown == (Cooldown{}) && l.Buckets == (Buckets{}) && q.zero() {
		delete(o.quotas, r.QuotaKey)
		o.gen++
	}
}

// Reserve implements State.
func (s *MemState) Reserve(_ context.Context, l *Lease, fn func(*Live) error) error {
	o := s.org(l.Ref.OrgID, true)
	o.mu.Lock()
	live, b, q := o.load(&l.Ref)
	if err := fn(live); err != nil {
		o.mu.Unlock()
		return err
	}
	o.store(&l.Ref, live, b, q)
	e := &memLease{org: o, lease: *l, status: LeaseOpen}
	o.leases[l.ID] = e
	o.mu.Unlock()
	s.queueMu.Lock()
	s.expiring.push(leaseDue{due: l.ExpireTime.UnixNano(), lease: e})
	s.queueMu.Unlock()
	return nil
}

// Settle implements State.
func (s *MemState) Settle(_ context.Context, orgID, accountID, leaseID string, fallback Ref, fn func(Lease, LeaseStatus, *Live) error) error {
	o := s.org(orgID, true)
	o.mu.Lock()
	e, ok := o.leases[leaseID]
	if !ok || e.lease.Ref.AccountID != accountID {
		l, b, q := o.load(&fallback)
		err := fn(Lease{}, LeaseUnknown, l)
		if err == nil {
			o.store(&fallback, l, b, q)
		}
		o.mu.Unlock()
		if err == nil {
			s.freed.Notify(orgID)
		}
		return err
	}
	was := e.status
	l, b, q := o.load(&e.lease.Ref)
	err := fn(e.lease, was, l)
	if err == nil {
		o.store(&e.lease.Ref, l, b, q)
		e.status = LeaseSettled
	}
	o.mu.Unlock()
	if err == nil && was != LeaseSettled {
		s.freed.Notify(orgID)
	}
	return err
}

// ExpireLeases implements State.
func (s *MemState) ExpireLeases(_ context.Context, now time.Time, release func(Lease, *Live)) ([]Lease, error) {
	ns := now.UnixNano()
	var due, forget []*memLease
	s.queueMu.Lock()
	for d, ok := s.expiring.peek(); ok && d.due <= ns; d, ok = s.expiring.peek() {
		s.expiring.pop()
		due = append(due, d.lease)
		l := d.lease.lease
		at := l.ExpireTime.Add(max(l.ExpireTime.Sub(l.IssueTime), time.Second))
		s.forgetting.push(leaseDue{due: at.UnixNano(), lease: d.lease})
	}
	for d, ok := s.forgetting.peek(); ok && d.due <= ns; d, ok = s.forgetting.peek() {
		s.forgetting.pop()
		forget = append(forget, d.lease)
	}
	s.queueMu.Unlock()

	var expired []Lease
	for _, e := range due {
		o := e.org
		o.mu.Lock()
		open := e.status == LeaseOpen
		if open {
			e.status = LeaseExpired
			l, b, q := o.load(&e.lease.Ref)
			release(e.lease, l)
			o.store(&e.lease.Ref, l, b, q)
			expired = append(expired, e.lease)
		}
		o.mu.Unlock()
		if open {
			s.freed.Notify(e.lease.Ref.OrgID)
		}
	}
	for _, e := range forget {
		e.org.mu.Lock()
		if e.org.leases[e.lease.ID] == e {
			delete(e.org.leases, e.lease.ID)
		}
		e.org.mu.Unlock()
	}
	return expired, nil
}

// Share implements State: a MemState is the whole deployment's state.
func (s *MemState) Share() float64 { return 1 }

// Freed implements State.
func (s *MemState) Freed(orgID string) <-chan struct{} { return s.freed.Wait(orgID) }

// NextCursor implements State.
func (s *MemState) NextCursor(_ context.Context, orgID string) (uint64, error) {
	o := s.org(orgID, true)
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.cursor
	o.cursor++
	return c, nil
}

// SessionAccount implements State.
func (s *MemState) SessionAccount(_ context.Context, orgID, sessionID string, now time.Time, ttl time.Duration) (string, error) {
	o := s.org(orgID, false)
	if o == nil {
		return "", nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.pins[sessionID]
	if !ok {
		return "", nil
	}
	p := e.Value.(*memPin)
	if now.Sub(p.used) >= ttl {
		o.lru.Remove(e)
		delete(o.pins, sessionID)
		return "", nil
	}
	p.used = now
	o.lru.MoveToFront(e)
	return p.account, nil
}

// PinSession implements State. Pins are evicted least recently used first:
// the idle ones past ttl, then as many as it takes to stay within maxPins.
func (s *MemState) PinSession(_ context.Context, orgID, sessionID, accountID string, now time.Time, ttl time.Duration, maxPins int) error {
	o := s.org(orgID, true)
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.pins[sessionID]; ok {
		p := e.Value.(*memPin)
		p.account, p.used = accountID, now
		o.lru.MoveToFront(e)
	} else {
		o.pins[sessionID] = o.lru.PushFront(&memPin{session: sessionID, account: accountID, used: now})
	}
	for o.lru.Len() > 0 {
		last := o.lru.Back()
		p := last.Value.(*memPin)
		if o.lru.Len() <= maxPins && now.Sub(p.used) < ttl {
			break
		}
		o.lru.Remove(last)
		delete(o.pins, p.session)
	}
	return nil
}

// UnpinSession implements State.
func (s *MemState) UnpinSession(_ context.Context, orgID, sessionID, accountID string) error {
	o := s.org(orgID, false)
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.pins[sessionID]; ok && e.Value.(*memPin).account == accountID {
		o.lru.Remove(e)
		delete(o.pins, sessionID)
	}
	return nil
}

// leaseDue is a lease's place in a queue.
type leaseDue struct {
	due   int64 // Unix ns
	lease *memLease
}

// leaseQueue holds leases ordered by due time. Leases arrive almost in
// that order (the clock moves forward and the lease timeout is fixed), so
// a push walks back from the end only past the few that raced it, and a pop
// takes the front: constant time in practice, where a heap of the tens of
// thousands of leases a busy pool remembers costs a sift of some fifteen
// levels per push and per pop. A lease due much earlier than the ones
// before it would walk back further: correct, only slower.
type leaseQueue struct {
	items []leaseDue
	head  int
}

func (q *leaseQueue) push(d leaseDue) {
	q.items = append(q.items, d)
	i := len(q.items) - 1
	for ; i > q.head && q.items[i-1].due > d.due; i-- {
		q.items[i] = q.items[i-1]
	}
	q.items[i] = d
}

func (q *leaseQueue) peek() (leaseDue, bool) {
	if q.head == len(q.items) {
		return leaseDue{}, false
	}
	return q.items[q.head], true
}

func (q *leaseQueue) pop() {
	q.items[q.head] = leaseDue{}
	q.head++
	// Reclaim the popped front once it is half the slice: amortized
	// constant, and the slice never holds more than twice the queue.
	if q.head >= 64 && 2*q.head >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}
