package memstore

import (
	"cmp"
	"context"
	"slices"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// ChangesSince implements store.Store. Like ListActivities it scans the
// organization's activities on every call, which is fine for the
// development data sizes this store is meant for.
func (s *Store) ChangesSince(ctx context.Context, orgID string, q store.ChangeQuery) ([]store.Change, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var matches []*record
	for _, r := range s.orgs[orgID] {
		if r.changeSeq > q.After {
			matches = append(matches, r)
		}
	}
	slices.SortFunc(matches, func(x, y *record) int { return cmp.Compare(x.changeSeq, y.changeSeq) })
	return page(matches, q.Limit, q.MaxBytes, (*record).change)
}

// RecentChangesStart implements store.Store.
func (s *Store) RecentChangesStart(ctx context.Context, orgID string, n int) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	seqs := make([]int64, 0, len(s.orgs[orgID]))
	for _, r := range s.orgs[orgID] {
		seqs = append(seqs, r.changeSeq)
	}
	if n >= len(seqs) {
		return 0, nil
	}
	slices.SortFunc(seqs, func(x, y int64) int { return cmp.Compare(y, x) })
	return seqs[n], nil
}

// change is the record as the change feed returns it.
func (r *record) change() (store.Change, error) {
	a, err := r.activity()
	if err != nil {
		return store.Change{}, err
	}
	c := store.Change{Seq: r.changeSeq, Activity: a}
	if len(r.events) > 0 {
		pe, err := r.events[len(r.events)-1].progressEvent(a.ID)
		if err != nil {
			return store.Change{}, err
		}
		c.LatestProgress = &pe
	}
	return c, nil
}
