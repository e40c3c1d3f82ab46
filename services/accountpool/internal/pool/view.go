package pool

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// orgEntry is one organization's in-memory view. mu serializes loading and
// admin writes, so a load never races a write into a stale view; readers
// only load the pointer.
type orgEntry struct {
	mu   sync.Mutex
	view atomic.Pointer[orgView]
}

// orgView is immutable once published.
type orgView struct {
	accounts []*account // ordered by name, then id
	byID     map[string]*account
	settings store.Settings
	// defaultKey is the organization's default key (ciphertext), nil when
	// it has none; see defaultkey.go.
	defaultKey *store.DefaultKey
	// gone keeps deleted accounts for a while, so a lease issued before the
	// delete can still write its usage row.
	gone map[string]goneAccount
	// stale marks a view the store may have changed under (a refresh
	// failed, or the change feed was down): its next use reloads it
	// instead of serving it.
	stale bool
	// index caches, per model family, what selection needs of the view;
	// every view gets its own, filled on first use.
	index *viewIndex
}

type goneAccount struct {
	account *account
	until   time.Time
}

// account is a stored account as the view holds it, with its quota key
// computed once rather than on every selection.
type account struct {
	store.Account
	quotaKey string
}

func newAccount(a store.Account) *account {
	qk := "a:" + a.ID
	if a.QuotaGroup != "" {
		qk = "g:" + a.QuotaGroup
	}
	return &account{Account: a, quotaKey: qk}
}

func (p *Pool) entry(orgID string) *orgEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.orgs[orgID]
	if !ok {
		e = &orgEntry{}
		p.orgs[orgID] = e
	}
	return e
}

