package accountpool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// kek returns a keyring entry "<version>:<random 32 bytes>".
func kek(t *testing.T, version int) string {
	t.Helper()
	b := make([]byte, crypto.KeySize)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return fmt.Sprintf("%d:%s", version, base64.StdEncoding.EncodeToString(b))
}

func keyring(t *testing.T, spec string) *crypto.Keyring {
	t.Helper()
	k, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	return k
}

var rewrapNow = time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)

// rewrapFixture is a memstore with accounts whose keys were encrypted
// under various keyrings, and a log that must never see a key.
type rewrapFixture struct {
	t     *testing.T
	store *memstore.Store
	logs  *bytes.Buffer
	// plain maps account id to its plaintext key.
	plain map[string]string
}

func newRewrapFixture(t *testing.T) *rewrapFixture {
	return &rewrapFixture{t: t, store: memstore.New(), logs: &bytes.Buffer{}, plain: map[string]string{}}
}

// put stores an account of org whose key is encrypted under keys.
func (f *rewrapFixture) put(org, name string, keys *crypto.Keyring) store.Account {
	f.t.Helper()
	id := uuid.NewString()
	plain := "sk-ant-api03-rewrap-" + name + "-" + id[:8]
	ct, ver, err := keys.Encrypt(secret.New(plain), org, id)
	require.NoError(f.t, err)
	a := store.Account{
		ID: id, OrganizationID: org, Name: name, Tier: "tier2", Status: store.StatusActive, Weight: 1,
		KeyCiphertext: ct, KeyVersion: ver, CreateTime: rewrapNow.Add(-time.Hour), UpdateTime: rewrapNow.Add(-time.Hour),
	}
	require.NoError(f.t, f.store.CreateAccount(context.Background(), a, 0))
	f.plain[id] = plain
	return a
}

func (f *rewrapFixture) run(st store.Store, keys *crypto.Keyring) (RewrapReport, error) {
	f.t.Helper()
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := rewrap(context.Background(), st, keys, logger, func() time.Time { return rewrapNow })
	for id, plain := range f.plain {
		require.NotContains(f.t, f.logs.String(), plain, "the log holds the key of %s", id)
		require.NotContains(f.t, fmt.Sprintf("%+v %v", r, err), plain, "the report holds the key of %s", id)
	}
	return r, err
}

// requireKey asserts the account's stored key is under version and
// decrypts to its plaintext with keys.
func (f *rewrapFixture) requireKey(a store.Account, keys *crypto.Keyring, version int32) {
	f.t.Helper()
	got, err := f.store.GetAccount(context.Background(), a.OrganizationID, a.ID)
	require.NoError(f.t, err)
	require.Equal(f.t, version, got.KeyVersion, a.Name)
	plain, err := keys.Decrypt(got.KeyCiphertext, a.OrganizationID, a.ID)
	require.NoError(f.t, err, a.Name)
	require.Equal(f.t, f.plain[a.ID], plain.Reveal(), a.Name)
}

func TestRewrapReencryptsUnderTheCurrentVersion(t *testing.T) {
	f := newRewrapFixture(t)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := keyring(t, v1), keyring(t, v1+","+v2)
	alpha := f.put("org-a", "alpha", k1)
	bravo := f.put("org-a", "bravo", k1)
	charlie := f.put("org-b", "charlie", k1)
	current := f.put("org-b", "current", k2)

	r, err := f.run(f.store, k2)
	require.NoError(t, err)
	require.Equal(t, int32(2), r.CurrentVersion)
	require.Equal(t, 2, r.Organizations)
	require.Equal(t, 3, r.Rewrapped)
	require.Equal(t, 1, r.AlreadyCurrent)
	require.Zero(t, r.Skipped)
	require.Empty(t, r.Failed)
	require.Equal(t, map[int32]int{2: 4}, r.Status.Versions)
	require.Zero(t, r.Status.Outdated())

	// Version 1 can go: the keys decrypt with version 2 alone.
	only2 := keyring(t, v2)
	for _, a := range []store.Account{alpha, bravo, charlie, current} {
		f.requireKey(a, only2, 2)
	}
	got, err := f.store.GetAccount(t.Context(), alpha.OrganizationID, alpha.ID)
	require.NoError(t, err)
	require.True(t, rewrapNow.Equal(got.UpdateTime))
	untouched, err := f.store.GetAccount(t.Context(), current.OrganizationID, current.ID)
	require.NoError(t, err)
	require.Equal(t, current.KeyCiphertext, untouched.KeyCiphertext, "a current key is not rewritten")

	// Idempotent: a second run finds everything current.
	again, err := f.run(f.store, k2)
	require.NoError(t, err)
	require.Zero(t, again.Rewrapped)
	require.Equal(t, 4, again.AlreadyCurrent)
}

