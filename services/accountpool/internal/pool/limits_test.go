package pool

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func TestRegisterAccountStopsAtTheAccountLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAccountsPerOrganization = 3 })
	var ids []string
	for i := range 3 {
		ids = append(ids, f.register(fmt.Sprintf("acct-%d", i), "tier2").Account.ID)
	}
	_, err := f.pool.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: "acct-3", APIKey: secret.New("sk-ant-x"), Tier: "tier2"})
	var lim *LimitError
	require.ErrorAs(t, err, &lim)
	require.Equal(t, LimitAccountsPerOrganization, lim.Limit)
	require.Equal(t, 3, lim.Max)
	require.ErrorIs(t, err, store.ErrLimitReached)
	require.Contains(t, err.Error(), "its limit of 3 accounts")
	list, err := f.pool.ListAccounts(f.ctx, f.org)
	require.NoError(t, err)
	require.Len(t, list, 3, "the refused account is in neither the store nor the view")

	require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, ids[0]))
	f.register("acct-3", "tier2")
}

func TestRegisterAccountLabelLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxLabelsPerAccount = 2 })
	f.register("two", "tier2", func(n *NewAccount) { n.Labels = map[string]string{"a": "1", "b": "2"} })
	_, err := f.pool.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: "three", APIKey: secret.New("sk-ant-x"),
		Labels: map[string]string{"a": "1", "b": "2", "c": "3"}})
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "labels", fe.Field)
	require.Contains(t, fe.Problem, "at most 2 labels")

	g := newFixture(t)
	require.Equal(t, DefaultMaxLabelsPerAccount, g.pool.maxLabels)
	require.Equal(t, DefaultMaxAccountsPerOrganization, g.pool.maxAccounts)
	_, err = New(Config{Store: g.store, Keys: g.keys, MaxLabelsPerAccount: MaxLabelsPerAccountCeiling + 1})
	require.ErrorContains(t, err, "at most 64")
}

// Walking AccountsPage returns every account exactly once, in create-time
// order (then id), whatever the page size, and accounts renamed or added
// mid-walk do not disturb the rest.
func TestAccountsPageWalksEveryAccountOnce(t *testing.T) {
	f := newFixture(t)
	want := map[string]bool{}
	for i := range 23 {
		if i%3 == 0 {
			f.clock.Advance(time.Millisecond) // some share a create time, ordered by id
		}
		want[f.register(fmt.Sprintf("acct-%02d", 22-i), "tier2").Account.ID] = true
	}
	for _, size := range []int{1, 5, 23, 100} {
		seen := map[string]bool{}
		var order []AccountInfo
		var after *AccountCursor
		for pages := 0; ; pages++ {
			require.Less(t, pages, 30, "the walk ends")
			page, err := f.pool.AccountsPage(f.ctx, f.org, AccountQuery{PageSize: size, After: after})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page.Accounts), size)
			for _, a := range page.Accounts {
				require.False(t, seen[a.Account.ID], "listed once")
				seen[a.Account.ID] = true
				order = append(order, a)
			}
			if pages == 0 && size == 5 {
				// A rename mid-walk changes the name order, not this one.
				name := "zzz-renamed"
				_, err := f.pool.UpdateAccount(f.ctx, f.org, page.Accounts[4].Account.ID, AccountChanges{Name: &name})
				require.NoError(t, err)
			}
			if page.Next == nil {
				break
			}
			after = page.Next
		}
		require.Equal(t, want, seen, "page size %d", size)
		require.True(t, slices.IsSortedFunc(order, func(a, b AccountInfo) int {
			return cmp.Or(a.Account.CreateTime.Compare(b.Account.CreateTime), cmp.Compare(a.Account.ID, b.Account.ID))
		}))
	}
	empty, err := f.pool.AccountsPage(f.ctx, "org-empty", AccountQuery{PageSize: 10})
	require.NoError(t, err)
	require.Empty(t, empty.Accounts)
	require.Nil(t, empty.Next)
}

