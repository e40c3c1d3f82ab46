package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// feedStore is one memstore shared by two pools, standing in for one
// database and two processes; notify plays the change feed, which the
// test drives by hand. While down is set, reads of accounts and settings
// fail as if the database were unreachable, and reads counts them.
type feedStore struct {
	*memstore.Store
	mu    sync.Mutex
	subs  []func(string)
	down  atomic.Bool
	reads atomic.Int64
}

var _ store.ChangeWatcher = (*feedStore)(nil)

func (s *feedStore) WatchChanges(ctx context.Context, onChange func(string)) error {
	s.mu.Lock()
	s.subs = append(s.subs, onChange)
	s.mu.Unlock()
	onChange(store.AllOrganizations)
	<-ctx.Done()
	return nil
}

func (s *feedStore) notify(org string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fn := range s.subs {
		fn(org)
	}
}

func (s *feedStore) ListAccounts(ctx context.Context, org string) ([]store.Account, error) {
	s.reads.Add(1)
	if s.down.Load() {
		return nil, fmt.Errorf("listing accounts: %w", store.ErrUnavailable)
	}
	return s.Store.ListAccounts(ctx, org)
}

func (s *feedStore) GetSettings(ctx context.Context, org string) (store.Settings, error) {
	s.reads.Add(1)
	if s.down.Load() {
		return store.Settings{}, fmt.Errorf("getting settings: %w", store.ErrUnavailable)
	}
	return s.Store.GetSettings(ctx, org)
}

// watched returns a fixture whose pool watches a feedStore, and a second
// pool, "the other process", on the same store and keys that does not.
// opts adjust the watching pool's configuration.
//
// It returns once the watcher has handled the feed's start-up report
// (AllOrganizations), so from then on a view of the watching pool changes
// only through its own writes and notify. Watch handles that report on its
// own goroutine whenever it gets to it; without this wait it can reload a
// view the test loaded afterwards, picking up another process's change that
// no notification announced. The report itself is not observable, so
// watched loads a view of an organization of its own before the watcher
// subscribes: the report must mark that view stale and reload it, and once
// a fresh view replaces it, the report has been handled. The fixture's own
// organization stays unloaded until the test first uses it.
func watched(t *testing.T, opts ...func(*Config)) (*fixture, *feedStore, *Pool) {
	t.Helper()
	feed := &feedStore{Store: memstore.New()}
	f := newFixture(t, append(opts, func(c *Config) { c.Store = feed })...)
	other, err := New(Config{Store: feed, Keys: f.keys, Now: f.clock.Now, Logger: f.pool.logger})
	require.NoError(t, err)
	sentinel := "org-" + uuid.NewString()
	_, err = f.pool.Settings(f.ctx, sentinel)
	require.NoError(t, err)
	e := f.pool.entry(sentinel)
	before := e.view.Load()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.pool.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, func() bool {
		v := e.view.Load()
		return v != before && !v.stale
	}, 5*time.Second, time.Millisecond, "the watcher reloads every loaded view when the feed comes up")
	return f, feed, other
}

func selectable(f *fixture, id string) bool {
	_, err := f.pool.Select(f.ctx, f.selectReq(allowed(id)))
	return err == nil
}

func TestWatchAppliesChangesFromAnotherProcess(t *testing.T) {
	f, feed, other := watched(t)
	alpha := f.register("alpha", "tier2")
	f.mustSelect() // the view is loaded

	// SelectAccount reads memory only, even with the store down.
	feed.down.Store(true)
	reads := feed.reads.Load()
	f.mustSelect(allowed(alpha.Account.ID))
	require.Equal(t, reads, feed.reads.Load(), "Select never reads the store once the view is loaded")
	feed.down.Store(false)

	bravo, err := other.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: "bravo", APIKey: secret.New("sk-ant-bravo"), Tier: "tier2"})
	require.NoError(t, err)
	require.False(t, selectable(f, bravo.Account.ID), "no notification yet: the view is what was loaded")
	feed.notify(f.org)
	require.Eventually(t, func() bool { return selectable(f, bravo.Account.ID) }, 5*time.Second, time.Millisecond,
		"an account registered elsewhere becomes selectable")
	sel := f.mustSelect(allowed(bravo.Account.ID))
	require.Equal(t, "sk-ant-bravo", sel.APIKey.Reveal(), "its key decrypts here")
	f.record(sel, store.OutcomeSuccess)

	disabled := store.StatusDisabled
	_, err = other.UpdateAccount(f.ctx, f.org, alpha.Account.ID, AccountChanges{Status: &disabled})
	require.NoError(t, err)
	feed.notify(f.org)
	// Wait for the reload itself: polling Select would hold a lease of
	// alpha's capacity per attempt until the reload lands.
	require.Eventually(t, func() bool { return f.account(alpha.Account.ID).Account.Status == store.StatusDisabled }, 5*time.Second, time.Millisecond,
		"the view reloads with the account disabled elsewhere")
	require.False(t, selectable(f, alpha.Account.ID), "an account disabled elsewhere stops being selected")
	require.Equal(t, "disabled", candidate(f.exhausted(allowed(alpha.Account.ID)).Candidates, alpha.Account.ID).SkipReason)
}