// A key the keyring cannot decrypt is reported with its account and left
// alone; the others are rewrapped.
func TestRewrapReportsUndecryptableKeysAndContinues(t *testing.T) {
	f := newRewrapFixture(t)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := keyring(t, v1), keyring(t, v1+","+v2)
	orphan := f.put("org-a", "orphan", keyring(t, kek(t, 7))) // version 7: retired too early
	ok := f.put("org-a", "ok", k1)
	damaged := f.put("org-b", "damaged", k1)
	ct := bytes.Clone(damaged.KeyCiphertext)
	ct[len(ct)-1] ^= 1
	_, err := f.store.UpdateAccount(t.Context(), damaged.OrganizationID, damaged.ID, store.AccountUpdate{Key: &store.EncryptedKey{Ciphertext: ct, Version: 1}, UpdateTime: rewrapNow})
	require.NoError(t, err)
	later := f.put("org-b", "later", k1)

	r, err := f.run(f.store, k2)
	require.NoError(t, err)
	require.Equal(t, 2, r.Rewrapped)
	require.Len(t, r.Failed, 2)
	byAccount := map[string]RewrapFailure{}
	for _, fl := range r.Failed {
		byAccount[fl.AccountID] = fl
	}
	require.Equal(t, RewrapFailure{OrganizationID: "org-a", AccountID: orphan.ID, KeyVersion: 7, Reason: byAccount[orphan.ID].Reason}, byAccount[orphan.ID])
	require.Contains(t, byAccount[orphan.ID].Reason, "not in the keyring")
	require.Equal(t, "org-b", byAccount[damaged.ID].OrganizationID)
	require.Equal(t, int32(1), byAccount[damaged.ID].KeyVersion)
	require.Contains(t, byAccount[damaged.ID].Reason, "cannot be decrypted")
	require.Contains(t, f.logs.String(), orphan.ID, "the log names the account")

	require.Equal(t, map[int32]int{1: 1, 2: 2, 7: 1}, r.Status.Versions)
	require.Equal(t, 2, r.Status.Outdated())
	require.Equal(t, 1, r.Status.Undecryptable(), "version 7 is not in the keyring")
	require.Equal(t, []int32{1, 2, 7}, r.Status.AllVersions())
	f.requireKey(ok, k2, 2)
	f.requireKey(later, k2, 2)
	got, err := f.store.GetAccount(t.Context(), orphan.OrganizationID, orphan.ID)
	require.NoError(t, err)
	require.Equal(t, orphan.KeyCiphertext, got.KeyCiphertext, "a failed account is left as it is")
}

// racingStore runs interfere once per account, just before ReplaceKey
// reaches the store, as another writer that got there first would.
type racingStore struct {
	*memstore.Store
	interfere func(ctx context.Context, orgID, id string, attempt int)
	attempts  map[string]int
}

func (s *racingStore) ReplaceKey(ctx context.Context, orgID, id string, old []byte, key store.EncryptedKey, now time.Time) error {
	s.attempts[id]++
	s.interfere(ctx, orgID, id, s.attempts[id])
	return s.Store.ReplaceKey(ctx, orgID, id, old, key, now)
}

