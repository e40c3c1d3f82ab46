// Package storetest is the conformance suite every store.Store backend must
// pass. It uses only the Store interface and fresh random organization and
// account ids in every test, so it runs unchanged against a shared
// PostgreSQL database.
package storetest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Run runs the suite. newStore returns a ready store; it may return the same
// store for every test, since tests never share ids.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"AccountCRUD", testAccountCRUD},
		{"AccountNotFound", testAccountNotFound},
		{"AccountIDNotAUUIDIsNotFound", testAccountIDNotUUID},
		{"AccountNameUniquePerOrganization", testNameUnique},
		{"AccountLimit", testAccountLimit},
		{"AccountLimitConcurrent", testAccountLimitConcurrent},
		{"AccountListOrderedByName", testListOrder},
		{"AccountUpdatePartialAndKeyRotation", testUpdatePartial},
		{"AccountOrganizationIsolation", testAccountIsolation},
		{"ReplaceKeyCompareAndSwap", testReplaceKey},
		{"ReplaceKeyNotFound", testReplaceKeyNotFound},
		{"ReplaceKeyConcurrentOneWins", testReplaceKeyConcurrent},
		{"ListOrganizations", testListOrganizations},
		{"SettingsDefaultsAndUpdate", testSettings},
		{"SettingsTaskLimits", testSettingsTaskLimits},
		{"DefaultKeyLifecycle", testDefaultKeyLifecycle},
		{"DefaultKeyCompareAndSwap", testDefaultKeyCompareAndSwap},
		{"DefaultKeyOrganizationIsolation", testDefaultKeyIsolation},
		{"DefaultKeyListsItsOrganization", testDefaultKeyListsOrganization},
		{"UsageInsertIdempotent", testUsageIdempotent},
		{"UsageInsertIdempotentConcurrent", testUsageIdempotentConcurrent},
		{"UsageTotals", testUsageTotals},
		{"UsageLegacyRowsHaveNoAccount", testUsageLegacy},
		{"UsagePaginationNewestFirst", testUsagePagination},
		{"UsageOrganizationIsolation", testUsageIsolation},
		{"UsageTotalsMatchBruteForce", testUsageTotalsMatchBruteForce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// base is a fixed instant well inside any backend's range; tests derive
// their timestamps from it so assertions do not depend on the wall clock.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func newOrg() string { return "org-" + uuid.NewString() }

func newAccount(org, name string) store.Account {
	return store.Account{
		ID:             uuid.NewString(),
		OrganizationID: org,
		Name:           name,
		Tier:           "tier2",
		Status:         store.StatusActive,
		Weight:         1,
		Priority:       3,
		QuotaGroup:     "group-a",
		Labels:         map[string]string{"team": "search", "env": "prod"},
		KeyCiphertext:  []byte{1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef},
		KeyVersion:     1,
		CreateTime:     base,
		UpdateTime:     base,
	}
}

// norm makes values from different backends comparable: times in UTC at
// microsecond precision, empty maps and slices as nil.
func norm(a store.Account) store.Account {
	a.CreateTime = store.Normalize(a.CreateTime)
	a.UpdateTime = store.Normalize(a.UpdateTime)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(a.KeyCiphertext) == 0 {
		a.KeyCiphertext = nil
	}
	return a
}

func normUsage(r store.UsageRecord) store.UsageRecord {
	r.CreateTime = store.Normalize(r.CreateTime)
	return r
}

func testAccountCRUD(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	a := newAccount(org, "primary")
	require.NoError(t, s.CreateAccount(ctx, a, 0))

	got, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, norm(a), norm(got))

	list, err := s.ListAccounts(ctx, org)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, norm(a), norm(list[0]))

	// Returned values are copies: changing them changes nothing stored.
	got.Labels["team"] = "mutated"
	got.KeyCiphertext[0] = 0xff
	again, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, norm(a), norm(again))

	status := store.StatusDisabled
	updated, err := s.UpdateAccount(ctx, org, a.ID, store.AccountUpdate{Status: &status, UpdateTime: base.Add(time.Minute)})
	require.NoError(t, err)
	require.Equal(t, store.StatusDisabled, updated.Status)
	require.True(t, base.Add(time.Minute).Truncate(time.Microsecond).Equal(updated.UpdateTime))
	require.True(t, base.Truncate(time.Microsecond).Equal(updated.CreateTime), "create time must not change on update")

	require.NoError(t, s.DeleteAccount(ctx, org, a.ID))
	_, err = s.GetAccount(ctx, org, a.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	list, err = s.ListAccounts(ctx, org)
	require.NoError(t, err)
	require.Empty(t, list)
	require.ErrorIs(t, s.DeleteAccount(ctx, org, a.ID), store.ErrNotFound, "a second delete finds nothing")
}

func testAccountNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	id := uuid.NewString()
	_, err := s.GetAccount(ctx, org, id)
	require.ErrorIs(t, err, store.ErrNotFound)
	name := "x"
	_, err = s.UpdateAccount(ctx, org, id, store.AccountUpdate{Name: &name, UpdateTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.DeleteAccount(ctx, org, id), store.ErrNotFound)
	list, err := s.ListAccounts(ctx, org)
	require.NoError(t, err)
	require.Empty(t, list)
}

func testAccountIDNotUUID(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	require.NoError(t, s.CreateAccount(ctx, newAccount(org, "real"), 0))
	for _, id := range []string{"acct-1", "", "00000000-0000-0000-0000"} {
		_, err := s.GetAccount(ctx, org, id)
		require.ErrorIs(t, err, store.ErrNotFound, "id %q", id)
		name := "x"
		_, err = s.UpdateAccount(ctx, org, id, store.AccountUpdate{Name: &name, UpdateTime: base})
		require.ErrorIs(t, err, store.ErrNotFound, "id %q", id)
		require.ErrorIs(t, s.DeleteAccount(ctx, org, id), store.ErrNotFound, "id %q", id)
	}
	totals, err := s.SumUsage(ctx, org, store.UsageFilter{AccountID: "acct-1"})
	require.NoError(t, err)
	require.Empty(t, totals)
	rows, _, err := s.ListUsage(ctx, org, store.UsageFilter{AccountID: "acct-1"}, 10, nil)
	require.NoError(t, err)
	require.Empty(t, rows)
}

func testNameUnique(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	a := newAccount(org, "main")
	require.NoError(t, s.CreateAccount(ctx, a, 0))

	err := s.CreateAccount(ctx, newAccount(org, "main"), 0)
	require.ErrorIs(t, err, store.ErrAlreadyExists, "same name in the same organization")

	dupID := newAccount(other, "unrelated")
	dupID.ID = a.ID
	require.ErrorIs(t, s.CreateAccount(ctx, dupID, 0), store.ErrAlreadyExists, "an id is unique across organizations")

	require.NoError(t, s.CreateAccount(ctx, newAccount(other, "main"), 0), "the same name in another organization is fine")
	require.NoError(t, s.CreateAccount(ctx, newAccount(org, "Main"), 0), "names compare byte for byte")

	b := newAccount(org, "backup")
	require.NoError(t, s.CreateAccount(ctx, b, 0))
	taken := "main"
	_, err = s.UpdateAccount(ctx, org, b.ID, store.AccountUpdate{Name: &taken, UpdateTime: base})
	require.ErrorIs(t, err, store.ErrAlreadyExists, "rename onto another account's name")
	got, err := s.GetAccount(ctx, org, b.ID)
	require.NoError(t, err)
	require.Equal(t, "backup", got.Name, "a failed rename changes nothing")

	same := "backup"
	_, err = s.UpdateAccount(ctx, org, b.ID, store.AccountUpdate{Name: &same, UpdateTime: base})
	require.NoError(t, err, "renaming an account to its own name is not a conflict")

	require.NoError(t, s.DeleteAccount(ctx, org, a.ID))
	require.NoError(t, s.CreateAccount(ctx, newAccount(org, "main"), 0), "a deleted account's name is free again")
}

func testListOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	for _, n := range []string{"charlie", "alpha", "bravo", "Zulu"} {
		require.NoError(t, s.CreateAccount(ctx, newAccount(org, n), 0))
	}
	list, err := s.ListAccounts(ctx, org)
	require.NoError(t, err)
	var names []string
	for _, a := range list {
		names = append(names, a.Name)
	}
	require.Equal(t, []string{"Zulu", "alpha", "bravo", "charlie"}, names)
}

func testUpdatePartial(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	a := newAccount(org, "acct")
	require.NoError(t, s.CreateAccount(ctx, a, 0))

	tier, weight, prio, group := "scale", int32(5), int32(-2), ""
	got, err := s.UpdateAccount(ctx, org, a.ID, store.AccountUpdate{
		Tier: &tier, Weight: &weight, Priority: &prio, QuotaGroup: &group, UpdateTime: base.Add(time.Hour),
	})
	require.NoError(t, err)
	want := a
	want.Tier, want.Weight, want.Priority, want.QuotaGroup = tier, weight, prio, group
	want.UpdateTime = base.Add(time.Hour)
	require.Equal(t, norm(want), norm(got))

	stored, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, norm(want), norm(stored))

	got, err = s.UpdateAccount(ctx, org, a.ID, store.AccountUpdate{
		Key: &store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 2, 9, 9}, Version: 2}, UpdateTime: base.Add(2 * time.Hour),
	})
	require.NoError(t, err)
	require.Equal(t, []byte{1, 0, 0, 0, 2, 9, 9}, got.KeyCiphertext)
	require.Equal(t, int32(2), got.KeyVersion)
	require.Equal(t, "scale", got.Tier, "fields not in the update stay")
}

func testAccountIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	a := newAccount(org, "mine")
	require.NoError(t, s.CreateAccount(ctx, a, 0))

	_, err := s.GetAccount(ctx, other, a.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
	name, status := "stolen", store.StatusDisabled
	_, err = s.UpdateAccount(ctx, other, a.ID, store.AccountUpdate{Name: &name, Status: &status, UpdateTime: base})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.DeleteAccount(ctx, other, a.ID), store.ErrNotFound)
	list, err := s.ListAccounts(ctx, other)
	require.NoError(t, err)
	require.Empty(t, list)

	got, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, norm(a), norm(got), "another organization's calls changed nothing")
}

// testReplaceKey: the key is replaced only over the ciphertext the caller
// read, and a rotation in between wins over the stale replacement.
func testReplaceKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	a := newAccount(org, "acct")
	require.NoError(t, s.CreateAccount(ctx, a, 0))

	v2 := store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 2, 0xca, 0xfe}, Version: 2}
	require.NoError(t, s.ReplaceKey(ctx, org, a.ID, a.KeyCiphertext, v2, base.Add(time.Hour)))
	got, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	want := a
	want.KeyCiphertext, want.KeyVersion, want.UpdateTime = v2.Ciphertext, v2.Version, base.Add(time.Hour)
	require.Equal(t, norm(want), norm(got), "ciphertext, version and update time change; nothing else")

	// The same replacement again is a conflict: the stored key is no longer
	// the one it names.
	err = s.ReplaceKey(ctx, org, a.ID, a.KeyCiphertext, store.EncryptedKey{Ciphertext: []byte{9}, Version: 3}, base.Add(2*time.Hour))
	require.ErrorIs(t, err, store.ErrConflict)
	require.NotErrorIs(t, err, store.ErrNotFound)

	// A rotation after the read: the replacement computed from the old
	// ciphertext must not overwrite it.
	rotated := store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 2, 0x0d, 0xd0}, Version: 2}
	_, err = s.UpdateAccount(ctx, org, a.ID, store.AccountUpdate{Key: &rotated, UpdateTime: base.Add(3 * time.Hour)})
	require.NoError(t, err)
	err = s.ReplaceKey(ctx, org, a.ID, v2.Ciphertext, store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 3, 1}, Version: 3}, base.Add(4*time.Hour))
	require.ErrorIs(t, err, store.ErrConflict)
	got, err = s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, rotated.Ciphertext, got.KeyCiphertext, "the rotated key stays")
	require.Equal(t, rotated.Version, got.KeyVersion)
	require.True(t, base.Add(3*time.Hour).Truncate(time.Microsecond).Equal(got.UpdateTime), "a conflict writes nothing")

	// Returned and passed slices are copies.
	next := store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 3, 7}, Version: 3}
	require.NoError(t, s.ReplaceKey(ctx, org, a.ID, got.KeyCiphertext, next, base.Add(5*time.Hour)))
	next.Ciphertext[5] = 0xff
	got, err = s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, []byte{1, 0, 0, 0, 3, 7}, got.KeyCiphertext)
	require.Equal(t, int32(3), got.KeyVersion)
}

