package pgstore

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func account(org, name string) store.Account {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	return store.Account{
		ID: uuid.NewString(), OrganizationID: org, Name: name, Tier: "tier1", Status: store.StatusActive, Weight: 1,
		KeyCiphertext: []byte{1}, KeyVersion: 1, CreateTime: now, UpdateTime: now,
	}
}

// TestWatchChanges: the feed reports every committed change by
// organization, reports AllOrganizations when it (re)connects, survives
// silent periods (pings), reconnects after its backend is killed, and
// ends with its context.
func TestWatchChanges(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	// The watching store's pool has a unique application name and is never
	// used for queries (a pgxpool connects lazily), so the feed's
	// connection is the only backend with that name. Changes come from
	// another store, as they would from another process.
	appName := "watch-" + uuid.NewString()[:8]
	u, err := url.Parse(schema.AppURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()
	lazy, err := pgxpool.New(t.Context(), u.String())
	require.NoError(t, err)
	t.Cleanup(lazy.Close)
	watcher := New(lazy, Config{Logger: discard(), WatchPing: 50 * time.Millisecond})
	t.Cleanup(watcher.Close)
	s := New(dial(t, schema.AppURL), Config{Logger: discard()})
	t.Cleanup(s.Close)
	owner := dial(t, schema.OwnerURL)
	feedQuery := func() string {
		var query string
		if err := owner.QueryRow(t.Context(), `SELECT query FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&query); err != nil {
			return err.Error()
		}
		return query
	}

	// pg_notify is database-wide: tests of other packages running at the
	// same time on the same database notify the same channel. Only this
	// test's organizations (and the feed's own AllOrganizations) count.
	orgA, orgB := "org-"+uuid.NewString(), "org-"+uuid.NewString()
	changes := make(chan string, 100)
	ctx, cancel := context.WithCancel(t.Context())
	returned := make(chan error, 1)
	go func() {
		returned <- watcher.WatchChanges(ctx, func(org string) {
			if org == orgA || org == orgB || org == store.AllOrganizations {
				changes <- org
			}
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case org := <-changes:
			return org
		case <-time.After(10 * time.Second):
			t.Fatal("no notification within 10s")
			return ""
		}
	}
	require.Equal(t, store.AllOrganizations, next(), "connecting reports that anything may have changed")

	a := account(orgA, "alpha")
	require.NoError(t, s.CreateAccount(ctx, a, 0))
	require.Equal(t, orgA, next())
	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: orgB, SelectionStrategy: store.StrategyRoundRobin, UpdateTime: a.CreateTime}))
	require.Equal(t, orgB, next())
	disabled := store.StatusDisabled
	_, err = s.UpdateAccount(ctx, orgA, a.ID, store.AccountUpdate{Status: &disabled, UpdateTime: a.CreateTime})
	require.NoError(t, err)
	require.Equal(t, orgA, next())
	// Default keys are part of the view: every write to one notifies.
	dk := store.DefaultKey{OrganizationID: orgB, Ciphertext: []byte{1, 2}, KeyVersion: 1, UpdateTime: a.CreateTime}
	require.NoError(t, s.PutDefaultKey(ctx, dk))
	require.Equal(t, orgB, next(), "default key set")
	require.NoError(t, s.InvalidateDefaultKey(ctx, orgB, dk.Ciphertext, a.CreateTime))
	require.Equal(t, orgB, next(), "default key marked invalid")
	require.NoError(t, s.ReplaceDefaultKey(ctx, orgB, dk.Ciphertext, store.EncryptedKey{Ciphertext: []byte{3}, Version: 2}, a.CreateTime))
	require.Equal(t, orgB, next(), "default key re-encrypted")
	require.NoError(t, s.DeleteDefaultKey(ctx, orgB))
	require.Equal(t, orgB, next(), "default key cleared")
	// The ledger is not a view anyone caches: it notifies nothing.
	_, err = s.InsertUsage(ctx, usageRow(orgA, "r", 1))
	require.NoError(t, err)

	// Silence longer than WatchPing: the feed pings and stays usable.
	require.Eventually(t, func() bool { return feedQuery() == "-- ping" }, 10*time.Second, 10*time.Millisecond, "the silent feed is pinged")
	require.NoError(t, s.DeleteAccount(ctx, orgA, a.ID))
	require.Equal(t, orgA, next(), "notifications still arrive after pings")

	// Kill the feed's backend: it reconnects and reports that anything
	// may have changed meanwhile.
	var killed int
	require.NoError(t, owner.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1`, appName).Scan(&killed))
	require.Equal(t, 1, killed)
	require.Equal(t, store.AllOrganizations, next(), "reconnecting reports that anything may have changed")
	require.NoError(t, s.CreateAccount(ctx, account(orgB, "bravo"), 0))
	require.Equal(t, orgB, next(), "the new connection listens")

	cancel()
	select {
	case err := <-returned:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("WatchChanges did not return after its context ended")
	}
}
