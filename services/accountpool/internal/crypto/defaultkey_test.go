package crypto_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
)

func TestDefaultKeyRoundTripAndRotation(t *testing.T) {
	old := mustKeyring(t, "1:"+keyB64(1))
	ct, ver, err := old.EncryptDefaultKey(secret.New(apiKey), "org-a")
	require.NoError(t, err)
	require.Equal(t, int32(1), ver)
	require.NotContains(t, string(ct), apiKey)

	both := mustKeyring(t, "1:"+keyB64(1)+",2:"+keyB64(2))
	got, err := both.DecryptDefaultKey(ct, "org-a")
	require.NoError(t, err, "older versions still decrypt")
	require.Equal(t, apiKey, got.Reveal())
	ct2, ver2, err := both.EncryptDefaultKey(got, "org-a")
	require.NoError(t, err)
	require.Equal(t, int32(2), ver2, "the primary version encrypts")
	got, err = both.DecryptDefaultKey(ct2, "org-a")
	require.NoError(t, err)
	require.Equal(t, apiKey, got.Reveal())

	_, err = old.DecryptDefaultKey(ct2, "org-a")
	require.ErrorIs(t, err, crypto.ErrUnknownKeyVersion)
}

// TestDefaultKeyBoundToOrganization: another organization's default key
// does not decrypt.
func TestDefaultKeyBoundToOrganization(t *testing.T) {
	k := mustKeyring(t, "1:"+keyB64(1))
	ct, _, err := k.EncryptDefaultKey(secret.New(apiKey), "org-a")
	require.NoError(t, err)
	_, err = k.DecryptDefaultKey(ct, "org-b")
	require.ErrorIs(t, err, crypto.ErrDecrypt)
}

// TestDefaultKeyAndAccountKeyCiphertextsDoNotSwap: a ciphertext copied
// from an account onto the default key, or from the default key onto an
// account, fails to decrypt in both directions, whatever account id it is
// tried under, including the empty one.
func TestDefaultKeyAndAccountKeyCiphertextsDoNotSwap(t *testing.T) {
	k := mustKeyring(t, "1:"+keyB64(1))
	const org = "org-a"
	accountCT, _, err := k.Encrypt(secret.New(apiKey), org, "acct-1")
	require.NoError(t, err)
	defaultCT, _, err := k.EncryptDefaultKey(secret.New(apiKey), org)
	require.NoError(t, err)

	t.Run("AccountCiphertextAsDefaultKey", func(t *testing.T) {
		_, err := k.DecryptDefaultKey(accountCT, org)
		require.ErrorIs(t, err, crypto.ErrDecrypt)
	})
	t.Run("DefaultKeyCiphertextAsAccountKey", func(t *testing.T) {
		for _, id := range []string{"acct-1", "", org, "default"} {
			_, err := k.Decrypt(defaultCT, org, id)
			require.ErrorIs(t, err, crypto.ErrDecrypt, "account id %q", id)
		}
	})
	t.Run("AccountKeyWithEmptyAccountIsNoDefaultKey", func(t *testing.T) {
		ct, _, err := k.Encrypt(secret.New(apiKey), org, "")
		require.NoError(t, err)
		_, err = k.DecryptDefaultKey(ct, org)
		require.ErrorIs(t, err, crypto.ErrDecrypt)
	})
	// Both still open as what they are.
	got, err := k.Decrypt(accountCT, org, "acct-1")
	require.NoError(t, err)
	require.Equal(t, apiKey, got.Reveal())
	got, err = k.DecryptDefaultKey(defaultCT, org)
	require.NoError(t, err)
	require.Equal(t, apiKey, got.Reveal())
}

func FuzzDecryptDefaultKeyNeverPanics(f *testing.F) {
	k := mustKeyring(f, "1:"+keyB64(1))
	ct, _, err := k.EncryptDefaultKey(secret.New(apiKey), "org")
	require.NoError(f, err)
	f.Add(ct)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = k.DecryptDefaultKey(b, "org") })
}