func TestWatchReloadKeepsLiveState(t *testing.T) {
	f, feed, other := watched(t)
	a := f.register("a", "tier2")
	f.failTimes(a.Account.ID, 2)
	f.mustSelect(allowed(a.Account.ID), estimate(50_000, 0)) // an open lease holds capacity
	before := f.account(a.Account.ID)
	require.Equal(t, int32(2), before.Breaker.ConsecutiveFailures)

	_, err := other.UpdateSettings(f.ctx, f.org, store.StrategyRoundRobin)
	require.NoError(t, err)
	feed.notify(f.org)
	require.Eventually(t, func() bool {
		s, err := f.pool.Settings(f.ctx, f.org)
		return err == nil && s.SelectionStrategy == store.StrategyRoundRobin
	}, 5*time.Second, time.Millisecond)

	after := f.account(a.Account.ID)
	require.Equal(t, before.Breaker, after.Breaker, "breakers survive a reload")
	require.Equal(t, before.Capacity, after.Capacity, "buckets and reservations survive a reload")
}

func TestWatchDeleteElsewhereKeepsInFlightLeases(t *testing.T) {
	f, feed, other := watched(t)
	a := f.register("a", "tier2")
	f.register("b", "tier2")
	sel := f.mustSelect(allowed(a.Account.ID))
	f.failTimes(a.Account.ID, 1)

	require.NoError(t, other.DeleteAccount(f.ctx, f.org, a.Account.ID))
	feed.notify(f.org)
	require.Eventually(t, func() bool {
		_, err := f.pool.GetAccount(f.ctx, f.org, a.Account.ID)
		return err != nil
	}, 5*time.Second, time.Millisecond)
	require.False(t, selectable(f, a.Account.ID))

	res := f.record(sel, store.OutcomeSuccess)
	require.NotEmpty(t, res.UsageID, "a lease issued before the delete elsewhere still records")
	lives, err := snapshot(f.ctx, f.pool.state, ref(newAccount(a.Account), FamilyDefault))
	require.NoError(t, err)
	require.Zero(t, lives[0].Breaker, "the deleted account's live records are dropped, as a local delete drops them")

	// Another reload keeps remembering it for the rest of its time. The
	// reload reads the store holding the organization's lock, so taking
	// the lock after the reads waits for it to publish.
	reads := feed.reads.Load()
	feed.notify(f.org)
	require.Eventually(t, func() bool { return feed.reads.Load() >= reads+2 }, 5*time.Second, time.Millisecond)
	e := f.pool.entry(f.org)
	e.mu.Lock()
	_, remembered := e.view.Load().gone[a.Account.ID]
	e.mu.Unlock()
	require.True(t, remembered)
}

func TestWatchActiveElsewhereClosesTheBreaker(t *testing.T) {
	f, feed, other := watched(t)
	a := f.register("a", "tier2")
	f.register("spare", "tier2")
	f.failTimes(a.Account.ID, 5)
	require.Equal(t, BreakerOpen, f.account(a.Account.ID).Breaker.State)

	invalid, active := store.StatusInvalid, store.StatusActive
	_, err := other.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &invalid})
	require.NoError(t, err)
	feed.notify(f.org)
	require.Eventually(t, func() bool { return f.account(a.Account.ID).Account.Status == store.StatusInvalid }, 5*time.Second, time.Millisecond)
	require.Equal(t, BreakerOpen, f.account(a.Account.ID).Breaker.State, "becoming invalid touches no breaker")

	_, err = other.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &active})
	require.NoError(t, err)
	feed.notify(f.org)
	require.Eventually(t, func() bool { return f.account(a.Account.ID).Breaker.State == BreakerClosed }, 5*time.Second, time.Millisecond,
		"set ACTIVE elsewhere closes the breaker here, as it does locally")
	require.True(t, selectable(f, a.Account.ID))
}

