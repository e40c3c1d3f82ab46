package accountpool

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// putDefault stores org's default key encrypted under keys; invalid marks
// it rejected.
func (f *rewrapFixture) putDefault(org string, keys *crypto.Keyring, invalid bool) store.DefaultKey {
	f.t.Helper()
	plain := "sk-ant-api03-rewrap-default-" + org
	ct, ver, err := keys.EncryptDefaultKey(secret.New(plain), org)
	require.NoError(f.t, err)
	k := store.DefaultKey{OrganizationID: org, Ciphertext: ct, KeyVersion: ver, Invalid: invalid, UpdateTime: rewrapNow.Add(-1)}
	require.NoError(f.t, f.store.PutDefaultKey(context.Background(), k))
	f.plain["default:"+org] = plain
	return k
}

func TestRewrapReencryptsDefaultKeys(t *testing.T) {
	f := newRewrapFixture(t)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := keyring(t, v1), keyring(t, v1+","+v2)
	f.put("org-a", "alpha", k1)
	f.putDefault("org-a", k1, false)
	f.putDefault("org-only-default", k1, true) // no account, and invalid
	current := f.putDefault("org-b", k2, false)
	f.put("org-b", "bravo", k2)
	f.putDefault("org-stray", keyring(t, kek(t, 1)), false) // another version-1 key

	st, err := keyStatus(t.Context(), f.store, k2)
	require.NoError(t, err)
	require.Equal(t, 4, st.DefaultKeys)
	require.Equal(t, map[int32]int{1: 3, 2: 1}, st.DefaultKeyVersions)
	require.Equal(t, 1+3, st.Outdated())

	r, err := f.run(f.store, k2)
	require.NoError(t, err)
	require.Equal(t, 4, r.Organizations, "an organization with only a default key is visited")
	require.Equal(t, 1+2, r.Rewrapped)
	require.Equal(t, 1+1, r.AlreadyCurrent)
	require.Len(t, r.Failed, 1)
	require.Equal(t, RewrapFailure{OrganizationID: "org-stray", DefaultKey: true, KeyVersion: 1, Reason: r.Failed[0].Reason}, r.Failed[0])
	require.Equal(t, map[int32]int{1: 1, 2: 3}, r.Status.DefaultKeyVersions)
	require.Equal(t, 1, r.Status.Outdated())
	require.Zero(t, r.Status.Undecryptable(), "the stray's version 1 is in the keyring, another key under it")

	only2 := keyring(t, v2)
	for _, org := range []string{"org-a", "org-only-default", "org-b"} {
		k, err := f.store.GetDefaultKey(t.Context(), org)
		require.NoError(t, err)
		require.Equal(t, int32(2), k.KeyVersion, org)
		plain, err := only2.DecryptDefaultKey(k.Ciphertext, org)
		require.NoError(t, err, org)
		require.Equal(t, f.plain["default:"+org], plain.Reveal())
		require.Equal(t, org == "org-only-default", k.Invalid, "re-encryption keeps the invalid flag of %s", org)
	}
	untouched, err := f.store.GetDefaultKey(t.Context(), "org-b")
	require.NoError(t, err)
	require.Equal(t, current.Ciphertext, untouched.Ciphertext, "a current default key is not rewritten")
	rewrapped, err := f.store.GetDefaultKey(t.Context(), "org-a")
	require.NoError(t, err)
	require.True(t, rewrapNow.Equal(rewrapped.UpdateTime))

	again, err := f.run(f.store, k2)
	require.NoError(t, err)
	require.Zero(t, again.Rewrapped)
	require.Len(t, again.Failed, 1)
}
