package crypto_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
)

const apiKey = "sk-ant-api03-test-key-0123456789"

func keyB64(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func mustKeyring(t testing.TB, spec string) *crypto.Keyring {
	t.Helper()
	k, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	return k
}

func TestRoundTrip(t *testing.T) {
	k := mustKeyring(t, "1:"+keyB64(1))
	ct, ver, err := k.Encrypt(secret.New(apiKey), "org-a", "acct-1")
	require.NoError(t, err)
	require.Equal(t, int32(1), ver)
	require.NotContains(t, string(ct), apiKey, "the ciphertext must not contain the key")

	got, err := k.Decrypt(ct, "org-a", "acct-1")
	require.NoError(t, err)
	require.Equal(t, apiKey, got.Reveal())
}

func TestNonceIsRandom(t *testing.T) {
	k := mustKeyring(t, "1:"+keyB64(1))
	a, _, err := k.Encrypt(secret.New(apiKey), "org", "acct")
	require.NoError(t, err)
	b, _, err := k.Encrypt(secret.New(apiKey), "org", "acct")
	require.NoError(t, err)
	require.NotEqual(t, a, b, "two encryptions of one key must differ")
}

func TestAssociatedDataBindsOrganizationAndAccount(t *testing.T) {
	k := mustKeyring(t, "1:"+keyB64(1))
	ct, _, err := k.Encrypt(secret.New(apiKey), "org-a", "acct-1")
	require.NoError(t, err)
	for _, tc := range []struct{ org, acct string }{
		{"org-b", "acct-1"},
		{"org-a", "acct-2"},
		{"org-aacct-1", ""},
		{"", "org-aacct-1"},
	} {
		_, err := k.Decrypt(ct, tc.org, tc.acct)
		require.ErrorIs(t, err, crypto.ErrDecrypt, "org %q account %q", tc.org, tc.acct)
	}
}

func TestVersionedKeyring(t *testing.T) {
	old := mustKeyring(t, "1:"+keyB64(1))
	ct1, ver, err := old.Encrypt(secret.New(apiKey), "org", "acct")
	require.NoError(t, err)
	require.Equal(t, int32(1), ver)

	rotated := mustKeyring(t, "2:"+keyB64(2)+", 1:"+keyB64(1))
	require.Equal(t, int32(2), rotated.CurrentVersion(), "the highest version encrypts, whatever the order")
	require.Equal(t, []int32{1, 2}, rotated.Versions(), "every version, ascending")
	require.Equal(t, []int32{1}, old.Versions())
	got, err := rotated.Decrypt(ct1, "org", "acct")
	require.NoError(t, err, "old versions still decrypt")
	require.Equal(t, apiKey, got.Reveal())

	ct2, ver, err := rotated.Encrypt(secret.New(apiKey), "org", "acct")
	require.NoError(t, err)
	require.Equal(t, int32(2), ver)
	_, err = old.Decrypt(ct2, "org", "acct")
	require.ErrorIs(t, err, crypto.ErrUnknownKeyVersion)

	// Rewriting the version byte to point at another key fails too.
	forged := bytes.Clone(ct2)
	forged[4] = 1
	_, err = rotated.Decrypt(forged, "org", "acct")
	require.ErrorIs(t, err, crypto.ErrDecrypt)
}

func TestTamperingFails(t *testing.T) {
	k := mustKeyring(t, "1:"+keyB64(1))
	ct, _, err := k.Encrypt(secret.New(apiKey), "org", "acct")
	require.NoError(t, err)
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		_, err := k.Decrypt(bad, "org", "acct")
		require.Error(t, err, "flipping byte %d must not decrypt", i)
	}
	_, err = k.Decrypt(ct[:len(ct)-1], "org", "acct")
	require.ErrorIs(t, err, crypto.ErrDecrypt)
}

func TestParseKeyringErrors(t *testing.T) {
	secretMaterial := base64.StdEncoding.EncodeToString([]byte("sixteen byte key"))
	for name, spec := range map[string]string{
		"empty":          "",
		"no version":     keyB64(1),
		"zero version":   "0:" + keyB64(1),
		"bad version":    "x:" + keyB64(1),
		"short key":      "1:" + secretMaterial,
		"not base64":     "1:!!!notbase64!!!",
		"duplicate":      "1:" + keyB64(1) + ",1:" + keyB64(2),
		"trailing comma": "1:" + keyB64(1) + ",",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := crypto.ParseKeyring(spec)
			require.Error(t, err)
			require.NotContains(t, err.Error(), secretMaterial, "errors never echo key material")
		})
	}
	k := mustKeyring(t, "7:"+strings.TrimRight(keyB64(3), "="))
	require.Equal(t, int32(7), k.CurrentVersion(), "unpadded base64 is accepted")
}

func TestGenerateKeyring(t *testing.T) {
	a, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	b, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	require.NotEqual(t, a, b)
	k := mustKeyring(t, a)
	require.Equal(t, int32(1), k.CurrentVersion())
}

// FuzzDecrypt checks that arbitrary bytes never panic and never decrypt:
// forging a ciphertext must require the key.
func FuzzDecrypt(f *testing.F) {
	k := mustKeyring(f, "1:"+keyB64(1)+",2:"+keyB64(2))
	// Valid ciphertexts for another account, and mutations of them, make the
	// fuzzer start next to the interesting shapes.
	other, _, err := k.Encrypt(secret.New(apiKey), "org", "other-account")
	require.NoError(f, err)
	f.Add(other)
	f.Add(other[:17])
	f.Add(other[:5])
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 1})
	f.Add(append([]byte{1, 0, 0, 0, 9}, make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := k.Decrypt(data, "org", "account")
		require.Error(t, err)
		require.True(t, got.IsZero())
	})
}