func TestWatchFailedReloadIsNotServedStale(t *testing.T) {
	f, feed, other := watched(t)
	a := f.register("a", "tier2")
	f.mustSelect()

	disabled := store.StatusDisabled
	_, err := other.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &disabled})
	require.NoError(t, err)
	feed.down.Store(true)
	feed.notify(f.org)
	require.Eventually(t, func() bool {
		_, err := f.pool.Select(f.ctx, f.selectReq())
		return errors.Is(err, store.ErrUnavailable)
	}, 5*time.Second, time.Millisecond, "a view that could not be refreshed is not served")

	feed.down.Store(false)
	_, err = f.pool.Select(f.ctx, f.selectReq())
	require.ErrorIs(t, err, ErrNoAccounts, "the next use reloads it and sees the change")
}

func TestWatchReconnectReloadsEveryView(t *testing.T) {
	f, feed, other := watched(t)
	f.register("a", "tier2")
	f.mustSelect()

	// A change whose notification was lost while the feed was down.
	b, err := other.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: "b", APIKey: secret.New("sk-ant-b"), Tier: "tier2"})
	require.NoError(t, err)
	require.False(t, selectable(f, b.Account.ID))

	feed.notify(store.AllOrganizations)
	require.Eventually(t, func() bool { return selectable(f, b.Account.ID) }, 5*time.Second, time.Millisecond)
}

// TestWatchFollowsARewrappedKey: another process re-encrypts a key under a
// newer key-encryption key (`switchyard keys rewrap`, a compare-and-swap
// UPDATE that notifies like any other). The view reloads with the new
// ciphertext, which decrypts to the same key with the keyring holding both
// versions; a lease issued before still records, and live state stays.
func TestWatchFollowsARewrappedKey(t *testing.T) {
	v1, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	other, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	k1, err := crypto.ParseKeyring(v1)
	require.NoError(t, err)
	k2, err := crypto.ParseKeyring(v1 + ",2:" + strings.TrimPrefix(other, "1:"))
	require.NoError(t, err)

	f, feed, _ := watched(t, func(c *Config) { c.Keys = k2 })
	old, err := New(Config{Store: feed, Keys: k1, Now: f.clock.Now, Logger: f.pool.logger})
	require.NoError(t, err)
	reg, err := old.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: "alpha", APIKey: secret.New("sk-ant-alpha"), Tier: "tier2"})
	require.NoError(t, err)
	id := reg.Account.ID

	inFlight := f.mustSelect(allowed(id))
	require.Equal(t, "sk-ant-alpha", inFlight.APIKey.Reveal())
	before := f.account(id)
	require.Equal(t, int32(1), before.Account.KeyVersion)

	stored, err := feed.GetAccount(f.ctx, f.org, id)
	require.NoError(t, err)
	plain, err := k2.Decrypt(stored.KeyCiphertext, f.org, id)
	require.NoError(t, err)
	ct, ver, err := k2.Encrypt(plain, f.org, id)
	require.NoError(t, err)
	require.NoError(t, feed.ReplaceKey(f.ctx, f.org, id, stored.KeyCiphertext, store.EncryptedKey{Ciphertext: ct, Version: ver}, f.clock.Now()))
	feed.notify(f.org)
	require.Eventually(t, func() bool { return f.account(id).Account.KeyVersion == 2 }, 5*time.Second, time.Millisecond,
		"the view reloads with the rewrapped key")

	after := f.account(id)
	require.Equal(t, before.Capacity, after.Capacity, "the in-flight reservation survives the reload")
	require.Equal(t, before.Breaker, after.Breaker)
	sel := f.mustSelect(allowed(id))
	require.Equal(t, "sk-ant-alpha", sel.APIKey.Reveal(), "the rewrapped key decrypts to the same key")
	f.record(inFlight, store.OutcomeSuccess)
	f.record(sel, store.OutcomeSuccess)
}
