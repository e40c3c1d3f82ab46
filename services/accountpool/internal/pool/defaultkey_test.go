package pool

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

const defaultKeyPlain = "sk-ant-api03-org-default-key-CANARY-d3f4"

func acceptDefault(r *SelectRequest) { r.AcceptDefaultKey = true }

func (f *fixture) selectDefault() (Selection, error) {
	return f.pool.Select(f.ctx, f.selectReq(acceptDefault))
}

func (f *fixture) legacyRecord(key LegacyKey, o store.Outcome, requestID string) RecordResult {
	f.t.Helper()
	res, err := f.pool.Record(f.ctx, RecordRequest{OrgID: f.org, RequestID: requestID, Attempt: 1, Outcome: o,
		Model: "claude-sonnet-4-5", Tokens: Tokens{Input: 10, Output: 1}, HTTPStatus: 401, LegacyKey: key})
	require.NoError(f.t, err)
	return res
}

func TestDefaultKeySelectedOnlyWithoutAccountsInService(t *testing.T) {
	f := newFixture(t)
	_, err := f.selectDefault()
	require.ErrorIs(t, err, ErrNoAccounts)
	require.NotErrorIs(t, err, ErrDefaultKeyInvalid)

	info, err := f.pool.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain))
	require.NoError(t, err)
	require.Equal(t, DefaultKeyInfo{Configured: true, KeyVersion: f.keys.CurrentVersion(), UpdateTime: f.clock.Now()}, info)

	sel, err := f.selectDefault()
	require.NoError(t, err)
	require.NotNil(t, sel.DefaultKey)
	require.Equal(t, defaultKeyPlain, sel.DefaultKey.APIKey.Reveal())
	require.Equal(t, f.keys.CurrentVersion(), sel.DefaultKey.KeyVersion)
	require.Empty(t, sel.LeaseID)
	require.Empty(t, sel.Candidates)

	_, err = f.pool.Select(f.ctx, f.selectReq())
	require.ErrorIs(t, err, ErrNoAccounts, "not accepted: NotFound as before")

	// An account in service takes over; disabling it hands the default key out again.
	a := f.register("alpha", "tier2")
	sel = f.mustSelect(acceptDefault)
	require.Nil(t, sel.DefaultKey)
	require.Equal(t, a.Account.ID, sel.AccountID)
	f.record(sel, store.OutcomeSuccess)
	disabled, active := store.StatusDisabled, store.StatusActive
	_, err = f.pool.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &disabled})
	require.NoError(t, err)
	sel, err = f.selectDefault()
	require.NoError(t, err)
	require.Equal(t, defaultKeyPlain, sel.DefaultKey.APIKey.Reveal())
	_, err = f.pool.UpdateAccount(f.ctx, f.org, a.Account.ID, AccountChanges{Status: &active})
	require.NoError(t, err)
	sel = f.mustSelect(acceptDefault)
	require.Equal(t, a.Account.ID, sel.AccountID, "re-enabled: a lease again")
	f.record(sel, store.OutcomeSuccess)
	require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, a.Account.ID))
	sel, err = f.selectDefault()
	require.NoError(t, err)
	require.NotNil(t, sel.DefaultKey, "deleted: the default key again")

	info, err = f.pool.ClearDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	require.Equal(t, DefaultKeyInfo{}, info)
	_, err = f.selectDefault()
	require.ErrorIs(t, err, ErrNoAccounts)
	_, err = f.pool.ClearDefaultKey(f.ctx, f.org)
	require.NoError(t, err, "clearing a key that is not set")
}

