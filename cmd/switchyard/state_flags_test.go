package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The Redis URL may carry a password: neither -h nor an error repeats it.
func TestRedisFlagsKeepTheURLSecret(t *testing.T) {
	t.Setenv(envKeyring, "1:"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	t.Setenv("SWITCHYARD_INSECURE_NO_AUTH", "true")
	t.Setenv(envRedisURL, "redis://:hunter2@127.0.0.1:1/0")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"accountpool", "-h"}, &out, &errOut)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, errOut.String(), envRedisURL)
	require.NotContains(t, errOut.String(), "hunter2")

	t.Setenv(envRedisURL, "redis://:hunter2@[::1")
	err = run(context.Background(), []string{"accountpool", "-addr", "127.0.0.1:0"}, &out, &errOut)
	require.ErrorContains(t, err, envRedisURL+" is not a valid")
	require.NotContains(t, err.Error()+errOut.String()+out.String(), "hunter2")

	t.Setenv(envRedisURL, "")
	err = run(context.Background(), []string{"accountpool", "-addr", "127.0.0.1:0", "-state", "redis"}, &out, &errOut)
	require.ErrorContains(t, err, "needs a Redis URL")
	err = run(context.Background(), []string{"accountpool", "-addr", "127.0.0.1:0", "-state", "disk"}, &out, &errOut)
	require.ErrorContains(t, err, `-state (SWITCHYARD_STATE): "disk" is not a state`)
	t.Setenv(envRedisURL, "redis://127.0.0.1:1/0")
	err = run(context.Background(), []string{"accountpool", "-addr", "127.0.0.1:0", "-redis-failure", "pray"}, &out, &errOut)
	require.ErrorContains(t, err, `-redis-failure (SWITCHYARD_REDIS_FAILURE): "pray" is not a policy`)
}

func TestServiceTokenFromAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "orchestrator-token")
	require.NoError(t, os.WriteFile(f, []byte("sy_secret-token\n"), 0o600))
	t.Setenv(envServiceToken, "")
	t.Setenv(envServiceTokenFile, f)
	tok, err := serviceToken()
	require.NoError(t, err)
	require.Equal(t, "sy_secret-token", tok.Reveal(), "read and trimmed")

	t.Setenv(envServiceToken, "sy_inline")
	_, err = serviceToken()
	require.ErrorContains(t, err, "not both")
	require.NotContains(t, err.Error(), "sy_")

	t.Setenv(envServiceToken, "")
	t.Setenv(envServiceTokenFile, filepath.Join(t.TempDir(), "missing"))
	_, err = serviceToken()
	require.ErrorContains(t, err, envServiceTokenFile)
}

// The owner's connection string may hold a password: -h never prints it.
func TestMigrateHelpKeepsTheURLSecret(t *testing.T) {
	t.Setenv(envMigrateDatabaseURL, "postgres://owner:S3cretPW@db/sw")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"migrate", "-h"}, &out, &errOut)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, errOut.String(), envMigrateDatabaseURL)
	require.NotContains(t, errOut.String()+out.String(), "S3cretPW")
}

func TestAnthropicKeyFromAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(f, []byte("sk-ant-from-a-file\n"), 0o600))
	t.Setenv(envAnthropicAPIKey, "")
	t.Setenv(envAnthropicAPIKeyFile, f)
	k, err := anthropicKey()
	require.NoError(t, err)
	require.Equal(t, "sk-ant-from-a-file", k.Reveal())
	t.Setenv(envAnthropicAPIKey, "sk-ant-inline")
	_, err = anthropicKey()
	require.ErrorContains(t, err, "not both")
	require.NotContains(t, err.Error(), "sk-ant")
}
