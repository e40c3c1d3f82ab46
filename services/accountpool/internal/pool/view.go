package pool

import (
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
	// The organization's accounts, three ways: by name then id (the view's
	// order, which selection ties and explanations follow), by id
	// (lookups) and by create time then id (ListAccounts pages). Trees,
	// so an admin write copies O(log n) nodes, not the organization.
	names, ids, created tree
	// inService counts the accounts ACTIVE or INVALID (inService).
	inService int
	settings  store.Settings
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
	v := viewOf(accounts, settings)
	v.defaultKey = defaultKey
	var vanished, reactivated []*account
	if old := e.view.Load(); old != nil {
		now := p.now()
		for id, g := range old.gone {
			if _, back := v.account(id); !back && !now.After(g.until) {
				v.remember(id, g)
			}
		}
		for a := range old.ids.All() {
			switch n, ok := v.account(a.ID); {
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

// emptyView is a view of no accounts.
func emptyView(settings store.Settings) *orgView {
	return &orgView{
		names:    tree{less: byName},
		ids:      tree{less: byID},
		created:  tree{less: byCreate},
		settings: settings,
		index:    &viewIndex{},
	}
}

// viewOf returns a view of accounts, which have distinct ids and names.
func viewOf(accounts []store.Account, settings store.Settings) *orgView {
	v := emptyView(settings)
	as := make([]*account, len(accounts))
	for i, sa := range accounts {
		as[i] = newAccount(sa)
		if inService(as[i]) {
			v.inService++
		}
	}
	sorted := func(less func(x, y *account) bool) []*account {
		out := slices.Clone(as)
		slices.SortFunc(out, func(x, y *account) int {
			switch {
			case less(x, y):
				return -1
			case less(y, x):
				return 1
			}
			return 0
		})
		return out
	}
	v.names, v.ids, v.created = buildTree(sorted(byName), byName), buildTree(sorted(byID), byID), buildTree(sorted(byCreate), byCreate)
	return v
}

func byName(x, y *account) bool {
	return x.Name < y.Name || (x.Name == y.Name && x.ID < y.ID)
}

func byID(x, y *account) bool { return x.ID < y.ID }

func byCreate(x, y *account) bool {
	return x.CreateTime.Before(y.CreateTime) || (x.CreateTime.Equal(y.CreateTime) && x.ID < y.ID)
}

// account returns the view's account with id.
func (v *orgView) account(id string) (*account, bool) {
	for n := v.ids.root; n != nil; {
		switch {
		case id < n.a.ID:
			n = n.left
		case n.a.ID < id:
			n = n.right
		default:
			return n.a, true
		}
	}
	return nil, false
}

// accounts returns the view's accounts in its order (name, then id). It
// copies them: O(n), for callers that visit every account anyway.
func (v *orgView) accounts() []*account { return v.names.slice() }

// put adds a to v in place, replacing the account with its id; only for a
// view not yet published.
func (v *orgView) put(a *account) {
	v.drop(a.ID)
	v.names, v.ids, v.created = v.names.with(a), v.ids.with(a), v.created.with(a)
	if inService(a) {
		v.inService++
	}
}

// drop removes account id from v in place; only for a view not yet
// published. It returns the account removed.
func (v *orgView) drop(id string) (*account, bool) {
	old, ok := v.account(id)
	if !ok {
		return nil, false
	}
	v.names, v.ids, v.created = v.names.without(old), v.ids.without(old), v.created.without(old)
	if inService(old) {
		v.inService--
	}
	return old, true
}

// clone returns a copy of v to modify: O(1) but for gone, which holds only
// the accounts deleted in the last two lease timeouts. The trees are
// shared, and put and drop replace them rather than change them.
func (v *orgView) clone() *orgView {
	return &orgView{
		names:      v.names,
		ids:        v.ids,
		created:    v.created,
		inService:  v.inService,
		settings:   v.settings,
		defaultKey: v.defaultKey, // never modified in place: replaced
		gone:       maps.Clone(v.gone),
		index:      &viewIndex{},
	}
}

// with returns a copy of v holding a (added or replaced): O(log n).
func (v *orgView) with(sa store.Account) *orgView {
	n := v.clone()
	n.put(newAccount(sa))
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
	if a, ok := n.drop(id); ok {
		n.gone[id] = goneAccount{account: a, until: until}
	}
	return n
}

// ref names an account's live records for a family.
func ref(a *account, f Family) Ref {
	return Ref{OrgID: a.OrganizationID, AccountID: a.ID, QuotaKey: a.quotaKey, Family: f}
}