func testReplaceKeyNotFound(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	a := newAccount(org, "mine")
	require.NoError(t, s.CreateAccount(ctx, a, 0))
	key := store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 2, 5}, Version: 2}
	for _, id := range []string{uuid.NewString(), "acct-1", ""} {
		err := s.ReplaceKey(ctx, org, id, a.KeyCiphertext, key, base)
		require.ErrorIs(t, err, store.ErrNotFound, "id %q", id)
	}
	err := s.ReplaceKey(ctx, other, a.ID, a.KeyCiphertext, key, base)
	require.ErrorIs(t, err, store.ErrNotFound, "another organization's account is not found, even with the right ciphertext")
	got, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, norm(a), norm(got), "nothing changed")

	require.NoError(t, s.DeleteAccount(ctx, org, a.ID))
	require.ErrorIs(t, s.ReplaceKey(ctx, org, a.ID, a.KeyCiphertext, key, base), store.ErrNotFound)
}

// testReplaceKeyConcurrent: replacements racing over the same old
// ciphertext: exactly one wins, every other sees ErrConflict, and the
// stored key is the winner's.
func testReplaceKeyConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	a := newAccount(org, "raced")
	require.NoError(t, s.CreateAccount(ctx, a, 0))
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := store.EncryptedKey{Ciphertext: []byte{1, 0, 0, 0, 2, byte(i)}, Version: 2}
			errs[i] = s.ReplaceKey(ctx, org, a.ID, a.KeyCiphertext, key, base.Add(time.Duration(i)*time.Second))
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "two replacements over the same ciphertext both won")
			winner = i
			continue
		}
		require.ErrorIs(t, err, store.ErrConflict, "replacement %d", i)
	}
	require.NotEqual(t, -1, winner, "one replacement wins")
	got, err := s.GetAccount(ctx, org, a.ID)
	require.NoError(t, err)
	require.Equal(t, []byte{1, 0, 0, 0, 2, byte(winner)}, got.KeyCiphertext)
}

func testListOrganizations(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Ids that sort differently by bytes than by a locale.
	suffix := uuid.NewString()
	orgs := []string{"b-" + suffix, "B-" + suffix, "a-" + suffix}
	for _, org := range orgs {
		require.NoError(t, s.CreateAccount(ctx, newAccount(org, "one"), 0))
		require.NoError(t, s.CreateAccount(ctx, newAccount(org, "two"), 0))
	}
	settingsOnly := newOrg()
	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: settingsOnly, SelectionStrategy: store.StrategyRoundRobin, UpdateTime: base}))

	got, err := s.ListOrganizations(ctx)
	require.NoError(t, err)
	require.True(t, slices.IsSorted(got), "byte order: %q", got)
	require.Len(t, slices.Compact(slices.Clone(got)), len(got), "no duplicates")
	for _, org := range orgs {
		require.Contains(t, got, org)
	}
	require.NotContains(t, got, settingsOnly, "an organization without accounts")
	require.NotContains(t, got, newOrg())
}

