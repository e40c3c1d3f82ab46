package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// CreateAccount refuses the account past the limit, counts per
// organization, lets a deleted account make room, and answers a name the
// organization already has with ErrAlreadyExists even at the limit (a
// retried registration that was applied reports what it always did).
func testAccountLimit(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	const limit = 3
	var ids []string
	for i := range limit {
		a := newAccount(org, fmt.Sprintf("acct-%d", i))
		require.NoError(t, s.CreateAccount(ctx, a, limit))
		ids = append(ids, a.ID)
	}
	err := s.CreateAccount(ctx, newAccount(org, "one-too-many"), limit)
	require.ErrorIs(t, err, store.ErrLimitReached)
	require.NotErrorIs(t, err, store.ErrAlreadyExists)
	require.ErrorIs(t, s.CreateAccount(ctx, newAccount(org, "one-too-many"), limit-1), store.ErrLimitReached, "a lowered limit refuses too")

	dup := newAccount(org, "acct-0")
	require.ErrorIs(t, s.CreateAccount(ctx, dup, limit), store.ErrAlreadyExists, "a taken name at the limit")

	require.NoError(t, s.CreateAccount(ctx, newAccount(other, "acct-0"), limit), "another organization has its own count")
	require.NoError(t, s.CreateAccount(ctx, newAccount(org, "unlimited"), 0), "0 is no limit")

	list, err := s.ListAccounts(ctx, org)
	require.NoError(t, err)
	require.Len(t, list, limit+1)
	require.NotContains(t, names(list), "one-too-many")

	require.NoError(t, s.DeleteAccount(ctx, org, ids[0]))
	require.NoError(t, s.DeleteAccount(ctx, org, ids[1]))
	require.NoError(t, s.CreateAccount(ctx, newAccount(org, "room-made"), limit), "deleting makes room")
	require.ErrorIs(t, s.CreateAccount(ctx, newAccount(org, "again-too-many"), limit), store.ErrLimitReached)
}

// Concurrent registrations of one organization never take it past the
// limit together: exactly limit of them succeed, the rest are refused.
func testAccountLimitConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	org := newOrg()
	const limit, writers = 5, 24
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		created, denied int
	)
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			err := s.CreateAccount(ctx, newAccount(org, fmt.Sprintf("racer-%02d", i)), limit)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, store.ErrLimitReached):
				denied++
			default:
				t.Errorf("racer %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	require.Equal(t, limit, created)
	require.Equal(t, writers-limit, denied)
	list, err := s.ListAccounts(ctx, org)
	require.NoError(t, err)
	require.Len(t, list, limit)
}

func names(accounts []store.Account) []string {
	out := make([]string, len(accounts))
	for i, a := range accounts {
		out[i] = a.Name
	}
	return out
}
