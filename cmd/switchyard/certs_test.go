package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// clearServiceEnv empties the variables a service command would otherwise
// take from the machine running the tests.
func clearServiceEnv(t *testing.T) {
	for _, s := range settings {
		t.Setenv(s.env, "")
	}
}

// startAccountPool runs `switchyard accountpool` with args until the test
// ends and returns the port it serves on, or the error it stopped with.
func startAccountPool(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"accountpool"}, args...), &logs, &logs) }()
	served := regexp.MustCompile(`msg="serving gRPC" .*addr=\S+:(\d+)`)
	deadline := time.After(20 * time.Second)
	for {
		if m := served.FindStringSubmatch(logs.String()); m != nil {
			t.Cleanup(func() {
				cancel()
				require.NoError(t, <-done)
			})
			return m[1], nil
		}
		select {
		case err := <-done:
			cancel()
			return "", err
		case <-deadline:
			cancel()
			t.Fatalf("accountpool did not start: %s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// An AccountPool hands out decrypted API keys: on an address other
// machines reach it serves only over TLS, which `switchyard certs` sets up,
// unless plaintext is asked for by name.
func TestAccountPoolServesBeyondLoopbackOnlyWithTLS(t *testing.T) {
	clearServiceEnv(t)
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	t.Setenv(envKeyring, keyring)
	t.Setenv(envInsecureNoAuth, "true")

	_, err = startAccountPool(t, "-addr", "0.0.0.0:0", "-store", "memory")
	require.ErrorContains(t, err, "no TLS is configured")
	require.ErrorContains(t, err, "insecure-plaintext")

	dir := t.TempDir()
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"certs", "-dir", dir}, &out, &out))
	require.Contains(t, out.String(), filepath.Join(dir, "accountpool.pem"))
	port, err := startAccountPool(t, "-addr", "0.0.0.0:0", "-store", "memory",
		"-tls-cert-file", filepath.Join(dir, "accountpool.pem"), "-tls-key-file", filepath.Join(dir, "accountpool-key.pem"), "-tls-ca-file", filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	health, err := health1("-addr", "127.0.0.1:"+port, "-timeout", "5s",
		"-tls-cert-file", filepath.Join(dir, "client.pem"), "-tls-key-file", filepath.Join(dir, "client-key.pem"), "-tls-ca-file", filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	require.True(t, strings.Contains(health, "SERVING"), health)

	port, err = startAccountPool(t, "-addr", "0.0.0.0:0", "-store", "memory", "-insecure-plaintext")
	require.NoError(t, err)
	health, err = health1("-addr", "127.0.0.1:"+port, "-timeout", "5s")
	require.NoError(t, err, "plaintext, as asked")
	require.Contains(t, health, "SERVING")
}