func testSettings(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	got, err := s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, store.DefaultSettings(org), got)
	require.Equal(t, store.StrategyLeastLoaded, got.SelectionStrategy)
	require.True(t, got.UpdateTime.IsZero())

	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: store.StrategyRoundRobin, UpdateTime: base}))
	got, err = s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, store.StrategyRoundRobin, got.SelectionStrategy)
	require.Equal(t, org, got.OrganizationID)
	require.True(t, base.Truncate(time.Microsecond).Equal(got.UpdateTime))

	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: store.StrategyLeastLoaded, UpdateTime: base.Add(time.Second)}))
	got, err = s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, store.StrategyLeastLoaded, got.SelectionStrategy)

	otherGot, err := s.GetSettings(ctx, other)
	require.NoError(t, err)
	require.Equal(t, store.DefaultSettings(other), otherGot, "settings of one organization never leak into another")

	for i, strategy := range store.Strategies() {
		require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: strategy, UpdateTime: base.Add(time.Duration(i+2) * time.Second)}))
		got, err = s.GetSettings(ctx, org)
		require.NoError(t, err)
		require.Equal(t, strategy, got.SelectionStrategy, "every strategy round-trips")
	}
}

func usage(org, account, requestID string, attempt int32, at time.Time) store.UsageRecord {
	return store.UsageRecord{
		ID:                  uuid.NewString(),
		OrganizationID:      org,
		AccountID:           account,
		AccountName:         "acct-" + account[:8],
		RequestID:           requestID,
		Attempt:             attempt,
		Outcome:             store.OutcomeSuccess,
		Model:               "claude-sonnet-4-5",
		Category:            "quick",
		SessionID:           "sess",
		UserID:              "user",
		InputTokens:         100,
		OutputTokens:        20,
		CacheReadTokens:     5,
		CacheCreationTokens: 7,
		CostUSD:             0.25,
		HTTPStatus:          200,
		UpstreamRequestID:   "req_up",
		DurationMS:          1200,
		CreateTime:          at,
	}
}

func testUsageIdempotent(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	acct := uuid.NewString()
	first := usage(org, acct, "req-1", 1, base)
	got, err := s.InsertUsage(ctx, first)
	require.NoError(t, err)
	require.Equal(t, normUsage(first), normUsage(got))

	second := usage(org, acct, "req-1", 1, base.Add(time.Second))
	second.InputTokens = 999_999
	existing, err := s.InsertUsage(ctx, second)
	require.ErrorIs(t, err, store.ErrDuplicate)
	require.Equal(t, normUsage(first), normUsage(existing), "the duplicate insert returns the existing row")

	_, err = s.InsertUsage(ctx, usage(org, acct, "req-1", 2, base))
	require.NoError(t, err, "another attempt of the same request is a new row")

	// The same (request id, attempt) with another upstream request id is a
	// second real call (the request ran again): it is recorded, not dropped.
	again := usage(org, acct, "req-1", 1, base.Add(2*time.Second))
	again.UpstreamRequestID = "req_upstream_second_call"
	got, err = s.InsertUsage(ctx, again)
	require.NoError(t, err, "a second upstream call is a new row")
	require.Equal(t, "req_upstream_second_call", got.UpstreamRequestID)
	_, err = s.InsertUsage(ctx, again)
	require.ErrorIs(t, err, store.ErrDuplicate, "and its retry is deduplicated")

	rows, next, err := s.ListUsage(ctx, org, store.UsageFilter{}, 10, nil)
	require.NoError(t, err)
	require.Nil(t, next)
	require.Len(t, rows, 3)
	for _, r := range rows {
		require.NotEqual(t, int64(999_999), r.InputTokens, "a duplicate insert changed a row")
	}
}

func testUsageIdempotentConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	acct := uuid.NewString()
	const n = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		ids     = map[string]bool{}
		errs    []error
	)
	for i := range n {
		wg.Go(func() {
			r := usage(org, acct, "req-race", 1, base.Add(time.Duration(i)*time.Millisecond))
			got, err := s.InsertUsage(ctx, r)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, store.ErrDuplicate):
			default:
				errs = append(errs, err)
			}
			ids[got.ID] = true
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, 1, created, "exactly one concurrent insert wins")
	require.Len(t, ids, 1, "every caller sees the same row")

	rows, _, err := s.ListUsage(ctx, org, store.UsageFilter{}, 100, nil)
	require.NoError(t, err)
	require.Len(t, rows, 1)
}

