// Package memstore is the embedded store.Store: maps behind one lock. It
// needs nothing installed, keeps nothing across restarts, and is meant for
// development and tests only. It passes the whole storetest suite, like
// every backend; a difference from pgstore is a bug in one of them.
//
// JSON objects are kept encoded, as PostgreSQL keeps jsonb: what a caller
// reads back is what a JSON round trip yields (numbers as float64), every
// read returns fresh maps, and nothing a caller holds aliases the store.
package memstore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	mu sync.RWMutex
	// orgs maps organization id → activity id → record, so that an
	// organization's lookups can only ever reach its own rows.
	orgs map[string]map[string]*record
	// lastSeq is the change sequence number last given out. Every write
	// takes the next one under mu, so numbers become visible in order.
	lastSeq int64
}

var _ store.Store = (*Store)(nil)

type record struct {
	// a holds every field except the JSON objects, which live encoded
	// below.
	a                       store.Activity
	input, output, metadata []byte
	events                  []event
	// changeSeq is the sequence number of the activity's latest change.
	changeSeq int64
}

type event struct {
	seq        int64
	message    string
	data       []byte
	createTime time.Time
}

// New returns an empty store.
func New() *Store {
	return &Store{orgs: make(map[string]map[string]*record)}
}

// CreateActivity implements store.Store.
func (s *Store) CreateActivity(ctx context.Context, orgID string, na store.NewActivity) (store.Activity, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Activity{}, false, err
	}
	input, err := encode(na.Input)
	if err != nil {
		return store.Activity{}, false, fmt.Errorf("encoding input: %w", err)
	}
	metadata, err := encode(na.Metadata)
	if err != nil {
		return store.Activity{}, false, fmt.Errorf("encoding metadata: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	acts := s.orgs[orgID]
	if acts == nil {
		acts = make(map[string]*record)
		s.orgs[orgID] = acts
	}
	if r, ok := acts[na.ID]; ok {
		a, err := r.activity()
		return a, false, err
	}
	r := &record{
		a: store.Activity{
			ID:             na.ID,
			OrganizationID: orgID,
			SessionID:      na.SessionID,
			UserID:         na.UserID,
			AgentType:      na.AgentType,
			AgentName:      na.AgentName,
			Category:       na.Category,
			Status:         store.StatusRunning,
			StartTime:      na.StartTime.UTC(),
			Deadline:       utcOrZero(na.Deadline),
		},
		input:     input,
		metadata:  metadata,
		changeSeq: s.nextSeq(),
	}
	acts[na.ID] = r
	// What was just stored decodes to the caller's own maps (the store's
	// input contract: JSON-decoded values), so they are the answer; the
	// record keeps its bytes, so the caller cannot change it through them.
	a := r.a
	a.Input, a.Metadata = orNil(na.Input), orNil(na.Metadata)
	return a, true, nil
}

// nextSeq numbers a change; the caller holds s.mu for writing.
func (s *Store) nextSeq() int64 {
	s.lastSeq++
	return s.lastSeq
}

// orNil is m, or nil when it is empty, as decode returns it.
func orNil(m map[string]any) map[string]any {
	if len(m) == 0 {
		return nil
	}
	return m
}

// AppendProgress implements store.Store.
func (s *Store) AppendProgress(ctx context.Context, orgID, activityID string, ev store.NewProgressEvent) (store.ProgressEvent, error) {
	if err := ctx.Err(); err != nil {
		return store.ProgressEvent{}, err
	}
	data, err := encode(ev.Data)
	if err != nil {
		return store.ProgressEvent{}, fmt.Errorf("encoding progress data: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.orgs[orgID][activityID]
	switch {
	case !ok:
		return store.ProgressEvent{}, store.ErrNotFound
	case r.a.Status.Ended():
		return store.ProgressEvent{}, store.ErrAlreadyEnded
	case len(r.events) >= store.MaxProgressEvents:
		return store.ProgressEvent{}, store.ErrProgressLimit
	}
	e := event{seq: int64(len(r.events)) + 1, message: ev.Message, data: data, createTime: ev.CreateTime.UTC()}
	r.events = append(r.events, e)
	r.changeSeq = s.nextSeq()
	return e.progressEvent(activityID)
}

// CompleteActivity implements store.Store.
func (s *Store) CompleteActivity(ctx context.Context, orgID, activityID string, c store.Completion) (store.Activity, error) {
	if err := ctx.Err(); err != nil {
		return store.Activity{}, err
	}
	output, err := encode(c.Output)
	if err != nil {
		return store.Activity{}, fmt.Errorf("encoding output: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.orgs[orgID][activityID]
	if !ok {
		return store.Activity{}, store.ErrNotFound
	}
	if !slices.Contains(c.FromStatuses(), r.a.Status) {
		a, err := r.activity()
		if err != nil {
			return store.Activity{}, err
		}
		return a, store.ErrAlreadyEnded
	}
	merged, metadata, err := mergeEncoded(r.metadata, c.Metadata)
	if err != nil {
		return store.Activity{}, fmt.Errorf("merging metadata: %w", err)
	}
	input, err := decode(r.input)
	if err != nil {
		return store.Activity{}, fmt.Errorf("decoding input of activity %s: %w", activityID, err)
	}
	completeTime := c.CompleteTime.UTC()
	if completeTime.Before(r.a.StartTime) {
		completeTime = r.a.StartTime
	}
	// Every fallible step is done; now change the record all at once.
	r.a.Status = c.Status
	r.a.ErrorMessage = c.ErrorMessage
	r.a.CompleteTime = completeTime
	r.output = output
	r.metadata = metadata
	r.changeSeq = s.nextSeq()
	// As in CreateActivity, the answer is the maps just stored.
	a := r.a
	a.Input, a.Output, a.Metadata = input, orNil(c.Output), orNil(merged)
	return a, nil
}

// AbandonExpired implements store.Store. It scans every activity on every
// call, which is fine for the development data sizes this store is meant
// for.
func (s *Store) AbandonExpired(ctx context.Context, now time.Time, grace time.Duration, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now = now.UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	var expired []*record
	for _, acts := range s.orgs {
		for _, r := range acts {
			if r.a.Status == store.StatusRunning && !r.a.Deadline.IsZero() && r.a.Deadline.Add(grace).Before(now) {
				expired = append(expired, r)
			}
		}
	}
	slices.SortFunc(expired, func(x, y *record) int { return x.a.Deadline.Compare(y.a.Deadline) })
	expired = expired[:min(len(expired), max(limit, 0))]
	for _, r := range expired {
		r.a.Status = store.StatusAbandoned
		r.a.ErrorMessage = store.AbandonReason(r.a.Deadline, grace)
		r.a.CompleteTime = now
		if now.Before(r.a.StartTime) {
			r.a.CompleteTime = r.a.StartTime
		}
		r.changeSeq = s.nextSeq()
	}
	return len(expired), nil
}

// GetActivity implements store.Store.
func (s *Store) GetActivity(ctx context.Context, orgID, activityID string) (store.Activity, []store.ProgressEvent, error) {
	if err := ctx.Err(); err != nil {
		return store.Activity{}, nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.orgs[orgID][activityID]
	if !ok {
		return store.Activity{}, nil, store.ErrNotFound
	}
	a, err := r.activity()
	if err != nil {
		return store.Activity{}, nil, err
	}
	events := make([]store.ProgressEvent, 0, len(r.events))
	for _, e := range r.events {
		pe, err := e.progressEvent(activityID)
		if err != nil {
			return store.Activity{}, nil, err
		}
		events = append(events, pe)
	}
	return a, events, nil
}

// ListActivities implements store.Store. It scans the organization's
// activities on every call, which is fine for the development data sizes
// this store is meant for.
func (s *Store) ListActivities(ctx context.Context, orgID string, q store.ListQuery) ([]store.Activity, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var matches []*record
	for _, r := range s.orgs[orgID] {
		if matchesFilter(r.a, q.Filter) && (q.After == nil || listCompare(store.CursorOf(r.a), *q.After) > 0) {
			matches = append(matches, r)
		}
	}
	slices.SortFunc(matches, func(x, y *record) int {
		return listCompare(store.CursorOf(x.a), store.CursorOf(y.a))
	})
	return page(matches, q.Limit, q.MaxBytes, (*record).activity)
}

// page converts matches, in order, into at most limit items whose stored
// size stays within maxBytes (zero: no bound; the first item is always
// taken, so a page is never empty while matches are not); more says
// whether matches were left out.
func page[T any](matches []*record, limit, maxBytes int, convert func(*record) (T, error)) (items []T, more bool, err error) {
	items = make([]T, 0, min(len(matches), max(limit, 0)))
	total := 0
	for _, r := range matches {
		if len(items) >= limit {
			break
		}
		total += r.size()
		if maxBytes > 0 && total > maxBytes && len(items) > 0 {
			break
		}
		item, err := convert(r)
		if err != nil {
			return nil, false, err
		}
		items = append(items, item)
	}
	return items, len(items) < len(matches), nil
}

func matchesFilter(a store.Activity, f store.ListFilter) bool {
	return (f.SessionID == "" || a.SessionID == f.SessionID) &&
		(f.Status == "" || a.Status == f.Status) &&
		(f.StartFrom.IsZero() || !a.StartTime.Before(f.StartFrom)) &&
		(f.StartTo.IsZero() || a.StartTime.Before(f.StartTo))
}

// listCompare orders positions as a list returns them: newest first, then
// by id descending. A negative result means x comes before y.
func listCompare(x, y store.Cursor) int {
	if c := y.StartTime.Compare(x.StartTime); c != 0 {
		return c
	}
	return cmp.Compare(y.ID, x.ID)
}

// size is the record's weight for store.ListQuery.MaxBytes.
func (r *record) size() int {
	return len(r.input) + len(r.output) + len(r.metadata) + len(r.a.ErrorMessage)
}

func (r *record) activity() (store.Activity, error) {
	a := r.a
	var err error
	if a.Input, err = decode(r.input); err != nil {
		return store.Activity{}, fmt.Errorf("decoding input of activity %s: %w", a.ID, err)
	}
	if a.Output, err = decode(r.output); err != nil {
		return store.Activity{}, fmt.Errorf("decoding output of activity %s: %w", a.ID, err)
	}
	if a.Metadata, err = decode(r.metadata); err != nil {
		return store.Activity{}, fmt.Errorf("decoding metadata of activity %s: %w", a.ID, err)
	}
	return a, nil
}

func (e event) progressEvent(activityID string) (store.ProgressEvent, error) {
	data, err := decode(e.data)
	if err != nil {
		return store.ProgressEvent{}, fmt.Errorf("decoding progress event %d of activity %s: %w", e.seq, activityID, err)
	}
	return store.ProgressEvent{
		ActivityID: activityID,
		Sequence:   e.seq,
		Message:    e.message,
		Data:       data,
		CreateTime: e.createTime,
	}, nil
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// encode keeps an empty object as nil, as pgstore keeps it as NULL.
func encode(m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

func decode(b []byte) (map[string]any, error) {
	if b == nil {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// mergeEncoded is jsonb's ||: a top-level merge in which add's keys win.
// It returns the merged object and its encoding.
func mergeEncoded(stored []byte, add map[string]any) (map[string]any, []byte, error) {
	m, err := decode(stored)
	if err != nil {
		return nil, nil, err
	}
	if m == nil {
		m = make(map[string]any, len(add))
	}
	maps.Copy(m, add)
	b, err := encode(m)
	return m, b, err
}