// At 10,000 accounts a selection still works, and explains the chosen
// account and MaxAlternatives others, counting the rest by reason.
func TestSelectionExplanationIsBounded(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAccountsPerOrganization = 20_000 })
	seedAccounts(t, f, 10_000)
	disabled := store.StatusDisabled
	info := f.register("zz-disabled", "scale")
	_, err := f.pool.UpdateAccount(f.ctx, f.org, info.Account.ID, AccountChanges{Status: &disabled})
	require.NoError(t, err)

	sel := f.mustSelect()
	require.NotEmpty(t, sel.LeaseID)
	require.Len(t, sel.Candidates, MaxAlternatives+1)
	require.Equal(t, 10_001-MaxAlternatives-1, sel.Omitted)
	require.Equal(t, map[string]int{SkipEligible: 10_000 - MaxAlternatives - 1, SkipDisabled: 1}, sel.OmittedReasons)
	chosen := 0
	for _, c := range sel.Candidates {
		if c.Chosen {
			chosen++
			require.Equal(t, sel.AccountID, c.AccountID)
		} else {
			require.Empty(t, c.SkipReason, "the best alternatives are eligible ones")
		}
	}
	require.Equal(t, 1, chosen)
	require.True(t, slices.IsSortedFunc(sel.Candidates, func(a, b Candidate) int { return cmp.Compare(a.AccountName, b.AccountName) }), "in name order")

	// Nothing can take an estimate this size: the explanation is bounded
	// too, and so is the error's message.
	ex := f.exhausted(allowed("00000000-0000-4000-8000-000000000000"))
	require.Len(t, ex.Candidates, MaxAlternatives)
	require.Equal(t, 10_001-MaxAlternatives, ex.Omitted)
	require.Equal(t, map[string]int{SkipNotAllowed: 10_001 - MaxAlternatives}, ex.OmittedReasons)
	require.Less(t, len(ex.Error()), 8<<10)
}

// A small organization is explained in full, skipped accounts included:
// the dashboard shows why a retry skipped the account that failed.
func TestSmallPoolIsExplainedInFull(t *testing.T) {
	f := newFixture(t)
	a := f.register("a", "tier2")
	b := f.register("b", "tier2")
	sel := f.mustSelect(func(r *SelectRequest) { r.Excluded = []string{a.Account.ID} })
	require.Equal(t, b.Account.ID, sel.AccountID)
	require.Len(t, sel.Candidates, 2)
	require.Zero(t, sel.Omitted)
	require.Nil(t, sel.OmittedReasons)
	require.Equal(t, "excluded", candidate(sel.Candidates, a.Account.ID).SkipReason)
}

// The alternatives explain picks are the best by its ranking: the most
// headroom first.
func TestExplanationPicksTheBestAlternatives(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for i := range MaxAlternatives + 5 {
		ids = append(ids, f.register(fmt.Sprintf("acct-%02d", i), "tier1").Account.ID)
	}
	// Use the first five: less headroom than the rest.
	for _, id := range ids[:5] {
		sel := f.mustSelect(allowed(id), estimate(10_000, 0))
		f.record(sel, store.OutcomeSuccess, used(10_000, 0))
	}
	sel := f.mustSelect()
	require.Len(t, sel.Candidates, MaxAlternatives+1)
	// 14 alternatives for 10 places: the 9 unused ones, then the best of
	// the used ones (ties in view order).
	require.NotEmpty(t, candidate(sel.Candidates, ids[0]).AccountID)
	for _, id := range ids[1:5] {
		require.Empty(t, candidate(sel.Candidates, id).AccountID, "the used accounts are the worst alternatives")
	}
	require.Equal(t, 4, sel.Omitted)
}