// view returns the organization's view, loading it on first use and
// reloading it when it is stale.
func (p *Pool) view(ctx context.Context, orgID string) (*orgView, error) {
	e := p.entry(orgID)
	if v := e.view.Load(); v != nil && !v.stale {
		return v, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return p.loadLocked(ctx, orgID, e)
}

func (p *Pool) loadLocked(ctx context.Context, orgID string, e *orgEntry) (*orgView, error) {
	if v := e.view.Load(); v != nil && !v.stale {
		return v, nil
	}
	return p.reloadLocked(ctx, orgID, e)
}

// reloadLocked reads the organization's accounts, settings and default
// key from the store and publishes them as its view. e.mu must be held.
//
// What the store does not hold carries over from the previous view:
// recently deleted accounts (gone), plus the accounts that vanished since,
// deleted by another process, so leases issued before the delete can still
// record. Live state needs no carrying: State is keyed by organization,
// account and quota key, never by view, so buckets, cool-downs and
// breakers stay as they are. Only what an admin write in this process would
// have done to them is done here: a vanished account's live records are
// dropped (DeleteAccount), and an account that came back to ACTIVE gets its
// breaker closed (UpdateAccount to ACTIVE; a remote update that keeps an
// account ACTIVE is indistinguishable from a rename and closes nothing).
func (p *Pool) reloadLocked(ctx context.Context, orgID string, e *orgEntry) (*orgView, error) {
	accounts, err := p.store.ListAccounts(ctx, orgID)
	if err != nil {
		return nil, fmt.Errorf("loading accounts of organization %s: %w", orgID, err)
	}
	settings, err := p.store.GetSettings(ctx, orgID)
	if err != nil {
		return nil, fmt.Errorf("loading settings of organization %s: %w", orgID, err)
	}
	defaultKey, err := p.loadDefaultKey(ctx, orgID)
	if err != nil {
		return nil, err
	}
	v := &orgView{byID: make(map[string]*account, len(accounts)), settings: settings, defaultKey: defaultKey, index: &viewIndex{}}
	for _, sa := range accounts {
		a := newAccount(sa)
		v.accounts = append(v.accounts, a)
		v.byID[a.ID] = a
	}
	var vanished, reactivated []*account
	if old := e.view.Load(); old != nil {
		now := p.now()
		for id, g := range old.gone {
			if _, back := v.byID[id]; !back && !now.After(g.until) {
				v.remember(id, g)
			}
		}
		for _, a := range old.accounts {
			switch n, ok := v.byID[a.ID]; {
			case !ok:
				v.remember(a.ID, goneAccount{account: a, until: now.Add(2 * p.leaseTimeout)})
				vanished = append(vanished, a)
			case a.Status != store.StatusActive && n.Status == store.StatusActive:
				reactivated = append(reactivated, n)
			}
		}
	}
	e.view.Store(v)
	// The view is right whatever happens to these; a failure leaves at
	// worst a stale breaker or an unused bucket, so it is logged, not
	// returned to a caller who only wanted to select.
	for _, a := range vanished {
		if err := p.dropLive(ctx, a); err != nil {
			p.logger.WarnContext(ctx, "dropping live state of an account deleted elsewhere", "organization_id", orgID, "account_id", a.ID, "error", err)
		}
	}
	for _, a := range reactivated {
		if err := p.closeBreaker(ctx, a); err != nil {
			p.logger.WarnContext(ctx, "closing the breaker of an account set active elsewhere", "organization_id", orgID, "account_id", a.ID, "error", err)
		}
	}
	p.changes.Notify(orgID)
	return v, nil
}

func (v *orgView) remember(id string, g goneAccount) {
	if v.gone == nil {
		v.gone = map[string]goneAccount{}
	}
	v.gone[id] = g
}

// modify runs an admin write: under the organization's lock, with the view
// loaded, fn performs the store write and returns the view that reflects
// it, which is then published, announced to the organization's watchers
// (unless fn returned v itself: nothing changed) and returned.
func (p *Pool) modify(ctx context.Context, orgID string, fn func(v *orgView) (*orgView, error)) (*orgView, error) {
	e := p.entry(orgID)
	e.mu.Lock()
	defer e.mu.Unlock()
	v, err := p.loadLocked(ctx, orgID, e)
	if err != nil {
		return nil, err
	}
	next, err := fn(v)
	if err != nil {
		return nil, err
	}
	e.view.Store(next)
	if next != v {
		p.changes.Notify(orgID)
	}
	return next, nil
}

func (v *orgView) clone() *orgView {
	return &orgView{
		accounts:   slices.Clone(v.accounts),
		byID:       maps.Clone(v.byID),
		settings:   v.settings,
		defaultKey: v.defaultKey, // never modified in place: replaced
		gone:       maps.Clone(v.gone),
		index:      &viewIndex{},
	}
}

// with returns a copy of v holding a (added or replaced).
func (v *orgView) with(sa store.Account) *orgView {
	a := newAccount(sa)
	n := v.clone()
	n.accounts = slices.DeleteFunc(n.accounts, func(x *account) bool { return x.ID == a.ID })
	n.accounts = append(n.accounts, a)
	slices.SortFunc(n.accounts, func(x, y *account) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.ID, y.ID))
	})
	n.byID[a.ID] = a
	return n
}

// without returns a copy of v without account id, remembered as gone until
// until; gone accounts past their time are pruned.
func (v *orgView) without(id string, now, until time.Time) *orgView {
	n := v.clone()
	if n.gone == nil {
		n.gone = map[string]goneAccount{}
	}
	maps.DeleteFunc(n.gone, func(_ string, g goneAccount) bool { return now.After(g.until) })
	if a, ok := n.byID[id]; ok {
		n.gone[id] = goneAccount{account: a, until: until}
	}
	n.accounts = slices.DeleteFunc(n.accounts, func(x *account) bool { return x.ID == id })
	delete(n.byID, id)
	return n
}

// ref names an account's live records for a family.
func ref(a *account, f Family) Ref {
	return Ref{OrgID: a.OrganizationID, AccountID: a.ID, QuotaKey: a.quotaKey, Family: f}
}