func TestDefaultKeyStoredEncryptedAndBound(t *testing.T) {
	f := newFixture(t)
	_, err := f.pool.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain))
	require.NoError(t, err)
	k, err := f.store.GetDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	require.False(t, bytes.Contains(k.Ciphertext, []byte(defaultKeyPlain)))
	plain, err := f.keys.DecryptDefaultKey(k.Ciphertext, f.org)
	require.NoError(t, err)
	require.Equal(t, defaultKeyPlain, plain.Reveal())

	// An account's ciphertext written over the default key does not decrypt.
	a := f.register("alpha", "tier2")
	acct, err := f.store.GetAccount(f.ctx, f.org, a.Account.ID)
	require.NoError(t, err)
	require.NoError(t, f.store.PutDefaultKey(f.ctx, store.DefaultKey{OrganizationID: f.org, Ciphertext: acct.KeyCiphertext, KeyVersion: acct.KeyVersion, UpdateTime: f.clock.Now()}))
	require.NoError(t, f.pool.DeleteAccount(f.ctx, f.org, a.Account.ID))
	// Force a reload of the view, as the change feed would.
	v, err := f.pool.modify(f.ctx, f.org, func(v *orgView) (*orgView, error) { n := v.clone(); n.stale = true; return n, nil })
	require.NoError(t, err)
	require.True(t, v.stale)
	_, err = f.selectDefault()
	require.Error(t, err)
	require.NotContains(t, err.Error(), defaultKeyPlain)
	require.NotErrorIs(t, err, ErrNoAccounts, "an undecryptable default key is never silently replaced by the environment key")
}

func TestLegacyRecordNamesTheKey(t *testing.T) {
	f := newFixture(t)
	f.legacyRecord(LegacyKeyEnvironment, store.OutcomeSuccess, "env")
	f.legacyRecord(LegacyKeyOrganizationDefault, store.OutcomeSuccess, "own")
	rep, err := f.pool.Usage(f.ctx, f.org, UsageQuery{IncludeRecords: true, PageSize: 10})
	require.NoError(t, err)
	names := map[string]string{}
	for _, r := range rep.Records {
		names[r.RequestID] = r.AccountName
		require.Empty(t, r.AccountID)
	}
	require.Equal(t, map[string]string{"env": EnvironmentKeyAccountName, "own": DefaultKeyAccountName}, names)
}

func TestAuthFailedOnDefaultKeyMarksItInvalid(t *testing.T) {
	f := newFixture(t)
	_, err := f.pool.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain))
	require.NoError(t, err)

	// The environment key's rejection is the operator's problem, not the organization's key.
	f.legacyRecord(LegacyKeyEnvironment, store.OutcomeAuthFailed, "env-401")
	_, err = f.selectDefault()
	require.NoError(t, err)

	f.clock.Advance(time.Second)
	res := f.legacyRecord(LegacyKeyOrganizationDefault, store.OutcomeAuthFailed, "own-401")
	require.False(t, res.Duplicate)
	_, err = f.selectDefault()
	require.ErrorIs(t, err, ErrDefaultKeyInvalid)
	require.ErrorIs(t, err, ErrNoAccounts)
	_, err = f.pool.Select(f.ctx, f.selectReq())
	require.ErrorIs(t, err, ErrDefaultKeyInvalid, "the reason does not depend on accepting the key")
	info, err := f.pool.DefaultKeyInfo(f.ctx, f.org)
	require.NoError(t, err)
	require.True(t, info.Invalid)
	require.Equal(t, f.clock.Now(), info.UpdateTime)
	stored, err := f.store.GetDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	require.True(t, stored.Invalid, "stored, not only in the view")

	// Recording the same call again is a duplicate and marks nothing, even
	// after the key was set again.
	_, err = f.pool.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain+"-rotated"))
	require.NoError(t, err)
	again := f.legacyRecord(LegacyKeyOrganizationDefault, store.OutcomeAuthFailed, "own-401")
	require.True(t, again.Duplicate)
	sel, err := f.selectDefault()
	require.NoError(t, err, "setting it again makes it valid")
	require.Equal(t, defaultKeyPlain+"-rotated", sel.DefaultKey.APIKey.Reveal())
}

