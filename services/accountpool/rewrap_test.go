package accountpool_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// kek returns a keyring entry "<version>:<random 32 bytes>".
func kek(t *testing.T, version int) string {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return fmt.Sprintf("%d:%s", version, base64.StdEncoding.EncodeToString(b))
}

// TestRewrapOnPostgres walks the rotation of the key-encryption key as
// docs/security.md describes it: keys registered under version 1, a
// service restarted with versions 1 and 2, the rewrap while it serves,
// then version 1 retired. A key under a version the keyring lacks is
// reported and left alone.
func TestRewrapOnPostgres(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	v1, v2 := kek(t, 1), kek(t, 2)
	k1, k2 := v1, v1+","+v2
	ctx := t.Context()
	orgA, orgB := newOrg(), newOrg()
	keys := map[string]string{} // account id → API key
	orgs := map[string]string{} // account id → organization
	register := func(svc *running, org, name string) string {
		t.Helper()
		key := "sk-ant-api03-rewrap-" + name
		reg, err := svc.client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: name, ApiKey: key, Tier: "tier2"})
		require.NoError(t, err)
		require.EqualValues(t, 1, reg.GetAccount().GetKeyVersion())
		keys[reg.GetAccount().GetId()] = key
		orgs[reg.GetAccount().GetId()] = org
		return reg.GetAccount().GetId()
	}
	selectKey := func(svc *running, org, id string) (string, error) {
		sel, err := svc.client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, AllowedAccountIds: []string{id}})
		return sel.GetLease().GetApiKey(), err
	}

	first := serve(t, accountpool.Config{Keyring: k1, DatabaseURL: schema.AppURL})
	first.requireServing(t)
	alpha := register(first, orgA, "alpha")
	register(first, orgA, "bravo")
	register(first, orgB, "charlie")
	first.stop()
	// A key encrypted under a version that is in no keyring used below.
	stray := serve(t, accountpool.Config{Keyring: kek(t, 1), DatabaseURL: schema.AppURL})
	stray.requireServing(t)
	orphan := register(stray, orgB, "orphan")
	stray.stop()

	cfg := accountpool.RewrapConfig{DatabaseURL: schema.AppURL, Keyring: k2, Logger: slog.New(slog.DiscardHandler)}
	st, err := accountpool.KeyStatus(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, int32(2), st.CurrentVersion)
	require.Equal(t, 2, st.Organizations)
	require.Equal(t, map[int32]int{1: 4}, st.Versions)
	require.Equal(t, 4, st.Outdated())

	// The service runs with both versions while the rewrap goes on.
	serving := serve(t, accountpool.Config{Keyring: k2, DatabaseURL: schema.AppURL})
	serving.requireServing(t)
	got, err := selectKey(serving, orgA, alpha)
	require.NoError(t, err)
	require.Equal(t, keys[alpha], got)

	logs := &bytes.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := accountpool.Rewrap(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, 3, r.Rewrapped)
	require.Zero(t, r.AlreadyCurrent)
	require.Zero(t, r.Skipped)
	require.Len(t, r.Failed, 1, "the orphan's version 1 is another key: it does not decrypt")
	require.Equal(t, orphan, r.Failed[0].AccountID)
	require.Equal(t, orgB, r.Failed[0].OrganizationID)
	require.Equal(t, map[int32]int{1: 1, 2: 3}, r.Status.Versions)
	for id, key := range keys {
		require.NotContains(t, logs.String(), key, "the log holds the key of %s", id)
		require.NotContains(t, fmt.Sprintf("%+v", r), key)
	}
	require.Contains(t, logs.String(), orphan)

	// The serving process heard of every change and hands out the same key.
	require.Eventually(t, func() bool {
		a, err := serving.client.GetAccount(ctx, &accountpoolv1.GetAccountRequest{OrganizationId: orgA, AccountId: alpha})
		return err == nil && a.GetAccount().GetKeyVersion() == 2
	}, 10*time.Second, 10*time.Millisecond, "the view reloads with the rewrapped key")
	got, err = selectKey(serving, orgA, alpha)
	require.NoError(t, err)
	require.Equal(t, keys[alpha], got)

	// Version 1 retired: every rewrapped key still works.
	retired := serve(t, accountpool.Config{Keyring: v2, DatabaseURL: schema.AppURL})
	retired.requireServing(t)
	for id, key := range keys {
		if id == orphan {
			continue
		}
		got, err := selectKey(retired, orgs[id], id)
		require.NoError(t, err, "account %s after version 1 is retired", id)
		require.Equal(t, key, got)
	}

	again, err := accountpool.Rewrap(ctx, cfg)
	require.NoError(t, err)
	require.Zero(t, again.Rewrapped, "nothing left to rewrap")
	require.Equal(t, 3, again.AlreadyCurrent)
	require.Len(t, again.Failed, 1)
}

func TestRewrapConfiguration(t *testing.T) {
	keyring := kek(t, 1)
	_, err := accountpool.Rewrap(t.Context(), accountpool.RewrapConfig{Keyring: keyring})
	require.ErrorContains(t, err, "SWITCHYARD_DATABASE_URL")
	_, err = accountpool.KeyStatus(t.Context(), accountpool.RewrapConfig{DatabaseURL: "postgres://127.0.0.1:1/db"})
	require.ErrorContains(t, err, "keyring is required")
	_, err = accountpool.Rewrap(t.Context(), accountpool.RewrapConfig{DatabaseURL: "postgres://127.0.0.1:1/db", Keyring: "1:short"})
	require.ErrorContains(t, err, "keyring entry 1")

	schema := pgtest.NewSchema(t, migrations.AccountPool)
	pgtest.Down(t, schema.OwnerURL, migrations.AccountPool)
	_, err = accountpool.Rewrap(t.Context(), accountpool.RewrapConfig{DatabaseURL: schema.AppURL, Keyring: keyring, Logger: slog.New(slog.DiscardHandler)})
	require.ErrorContains(t, err, "switchyard migrate up", "a schema behind this binary is refused")
}