func testUsageTotals(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	a, b := uuid.NewString(), uuid.NewString()
	insert := func(r store.UsageRecord) {
		t.Helper()
		_, err := s.InsertUsage(ctx, r)
		require.NoError(t, err)
	}
	// Account a: two successes and one failure inside the window, one
	// success before it and one exactly at its (exclusive) end.
	r := usage(org, a, "r1", 1, base)
	r.AccountName = "alpha-old"
	insert(r)
	r = usage(org, a, "r2", 1, base.Add(time.Minute))
	r.AccountName = "alpha"
	insert(r)
	fail := usage(org, a, "r3", 1, base.Add(30*time.Second))
	fail.Outcome, fail.InputTokens, fail.OutputTokens, fail.CacheReadTokens, fail.CacheCreationTokens, fail.CostUSD, fail.HTTPStatus =
		store.OutcomeUpstreamError, 0, 0, 0, 0, 0, 529
	fail.AccountName = "alpha-old"
	insert(fail)
	insert(usage(org, a, "before", 1, base.Add(-time.Second)))
	insert(usage(org, a, "at-end", 1, base.Add(time.Hour)))
	// Account b: one success inside.
	rb := usage(org, b, "r4", 1, base.Add(2*time.Minute))
	rb.AccountName = "bravo"
	rb.InputTokens = 1000
	rb.CostUSD = 1.5
	insert(rb)

	window := store.UsageFilter{Start: base, End: base.Add(time.Hour)}
	totals, err := s.SumUsage(ctx, org, window)
	require.NoError(t, err)
	require.Len(t, totals, 2)

	ta, tb := totals[0], totals[1]
	require.Equal(t, a, ta.AccountID)
	require.Equal(t, "alpha", ta.AccountName, "the name on the newest row")
	require.Equal(t, int64(3), ta.Requests)
	require.Equal(t, int64(1), ta.FailedRequests)
	require.Equal(t, int64(200), ta.InputTokens)
	require.Equal(t, int64(40), ta.OutputTokens)
	require.Equal(t, int64(10), ta.CacheReadTokens)
	require.Equal(t, int64(14), ta.CacheCreationTokens)
	require.InDelta(t, 0.5, ta.CostUSD, 1e-9)

	require.Equal(t, b, tb.AccountID)
	require.Equal(t, "bravo", tb.AccountName)
	require.Equal(t, int64(1), tb.Requests)
	require.Equal(t, int64(0), tb.FailedRequests)
	require.Equal(t, int64(1000), tb.InputTokens)
	require.InDelta(t, 1.5, tb.CostUSD, 1e-9)

	only, err := s.SumUsage(ctx, org, store.UsageFilter{Start: base, End: base.Add(time.Hour), AccountID: b})
	require.NoError(t, err)
	require.Len(t, only, 1)
	require.Equal(t, b, only[0].AccountID)

	all, err := s.SumUsage(ctx, org, store.UsageFilter{})
	require.NoError(t, err)
	var requests int64
	for _, tot := range all {
		requests += tot.Requests
	}
	require.Equal(t, int64(6), requests, "no bounds: every row")

	none, err := s.SumUsage(ctx, org, store.UsageFilter{Start: base.Add(48 * time.Hour)})
	require.NoError(t, err)
	require.Empty(t, none)
}