func TestAuthFailedNeverMarksAKeyReplacedElsewhere(t *testing.T) {
	f := newFixture(t)
	_, err := f.pool.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain))
	require.NoError(t, err)
	// Another process replaces the key; this view has not reloaded yet.
	other, err := New(Config{Store: f.store, Keys: f.keys, Now: f.clock.Now, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	_, err = other.SetDefaultKey(f.ctx, f.org, secret.New("sk-ant-api03-replaced"))
	require.NoError(t, err)

	f.legacyRecord(LegacyKeyOrganizationDefault, store.OutcomeAuthFailed, "late-401")
	stored, err := f.store.GetDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	require.False(t, stored.Invalid, "the rejection was of the old key")
	sel, err := f.selectDefault()
	require.NoError(t, err)
	require.Equal(t, "sk-ant-api03-replaced", sel.DefaultKey.APIKey.Reveal(), "the view, stale after the conflict, reloaded")
}

// The usual recovery: a key is rejected, its admin sets a new one, and
// the rejection arrives after that (late, from the orchestrator's outbox)
// in this same process. Its generation names the old key, so the new one
// stays valid; a rejection reported with the new key's generation marks
// it.
func TestALateRejectionNeverMarksTheKeyThatReplacedIt(t *testing.T) {
	f := newFixture(t)
	_, err := f.pool.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain))
	require.NoError(t, err)
	old, err := f.selectDefault()
	require.NoError(t, err)
	_, err = f.pool.SetDefaultKey(f.ctx, f.org, secret.New("sk-ant-api03-replaced"))
	require.NoError(t, err)
	current, err := f.selectDefault()
	require.NoError(t, err)
	require.NotEqual(t, old.DefaultKey.Generation, current.DefaultKey.Generation)

	record := func(requestID, generation string) {
		t.Helper()
		_, err := f.pool.Record(f.ctx, RecordRequest{OrgID: f.org, RequestID: requestID, Attempt: 1, Outcome: store.OutcomeAuthFailed,
			Model: "claude-sonnet-4-5", HTTPStatus: 401, LegacyKey: LegacyKeyOrganizationDefault, DefaultKeyGeneration: generation})
		require.NoError(t, err)
	}
	record("late-401", old.DefaultKey.Generation)
	stored, err := f.store.GetDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	require.False(t, stored.Invalid, "the rejection was of the replaced key")
	_, err = f.selectDefault()
	require.NoError(t, err, "the new key is still handed out")

	record("current-401", current.DefaultKey.Generation)
	stored, err = f.store.GetDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	require.True(t, stored.Invalid, "a rejection of the current key marks it")
	_, err = f.selectDefault()
	require.ErrorIs(t, err, ErrDefaultKeyInvalid)
}

func TestWatchAppliesDefaultKeyChangesFromAnotherProcess(t *testing.T) {
	f, feed, other := watched(t)
	_, err := f.selectDefault()
	require.ErrorIs(t, err, ErrNoAccounts) // the view is loaded
	_, err = other.SetDefaultKey(f.ctx, f.org, secret.New(defaultKeyPlain))
	require.NoError(t, err)
	feed.notify(f.org)
	require.Eventually(t, func() bool { _, err := f.selectDefault(); return err == nil }, 5*time.Second, time.Millisecond,
		"a default key set elsewhere is handed out here")

	feed.down.Store(true)
	sel, err := f.selectDefault()
	require.NoError(t, err, "Select reads memory only")
	require.Equal(t, defaultKeyPlain, sel.DefaultKey.APIKey.Reveal())
	feed.down.Store(false)

	_, err = other.ClearDefaultKey(f.ctx, f.org)
	require.NoError(t, err)
	feed.notify(f.org)
	require.Eventually(t, func() bool { _, err := f.selectDefault(); return err != nil }, 5*time.Second, time.Millisecond,
		"a default key cleared elsewhere is no longer handed out here")
}