// The tree agrees with a sorted slice under random writes.
func TestTreeMatchesASortedSlice(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tr := tree{less: byName}
	var ref []*account
	byKey := map[string]*account{}
	for step := range 3000 {
		name := fmt.Sprintf("n%03d", r.IntN(400))
		if old, ok := byKey[name]; ok && r.IntN(3) == 0 {
			tr = tr.without(old)
			ref = slices.DeleteFunc(ref, func(x *account) bool { return x == old })
			delete(byKey, name)
		} else if !ok {
			a := &account{Account: store.Account{ID: fmt.Sprintf("id-%d", step), Name: name}}
			tr = tr.with(a)
			ref = append(ref, a)
			byKey[name] = a
		}
		if step%97 == 0 {
			slices.SortFunc(ref, func(x, y *account) int { return cmp.Compare(x.Name, y.Name) })
			require.Equal(t, ref, tr.slice())
			require.Equal(t, len(ref), tr.Len())
			if len(ref) > 0 {
				k := r.IntN(len(ref))
				after := []*account{}
				for a := range tr.After(ref[k]) {
					after = append(after, a)
				}
				require.Equal(t, ref[k+1:], after)
				got, ok := tr.find(ref[k])
				require.True(t, ok)
				require.Same(t, ref[k], got)
			}
		}
	}
}

// A view built at once from the store is the view built account by
// account, and a well-formed treap.
func TestViewOfMatchesInserts(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var accounts []store.Account
	for i := range 500 {
		st := store.StatusActive
		if i%7 == 0 {
			st = store.StatusDisabled
		}
		accounts = append(accounts, store.Account{ID: fmt.Sprintf("id-%04d", r.IntN(1_000_000)*1000+i), Name: fmt.Sprintf("n-%04d", r.IntN(1_000_000)*1000+i),
			Status: st, CreateTime: time.Unix(int64(r.IntN(50)), 0)})
	}
	built := viewOf(accounts, store.Settings{})
	inserted := emptyView(store.Settings{})
	for _, a := range accounts {
		inserted.put(newAccount(a))
	}
	require.Equal(t, inserted.inService, built.inService)
	for _, pair := range [][2]tree{{built.names, inserted.names}, {built.ids, inserted.ids}, {built.created, inserted.created}} {
		var a, b []string
		for x := range pair[0].All() {
			a = append(a, x.ID)
		}
		for x := range pair[1].All() {
			b = append(b, x.ID)
		}
		require.Equal(t, b, a)
		requireTreap(t, pair[0].root)
		require.Equal(t, len(accounts), pair[0].Len())
	}
	_, ok := built.account(accounts[42].ID)
	require.True(t, ok)
}

func requireTreap(t *testing.T, n *node) {
	t.Helper()
	if n == nil {
		return
	}
	for _, c := range []*node{n.left, n.right} {
		if c != nil {
			require.LessOrEqual(t, c.prio, n.prio, "heap order")
		}
	}
	require.Equal(t, size(n.left)+size(n.right)+1, n.size)
	requireTreap(t, n.left)
	requireTreap(t, n.right)
}

// A view's writes leave the view they came from as it was.
func TestViewWritesDoNotChangeTheirSource(t *testing.T) {
	v := emptyView(store.DefaultSettings("org"))
	for i := range 50 {
		v = v.with(store.Account{ID: fmt.Sprintf("id-%02d", i), Name: fmt.Sprintf("n-%02d", i), Status: store.StatusActive})
	}
	before := v.accounts()
	renamed := v.with(store.Account{ID: "id-07", Name: "a-first", Status: store.StatusDisabled})
	gone := renamed.without("id-08", time.Time{}, time.Time{})
	require.Equal(t, before, v.accounts())
	require.Equal(t, 50, v.inService)
	require.Equal(t, 49, renamed.inService)
	require.Equal(t, "a-first", renamed.accounts()[0].Name)
	require.Equal(t, 48, gone.inService)
	require.Equal(t, 49, gone.names.Len())
	require.Equal(t, 49, gone.created.Len())
	_, ok := gone.account("id-08")
	require.False(t, ok)
	_, ok = v.account("id-08")
	require.True(t, ok)
	require.False(t, errors.Is(nil, store.ErrLimitReached))
}