func TestRewrapNeverOverwritesAConcurrentRotation(t *testing.T) {
	f := newRewrapFixture(t)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := keyring(t, v1), keyring(t, v1+","+v2)
	// rotatedNew: rotated by a process on the new keyring, before the
	// first write: current on the re-read, skipped.
	rotatedNew := f.put("org", "rotated-new", k1)
	// rotatedOld: rotated by a process still on the old keyring: still
	// version 1 on the re-read, so rewrapped from the rotated key.
	rotatedOld := f.put("org", "rotated-old", k1)
	// twice: rotated (on the old keyring) before each of the two writes:
	// skipped after the one retry, still outdated.
	twice := f.put("org", "twice", k1)
	// deleted before the write.
	deleted := f.put("org", "deleted", k1)
	plain := func(a store.Account, n int) string { return fmt.Sprintf("sk-ant-api03-rotated-%s-%d", a.Name, n) }
	rotate := func(ctx context.Context, a store.Account, keys *crypto.Keyring, n int) {
		ct, ver, err := keys.Encrypt(secret.New(plain(a, n)), a.OrganizationID, a.ID)
		require.NoError(t, err)
		_, err = f.store.UpdateAccount(ctx, a.OrganizationID, a.ID, store.AccountUpdate{Key: &store.EncryptedKey{Ciphertext: ct, Version: ver}, UpdateTime: rewrapNow})
		require.NoError(t, err)
		f.plain[a.ID] = plain(a, n)
	}
	st := &racingStore{Store: f.store, attempts: map[string]int{}, interfere: func(ctx context.Context, org, id string, attempt int) {
		switch {
		case id == rotatedNew.ID && attempt == 1:
			rotate(ctx, rotatedNew, k2, 1)
		case id == rotatedOld.ID && attempt == 1:
			rotate(ctx, rotatedOld, k1, 1)
		case id == twice.ID:
			rotate(ctx, twice, k1, attempt)
		case id == deleted.ID:
			require.NoError(t, f.store.DeleteAccount(ctx, org, id))
		}
	}}

	r, err := f.run(st, k2)
	require.NoError(t, err)
	require.Equal(t, 1, r.Rewrapped, "rotated-old, from its rotated key")
	require.Equal(t, 3, r.Skipped, "rotated-new (current on the re-read), twice, deleted")
	require.Empty(t, r.Failed)
	require.Equal(t, 2, st.attempts[rotatedOld.ID])
	require.Equal(t, 1, st.attempts[rotatedNew.ID], "current on the re-read: not written again")
	require.Equal(t, 2, st.attempts[twice.ID], "one retry, no more")

	f.requireKey(rotatedNew, k2, 2) // the rotation's key, not the rewrap of the old one
	require.Equal(t, plain(rotatedNew, 1), f.plain[rotatedNew.ID])
	f.requireKey(rotatedOld, k2, 2)
	require.Equal(t, plain(rotatedOld, 1), f.plain[rotatedOld.ID])
	f.requireKey(twice, k2, 1)
	require.Equal(t, plain(twice, 2), f.plain[twice.ID], "the second rotation stands")
	require.Equal(t, map[int32]int{1: 1, 2: 2}, r.Status.Versions)
	require.Equal(t, 1, r.Status.Outdated(), "twice is left for the next run")

	again, err := f.run(f.store, k2)
	require.NoError(t, err)
	require.Equal(t, 1, again.Rewrapped)
	require.Zero(t, again.Status.Outdated())
	f.requireKey(twice, k2, 2)
}

// unavailableStore fails ReplaceKey as a database that went away would.
type unavailableStore struct{ *memstore.Store }

func (unavailableStore) ReplaceKey(context.Context, string, string, []byte, store.EncryptedKey, time.Time) error {
	return fmt.Errorf("replacing the key: %w", store.ErrUnavailable)
}

// A store failure stops the run with what was done so far; the accounts
// are untouched and a rerun finishes the work.
func TestRewrapStopsOnStoreFailures(t *testing.T) {
	f := newRewrapFixture(t)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := keyring(t, v1), keyring(t, v1+","+v2)
	a := f.put("org", "a", k1)
	f.put("org", "current", k2)

	r, err := f.run(unavailableStore{f.store}, k2)
	require.ErrorIs(t, err, store.ErrUnavailable)
	require.ErrorContains(t, err, a.ID, "the error names the account")
	require.Zero(t, r.Rewrapped)
	f.requireKey(a, k1, 1)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = rewrap(ctx, ctxStore{f.store}, k2, slog.New(slog.DiscardHandler), time.Now)
	require.ErrorIs(t, err, context.Canceled)

	r, err = f.run(f.store, k2)
	require.NoError(t, err)
	require.Equal(t, 1, r.Rewrapped)
	require.Equal(t, 1, r.AlreadyCurrent)
}

// ctxStore honours ctx on ListOrganizations, as a database driver does.
type ctxStore struct{ *memstore.Store }

func (s ctxStore) ListOrganizations(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing organizations: %w", err)
	}
	return s.Store.ListOrganizations(ctx)
}

func TestKeyStatusCounts(t *testing.T) {
	f := newRewrapFixture(t)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := keyring(t, v1), keyring(t, v1+","+v2)
	f.put("org-a", "a1", k1)
	f.put("org-a", "a2", k2)
	f.put("org-b", "b1", k1)
	r, err := keyStatus(t.Context(), f.store, k2)
	require.NoError(t, err)
	require.Equal(t, KeyStatusReport{CurrentVersion: 2, KeyringVersions: []int32{1, 2}, Organizations: 2, Accounts: 3, Versions: map[int32]int{1: 2, 2: 1}, DefaultKeyVersions: map[int32]int{}}, r)
	require.Equal(t, 2, r.Outdated())
	require.Zero(t, r.Undecryptable())

	r, err = keyStatus(t.Context(), f.store, keyring(t, v2))
	require.NoError(t, err)
	require.Equal(t, 2, r.Undecryptable(), "retiring version 1 now would strand two keys")
}