// testUsageLegacy: legacy-mode rows (no pool account) are stored, read and
// summed under the empty account id, separately from every account and
// one total per key name: the organization's default key and the
// environment key are billed apart.
func testUsageLegacy(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	acct := uuid.NewString()
	legacy := usage(org, acct, "legacy-1", 1, base)
	legacy.AccountID, legacy.AccountName = "", "environment"
	got, err := s.InsertUsage(ctx, legacy)
	require.NoError(t, err)
	require.Equal(t, normUsage(legacy), normUsage(got))
	_, err = s.InsertUsage(ctx, usage(org, acct, "pooled-1", 1, base))
	require.NoError(t, err)
	own := usage(org, acct, "legacy-own", 1, base)
	own.AccountID, own.AccountName = "", "default"
	_, err = s.InsertUsage(ctx, own)
	require.NoError(t, err)

	rows, _, err := s.ListUsage(ctx, org, store.UsageFilter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, rows, 3)
	var found bool
	for _, r := range rows {
		if r.ID == legacy.ID {
			found = true
			require.Equal(t, normUsage(legacy), normUsage(r))
		}
	}
	require.True(t, found, "the legacy row is listed")

	totals, err := s.SumUsage(ctx, org, store.UsageFilter{})
	require.NoError(t, err)
	require.Len(t, totals, 3)
	require.Equal(t, "", totals[1].AccountID, "ordered by name: acct-…, default, environment")
	require.Equal(t, "default", totals[1].AccountName)
	require.Equal(t, int64(1), totals[1].Requests)
	require.Equal(t, "", totals[2].AccountID)
	require.Equal(t, "environment", totals[2].AccountName)
	require.Equal(t, int64(1), totals[2].Requests)

	only, err := s.SumUsage(ctx, org, store.UsageFilter{AccountID: acct})
	require.NoError(t, err)
	require.Len(t, only, 1, "an account filter leaves legacy rows out")
	require.Equal(t, acct, only[0].AccountID)
}

func testUsagePagination(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	acct, otherAcct := uuid.NewString(), uuid.NewString()
	const n = 23
	want := map[string]bool{}
	for i := range n {
		// Groups of three rows share a timestamp, so the id tie-break
		// matters.
		r := usage(org, acct, fmt.Sprintf("req-%d", i), 1, base.Add(time.Duration(i/3)*time.Second))
		_, err := s.InsertUsage(ctx, r)
		require.NoError(t, err)
		want[r.ID] = true
	}
	_, err := s.InsertUsage(ctx, usage(org, otherAcct, "other", 1, base))
	require.NoError(t, err)

	seen := map[string]bool{}
	var (
		cursor *store.UsageCursor
		prev   *store.UsageRecord
		pages  int
	)
	for {
		rows, next, err := s.ListUsage(ctx, org, store.UsageFilter{AccountID: acct}, 5, cursor)
		require.NoError(t, err)
		require.LessOrEqual(t, len(rows), 5)
		pages++
		if pages == 2 {
			// A row written between pages is newer than every cursor and
			// must not shift later pages.
			_, err := s.InsertUsage(ctx, usage(org, acct, "late", 1, base.Add(time.Hour)))
			require.NoError(t, err)
		}
		for i := range rows {
			r := rows[i]
			require.False(t, seen[r.ID], "row %s returned twice", r.ID)
			seen[r.ID] = true
			if prev != nil {
				newer := prev.CreateTime.After(r.CreateTime) || (prev.CreateTime.Equal(r.CreateTime) && prev.ID > r.ID)
				require.True(t, newer, "rows must be newest first")
			}
			prev = &r
		}
		if next == nil {
			break
		}
		cursor = next
		require.Less(t, pages, 100, "pagination does not terminate")
	}
	require.Equal(t, want, seen, "every row exactly once, no gaps")
	require.Equal(t, int(math.Ceil(float64(n)/5)), pages)

	rows, next, err := s.ListUsage(ctx, org, store.UsageFilter{Start: base.Add(8 * time.Second)}, 50, nil)
	require.NoError(t, err)
	require.Nil(t, next)
	require.Len(t, rows, 1, "only the late row is at or after the start")
	require.Equal(t, "late", rows[0].RequestID)
}

func testUsageIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	acct := uuid.NewString()
	_, err := s.InsertUsage(ctx, usage(org, acct, "req-shared", 1, base))
	require.NoError(t, err)

	rows, _, err := s.ListUsage(ctx, other, store.UsageFilter{}, 10, nil)
	require.NoError(t, err)
	require.Empty(t, rows)
	totals, err := s.SumUsage(ctx, other, store.UsageFilter{AccountID: acct})
	require.NoError(t, err)
	require.Empty(t, totals)

	_, err = s.InsertUsage(ctx, usage(other, acct, "req-shared", 1, base))
	require.NoError(t, err, "(request id, attempt) is unique per organization, not globally")

	rows, _, err = s.ListUsage(ctx, org, store.UsageFilter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, rows, 1)
}
