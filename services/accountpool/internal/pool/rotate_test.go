package pool

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func TestRotateKeyReplacesTheKeySelectionsUse(t *testing.T) {
	var logs bytes.Buffer
	f := newFixture(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	id := f.register("a", "tier4").Account.ID
	before, err := f.store.GetAccount(f.ctx, f.org, id)
	require.NoError(t, err)
	old := f.mustSelect() // a lease out before the rotation
	require.Equal(t, "sk-ant-a", old.APIKey.Reveal())

	const newKey = "sk-ant-rotated-9f2c"
	info, err := f.pool.RotateKey(f.ctx, f.org, id, secret.New(newKey))
	require.NoError(t, err)
	require.Nil(t, info.Account.KeyCiphertext, "admin answers never carry the ciphertext")
	require.Equal(t, store.StatusActive, info.Account.Status)

	stored, err := f.store.GetAccount(f.ctx, f.org, id)
	require.NoError(t, err)
	require.NotEqual(t, before.KeyCiphertext, stored.KeyCiphertext)
	require.Equal(t, f.keys.CurrentVersion(), stored.KeyVersion)
	plain, err := f.keys.Decrypt(stored.KeyCiphertext, f.org, id)
	require.NoError(t, err)
	require.Equal(t, newKey, plain.Reveal(), "encrypted for this organization and account")
	_, err = f.keys.Decrypt(stored.KeyCiphertext, f.org, uuid.NewString())
	require.Error(t, err, "bound to the account: it does not decrypt as another one")

	require.Equal(t, newKey, f.mustSelect().APIKey.Reveal(), "selections after the rotation get the new key")
	require.Equal(t, "sk-ant-a", old.APIKey.Reveal(), "a lease handed out before keeps the old key")
	f.record(old, store.OutcomeSuccess) // and settles as usual
	require.NotContains(t, logs.String(), newKey)
	require.Contains(t, logs.String(), "account key rotated")
}

func TestRotateKeyRevivesAnInvalidAccount(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 4)
	f.record(f.mustSelect(), store.OutcomeAuthFailed, func(r *RecordRequest) { r.HTTPStatus = 401 })
	require.Equal(t, store.StatusInvalid, f.account(id).Account.Status)
	require.Equal(t, int32(4), f.account(id).Breaker.ConsecutiveFailures)
	f.exhausted()

	info, err := f.pool.RotateKey(f.ctx, f.org, id, secret.New("sk-ant-fresh"))
	require.NoError(t, err)
	require.Equal(t, store.StatusActive, info.Account.Status)
	require.Equal(t, BreakerClosed, info.Breaker.State, "the breaker counted the old key's failures")
	require.Zero(t, info.Breaker.ConsecutiveFailures)
	stored, err := f.store.GetAccount(f.ctx, f.org, id)
	require.NoError(t, err)
	require.Equal(t, store.StatusActive, stored.Status, "ACTIVE is persisted")
	require.Equal(t, "sk-ant-fresh", f.mustSelect().APIKey.Reveal())
}

func TestRotateKeyLeavesADisabledAccountDisabled(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	disabled := store.StatusDisabled
	_, err := f.pool.UpdateAccount(f.ctx, f.org, id, AccountChanges{Status: &disabled})
	require.NoError(t, err)
	info, err := f.pool.RotateKey(f.ctx, f.org, id, secret.New("sk-ant-fresh"))
	require.NoError(t, err)
	require.Equal(t, store.StatusDisabled, info.Account.Status, "disabling is an admin's decision, not the key's")
}

// Another process marked the account invalid; this process's view still
// says ACTIVE. The rotation must still bring it back.
func TestRotateKeyRevivesAnAccountInvalidElsewhere(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	invalid := store.StatusInvalid
	_, err := f.store.UpdateAccount(f.ctx, f.org, id, store.AccountUpdate{Status: &invalid, UpdateTime: f.clock.Now()})
	require.NoError(t, err)
	info, err := f.pool.RotateKey(f.ctx, f.org, id, secret.New("sk-ant-fresh"))
	require.NoError(t, err)
	require.Equal(t, store.StatusActive, info.Account.Status)
}

func TestRotateKeyOfAnUnknownAccount(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	_, err := f.pool.RotateKey(f.ctx, f.org, uuid.NewString(), secret.New("sk-ant-secret-1"))
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NotContains(t, err.Error(), "sk-ant-secret-1")

	other := newFixture(t)
	other.pool, other.store = f.pool, f.store
	_, err = f.pool.RotateKey(f.ctx, other.org, id, secret.New("sk-ant-secret-2"))
	require.ErrorIs(t, err, store.ErrNotFound, "another organization's account is not found")
	require.Equal(t, "sk-ant-a", f.mustSelect().APIKey.Reveal(), "and keeps its key")
}

func TestRotateKeyClosesAnOpenBreaker(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier4").Account.ID
	f.failTimes(id, 5)
	require.Equal(t, BreakerOpen, f.account(id).Breaker.State)
	info, err := f.pool.RotateKey(f.ctx, f.org, id, secret.New("sk-ant-fresh"))
	require.NoError(t, err)
	require.Equal(t, BreakerClosed, info.Breaker.State)
	require.Equal(t, id, f.mustSelect().AccountID)
}
