package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// kekEntry returns a keyring entry "<version>:<random 32 bytes>".
func kekEntry(t *testing.T, version int) string {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return fmt.Sprintf("%d:%s", version, base64.StdEncoding.EncodeToString(b))
}

// registerUnder registers one account per name in org through an
// AccountPool on dbURL running with keyring, and stops it.
func registerUnder(t *testing.T, dbURL, keyring, org string, names ...string) {
	t.Helper()
	withAccountPool(t, dbURL, keyring, func(ctx context.Context, client accountpoolv1.AccountPoolServiceClient) {
		for _, name := range names {
			reg, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: name, ApiKey: "sk-ant-api03-keys-" + name, Tier: "tier2"})
			require.NoError(t, err)
			require.EqualValues(t, 1, reg.GetAccount().GetKeyVersion())
		}
	})
}

// setDefaultKeyUnder sets org's default key through an AccountPool on
// dbURL running with keyring, and stops it.
func setDefaultKeyUnder(t *testing.T, dbURL, keyring, org string) {
	t.Helper()
	withAccountPool(t, dbURL, keyring, func(ctx context.Context, client accountpoolv1.AccountPoolServiceClient) {
		resp, err := client.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: org, ApiKey: "sk-ant-api03-keys-default-" + org})
		require.NoError(t, err)
		require.EqualValues(t, 1, resp.GetSettings().GetDefaultKey().GetKeyVersion())
	})
}

// withAccountPool runs fn against an AccountPool on dbURL running with
// keyring, then stops it.
func withAccountPool(t *testing.T, dbURL, keyring string, fn func(ctx context.Context, client accountpoolv1.AccountPoolServiceClient)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := accountpool.New(ctx, accountpool.Config{
		Addr: "127.0.0.1:0", Keyring: keyring, DatabaseURL: dbURL, InsecureNoAuth: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	conn, err := grpc.NewClient(svc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	// The gate opens once the schema version checks out.
	health := healthpb.NewHealthClient(conn)
	require.Eventually(t, func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 30*time.Second, 10*time.Millisecond)
	fn(ctx, accountpoolv1.NewAccountPoolServiceClient(conn))
	cancel()
	require.NoError(t, <-done)
}

// statusRow matches a row of the status table: version, accounts,
// default keys, role.
func statusRow(version, accounts, defaults int, role string) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+%d\s+%d\s+%s`, version, accounts, defaults, regexp.QuoteMeta(role)))
}

func TestKeysRewrapAndStatus(t *testing.T) {
	schema := pgtest.NewEmptySchema(t)
	ctx := context.Background()
	sh := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, args, &out, &errOut)
		return out.String(), err
	}
	_, err := sh("migrate", "-database-url", schema.OwnerURL, "up")
	require.NoError(t, err)

	v1, v2 := kekEntry(t, 1), kekEntry(t, 2)
	registerUnder(t, schema.AppURL, v1, "acme", "alpha", "bravo")
	registerUnder(t, schema.AppURL, v1, "beta", "charlie")
	// Default keys: one of an organization with accounts, one of an
	// organization with none.
	setDefaultKeyUnder(t, schema.AppURL, v1, "beta")
	setDefaultKeyUnder(t, schema.AppURL, v1, "gamma")

	t.Setenv(envDatabaseURL, schema.AppURL)
	t.Setenv("DATABASE_URL", "")
	t.Setenv(envKeyringFile, "")
	t.Setenv(envLogLevel, "error")
	t.Setenv(envKeyring, v1+","+v2)

	out, err := sh("keys", "status")
	require.NoError(t, err, out)
	require.Regexp(t, statusRow(1, 3, 2, "decrypts"), out)
	require.Regexp(t, statusRow(2, 0, 0, "encrypts (current)"), out)
	require.Contains(t, out, "3 accounts and 2 default keys in 3 organizations; 5 not under version 2")

	out, err = sh("keys", "rewrap")
	require.NoError(t, err, out)
	require.Contains(t, out, "rewrap under version 2: 5 rewrapped, 0 already current, 0 skipped (changed while rewrapping), 0 failed, in 3 organizations")
	require.Regexp(t, statusRow(1, 0, 0, "decrypts"), out)
	require.Regexp(t, statusRow(2, 3, 2, "encrypts (current)"), out)

	out, err = sh("keys", "status")
	require.NoError(t, err, out)
	require.Regexp(t, statusRow(2, 3, 2, "encrypts (current)"), out)
	require.Contains(t, out, "3 accounts and 2 default keys in 3 organizations, all under version 2: older versions can be removed")

	out, err = sh("keys", "rewrap")
	require.NoError(t, err, out)
	require.Contains(t, out, "0 rewrapped, 5 already current", "running again rewraps nothing")

	// Version 1 retired, the keyring from a file: nothing is missing.
	file := filepath.Join(t.TempDir(), "keyring")
	require.NoError(t, os.WriteFile(file, []byte(v2+"\n"), 0o600))
	t.Setenv(envKeyring, "")
	out, err = sh("keys", "-keyring-file", file, "status")
	require.NoError(t, err, out)
	require.Regexp(t, statusRow(2, 3, 2, "encrypts (current)"), out)
	require.NotRegexp(t, `(?m)^1\s`, out, "version 1 is neither in the keyring nor in use")

	// A keyring without version 2 strands every key: status and rewrap
	// say so and exit non-zero.
	t.Setenv(envKeyring, kekEntry(t, 3))
	out, err = sh("keys", "status")
	require.ErrorContains(t, err, "5 stored keys use a key-encryption key version this keyring lacks")
	require.Regexp(t, statusRow(2, 3, 2, "MISSING"), out)
	out, err = sh("keys", "rewrap")
	require.ErrorContains(t, err, "5 stored keys could not be rewrapped")
	require.Contains(t, out, "0 rewrapped, 0 already current, 0 skipped (changed while rewrapping), 5 failed")
	require.Regexp(t, `failed: organization acme, account [0-9a-f-]{36}, key version 2: `, out)
	require.Regexp(t, `failed: organization gamma, default key, key version 2: `, out)
	require.NotContains(t, out, "sk-ant-api03-keys-", "no key in the output")
}

func TestKeysUsageErrors(t *testing.T) {
	t.Setenv(envDatabaseURL, "")
	t.Setenv("DATABASE_URL", "")
	t.Setenv(envKeyringFile, "")
	t.Setenv(envKeyring, kekEntry(t, 1))
	sh := func(args ...string) error {
		var out, errOut bytes.Buffer
		return run(context.Background(), args, &out, &errOut)
	}
	require.ErrorContains(t, sh("keys"), "exactly one of: status, rewrap")
	require.ErrorContains(t, sh("keys", "shred"), `unknown keys subcommand "shred"`)
	require.ErrorContains(t, sh("keys", "rewrap"), envDatabaseURL)
	t.Setenv(envDatabaseURL, "postgres://127.0.0.1:1/db?connect_timeout=1")
	var out bytes.Buffer
	err := run(context.Background(), []string{"keys", "rewrap"}, &out, io.Discard)
	require.ErrorContains(t, err, "connecting to PostgreSQL")
	require.Empty(t, out.String(), "a run that never started reports nothing")
	t.Setenv(envKeyring, "")
	require.ErrorContains(t, sh("keys", "status"), envKeyring)
	t.Setenv(envKeyring, "1:c2hvcnQ=")
	require.ErrorContains(t, sh("keys", "status"), "keyring entry 1")
}
