package pool

import (
	"context"
	"fmt"
	"sync"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Watch keeps this process's views current with changes other processes
// make to the store (other AccountPool replicas, an admin tool), so an
// account registered or disabled elsewhere becomes selectable or stops
// being selected here without a restart. It needs a store that reports
// changes (store.ChangeWatcher); with any other store (memstore, private
// to its process, whose own admin writes already update the views) it
// returns nil at once.
//
// A reported organization's view is reloaded from the store right away, on
// Watch's goroutine, so SelectAccount keeps reading memory. When the reload
// fails, the view is marked stale: its next use reloads it, or fails with
// the store's error, rather than serve what the store has changed. When
// the store says anything may have changed (store.AllOrganizations: the
// feed (re)connected after a gap), every loaded view is marked stale at
// once, then reloaded in the background unless a use got there first.
// Reports that arrive during a reload are merged, so a burst of changes
// costs one reload per organization. Organizations never loaded are left
// alone: their first use reads the store anyway.
//
// Watch runs until ctx is done and then returns nil; run it on its own
// goroutine for the life of the pool.
func (p *Pool) Watch(ctx context.Context) error {
	w, ok := p.store.(store.ChangeWatcher)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu      sync.Mutex
		pending = map[string]bool{}
		wake    = make(chan struct{}, 1)
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			mu.Lock()
			orgs := pending
			pending = map[string]bool{}
			mu.Unlock()
			if orgs[store.AllOrganizations] {
				for _, org := range p.invalidateAll() {
					p.refresh(ctx, org, true)
				}
				delete(orgs, store.AllOrganizations)
			}
			for org := range orgs {
				p.refresh(ctx, org, false)
			}
		}
	})
	err := w.WatchChanges(ctx, func(org string) {
		mu.Lock()
		pending[org] = true
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending and will see this org
		}
	})
	cancel()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("watching the store for changes: %w", err)
	}
	return nil
}

// invalidateAll marks every loaded view stale and returns their
// organizations.
func (p *Pool) invalidateAll() []string {
	p.mu.Lock()
	entries := make(map[string]*orgEntry, len(p.orgs))
	for org, e := range p.orgs {
		entries[org] = e
	}
	p.mu.Unlock()
	var orgs []string
	for org, e := range entries {
		e.mu.Lock()
		if v := e.view.Load(); v != nil {
			e.view.Store(v.markStale())
			orgs = append(orgs, org)
		}
		e.mu.Unlock()
	}
	return orgs
}

// refresh reloads one organization's loaded view; onlyStale skips a view
// that a use has reloaded since it was marked stale.
func (p *Pool) refresh(ctx context.Context, orgID string, onlyStale bool) {
	p.mu.Lock()
	e := p.orgs[orgID]
	p.mu.Unlock()
	if e == nil {
		return
	}
	// Holding e.mu serializes the reload with a first load in progress: a
	// load that read the store before the change cannot publish after the
	// reload and win.
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.view.Load()
	if v == nil || (onlyStale && !v.stale) {
		return
	}
	if _, err := p.reloadLocked(ctx, orgID, e); err != nil {
		e.view.Store(v.markStale())
		if ctx.Err() == nil {
			p.logger.WarnContext(ctx, "reloading an organization's accounts after a change failed; its next use retries",
				"organization_id", orgID, "error", err)
		}
	}
}

func (v *orgView) markStale() *orgView {
	n := v.clone()
	n.stale = true
	return n
}
