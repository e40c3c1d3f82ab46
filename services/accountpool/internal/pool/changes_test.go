package pool

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// woke reports whether a wake-up is pending on ch, and takes it. notify
// sends before the call that changed something returns, so the test needs
// no waiting.
func woke(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Every change ListAccounts can show wakes the organization's watcher, and
// the list read after the wake-up shows it.
func TestChangesWakeTheOrganizationsWatcher(t *testing.T) {
	f := newFixture(t)
	changed, stop := f.pool.Changes(f.org)
	defer stop()
	otherOrg, stopOther := f.pool.Changes("org-" + uuid.NewString())
	defer stopOther()
	step := func(name string, fn func()) {
		t.Helper()
		woke(changed)
		fn()
		require.True(t, woke(changed), "%s wakes the watcher", name)
		require.False(t, woke(otherOrg), "%s of another organization wakes nobody here", name)
	}

	var a, b AccountInfo
	step("registering", func() { a = f.register("a", "tier4") })
	step("registering", func() { b = f.register("b", "tier4") })
	id := a.Account.ID

	var sel Selection
	step("a lease", func() { sel = f.mustSelect(allowed(id), estimate(10_000, 0)) })
	require.Less(t, capacityOf(f.account(id), FamilySonnet).InputRemaining, capacityOf(f.account(id), FamilySonnet).InputTokensLimit)

	step("a settled request", func() { f.record(sel, store.OutcomeSuccess, used(5_000, 0)) })

	sel = f.mustSelect(allowed(id))
	step("a 429", func() {
		f.record(sel, store.OutcomeRateLimited, func(r *RecordRequest) { r.Headers.RetryAfter = 30 * time.Second })
	})
	require.Equal(t, f.clock.Now().Add(30*time.Second), f.account(id).CooldownUntil)

	f.clock.Advance(31 * time.Second)
	f.failTimes(b.Account.ID, breakerThreshold-1)
	sel = f.mustSelect(allowed(b.Account.ID))
	step("a breaker opening", func() { f.record(sel, store.OutcomeUpstreamError) })
	require.Equal(t, BreakerOpen, f.account(b.Account.ID).Breaker.State)

	active, disabled := store.StatusActive, store.StatusDisabled
	step("disabling", func() {
		_, err := f.pool.UpdateAccount(f.ctx, f.org, id, AccountChanges{Status: &disabled})
		require.NoError(t, err)
	})
	step("setting active, which closes the breaker", func() {
		_, err := f.pool.UpdateAccount(f.ctx, f.org, b.Account.ID, AccountChanges{Status: &active})
		require.NoError(t, err)
	})
	require.Equal(t, BreakerClosed, f.account(b.Account.ID).Breaker.State)
	step("rotating a key", func() {
		_, err := f.pool.RotateKey(f.ctx, f.org, b.Account.ID, secret.New("sk-ant-new"))
		require.NoError(t, err)
	})

	f.mustSelect(allowed(b.Account.ID))
	f.clock.Advance(f.pool.leaseTimeout + time.Second)
	step("a lease expiring", func() { require.NoError(t, f.pool.expireLeases(f.ctx)) })

	step("deleting", func() { require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, id)) })
	list, err := f.pool.ListAccounts(f.ctx, f.org)
	require.NoError(t, err)
	require.Len(t, list, 1)

	_, err = f.pool.ListAccounts(f.ctx, f.org)
	require.NoError(t, err)
	require.False(t, woke(changed), "reading changes nothing")
}

// A reload after another process changed the organization in the store
// wakes its watchers here.
func TestChangesWakeOnAReloadFromAnotherProcess(t *testing.T) {
	f, feed, other := watched(t)
	f.register("a", "tier2")
	changed, stop := f.pool.Changes(f.org)
	defer stop()

	_, err := other.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: "b", APIKey: secret.New("sk-ant-b"), Tier: "tier2"})
	require.NoError(t, err)
	require.False(t, woke(changed), "nothing here knows yet")
	feed.notify(f.org)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the reload did not wake the watcher")
	}
	list, err := f.pool.ListAccounts(f.ctx, f.org)
	require.NoError(t, err)
	require.Len(t, list, 2, "the list read after the wake-up has the account registered elsewhere")
}
