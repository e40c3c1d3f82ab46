package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func newDefaultKey(org string, b byte) store.DefaultKey {
	return store.DefaultKey{
		OrganizationID: org,
		Ciphertext:     []byte{1, 0, 0, 0, 1, b, 0xfe, 0xed},
		KeyVersion:     1,
		UpdateTime:     base,
	}
}

func normDefaultKey(k store.DefaultKey) store.DefaultKey {
	k.UpdateTime = store.Normalize(k.UpdateTime)
	return k
}

// testDefaultKeyLifecycle: absent, set, replaced (which clears invalid),
// deleted, and deleting again is no error.
func testDefaultKeyLifecycle(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	_, err := s.GetDefaultKey(ctx, org)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.DeleteDefaultKey(ctx, org), "clearing a key that is not set")

	k := newDefaultKey(org, 1)
	k.UpdateTime = base.Add(123456789 * time.Nanosecond) // sub-microsecond part is truncated
	require.NoError(t, s.PutDefaultKey(ctx, k))
	got, err := s.GetDefaultKey(ctx, org)
	require.NoError(t, err)
	require.Equal(t, normDefaultKey(k), got)
	got.Ciphertext[5] = 0xff // no aliasing of stored state
	again, err := s.GetDefaultKey(ctx, org)
	require.NoError(t, err)
	require.Equal(t, normDefaultKey(k), again)

	require.NoError(t, s.InvalidateDefaultKey(ctx, org, k.Ciphertext, base.Add(time.Minute)))
	got, err = s.GetDefaultKey(ctx, org)
	require.NoError(t, err)
	require.True(t, got.Invalid)
	require.Equal(t, base.Add(time.Minute), got.UpdateTime)
	require.Equal(t, k.Ciphertext, got.Ciphertext)
	require.NoError(t, s.InvalidateDefaultKey(ctx, org, k.Ciphertext, base.Add(2*time.Minute)), "already invalid")

	replaced := newDefaultKey(org, 2)
	replaced.KeyVersion, replaced.UpdateTime = 2, base.Add(time.Hour)
	require.NoError(t, s.PutDefaultKey(ctx, replaced))
	got, err = s.GetDefaultKey(ctx, org)
	require.NoError(t, err)
	require.Equal(t, normDefaultKey(replaced), got, "setting again replaces it and clears invalid")

	require.NoError(t, s.DeleteDefaultKey(ctx, org))
	_, err = s.GetDefaultKey(ctx, org)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.DeleteDefaultKey(ctx, org))
}

// testDefaultKeyCompareAndSwap: InvalidateDefaultKey and ReplaceDefaultKey
// only act on the ciphertext the caller read.
func testDefaultKeyCompareAndSwap(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	old := newDefaultKey(org, 1)
	err := s.ReplaceDefaultKey(ctx, org, old.Ciphertext, store.EncryptedKey{Ciphertext: []byte{9}, Version: 2}, base)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.InvalidateDefaultKey(ctx, org, old.Ciphertext, base), store.ErrNotFound)

	require.NoError(t, s.PutDefaultKey(ctx, old))
	require.NoError(t, s.InvalidateDefaultKey(ctx, org, old.Ciphertext, base))
	next := store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 2, 7, 7, 7}, Version: 2}
	require.NoError(t, s.ReplaceDefaultKey(ctx, org, old.Ciphertext, next, base.Add(time.Second)))
	got, err := s.GetDefaultKey(ctx, org)
	require.NoError(t, err)
	require.Equal(t, next.Ciphertext, got.Ciphertext)
	require.Equal(t, int32(2), got.KeyVersion)
	require.True(t, got.Invalid, "re-encryption keeps the invalid flag")
	require.Equal(t, base.Add(time.Second), got.UpdateTime)

	// The old ciphertext is gone: both swaps conflict and change nothing.
	err = s.ReplaceDefaultKey(ctx, org, old.Ciphertext, store.EncryptedKey{Ciphertext: []byte{3}, Version: 3}, base.Add(time.Hour))
	require.ErrorIs(t, err, store.ErrConflict)
	require.NoError(t, s.PutDefaultKey(ctx, store.DefaultKey{OrganizationID: org, Ciphertext: next.Ciphertext, KeyVersion: 2, UpdateTime: base}))
	err = s.InvalidateDefaultKey(ctx, org, old.Ciphertext, base.Add(time.Hour))
	require.ErrorIs(t, err, store.ErrConflict)
	require.False(t, errors.Is(err, store.ErrNotFound))
	got, err = s.GetDefaultKey(ctx, org)
	require.NoError(t, err)
	require.False(t, got.Invalid, "a rejection of the old key never marks its replacement")
	require.Equal(t, next.Ciphertext, got.Ciphertext)
	require.Equal(t, base, got.UpdateTime)
}

// testDefaultKeyIsolation: one organization's default key is invisible to
// and untouchable by another.
func testDefaultKeyIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := newOrg(), newOrg()
	ka := newDefaultKey(a, 1)
	require.NoError(t, s.PutDefaultKey(ctx, ka))
	_, err := s.GetDefaultKey(ctx, b)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.InvalidateDefaultKey(ctx, b, ka.Ciphertext, base), store.ErrNotFound)
	require.ErrorIs(t, s.ReplaceDefaultKey(ctx, b, ka.Ciphertext, store.EncryptedKey{Ciphertext: []byte{5}, Version: 2}, base), store.ErrNotFound)
	require.NoError(t, s.DeleteDefaultKey(ctx, b))
	got, err := s.GetDefaultKey(ctx, a)
	require.NoError(t, err)
	require.Equal(t, normDefaultKey(ka), got)
}

// testDefaultKeyListsOrganization: an organization with a default key and
// no account is listed, so maintenance re-encrypts its key.
func testDefaultKeyListsOrganization(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	require.NoError(t, s.PutDefaultKey(ctx, newDefaultKey(org, 1)))
	got, err := s.ListOrganizations(ctx)
	require.NoError(t, err)
	require.True(t, slices.Contains(got, org))
}
