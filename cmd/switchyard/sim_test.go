package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
)

// simStats is the status of GET /sim/stats on the simulator at base with
// token as the bearer token (none when empty).
func simStats(t *testing.T, base, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/sim/stats?api_key=k", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// startSim runs `switchyard sim` with args until the test ends and returns
// its base URL and what it printed (stdout) and logged (stderr).
func startSim(t *testing.T, args ...string) (base string, out, log *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, log = &syncbuf.Buffer{}, &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"sim", "-addr", "127.0.0.1:0"}, args...), out, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Error("sim did not stop")
		}
	})
	// The banner is printed a piece at a time: wait for its last line, the
	// curl example, so that the test reads all of it (the token lines come
	// after the address).
	banner := regexp.MustCompile(`(?s)^Anthropic simulator on (http://\S+)\n.*  curl .*/sim/stats\?api_key=\S+'\n`)
	require.Eventually(t, func() bool { return banner.MatchString(out.String()) }, 10*time.Second, 5*time.Millisecond, "stdout: %s", out)
	return banner.FindStringSubmatch(out.String())[1], out, log
}

func TestSimPrintsTheControlTokenItGenerated(t *testing.T) {
	t.Setenv(envSimControlToken, "")
	t.Setenv(envSimControlTokenFile, "")
	base, out, log := startSim(t)
	m := regexp.MustCompile(`export SIM_TOKEN=(sy_sim_\S+)\n`).FindStringSubmatch(out.String())
	require.NotNil(t, m, out.String())
	token := m[1]
	require.Equal(t, http.StatusUnauthorized, simStats(t, base, ""))
	require.Equal(t, http.StatusUnauthorized, simStats(t, base, token+"x"))
	require.Equal(t, http.StatusOK, simStats(t, base, token))
	require.NotContains(t, log.String(), token, "the token is printed, never logged")

	// A second start has a new token.
	_, out2, _ := startSim(t)
	require.NotContains(t, out2.String(), token)
}

func TestSimTakesAConfiguredControlToken(t *testing.T) {
	const token = "sim-control-token-configured"
	t.Setenv(envSimControlTokenFile, "")
	t.Setenv(envSimControlToken, token)
	base, out, log := startSim(t)
	require.NotContains(t, out.String(), token, "a configured token is not printed")
	require.Contains(t, out.String(), "the one configured")
	require.Equal(t, http.StatusOK, simStats(t, base, token))
	require.Equal(t, http.StatusUnauthorized, simStats(t, base, ""))
	require.NotContains(t, log.String(), token)

	t.Setenv(envSimControlToken, "")
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte(token+"-from-a-file\n"), 0o600))
	base, _, _ = startSim(t, "-control-token-file", file)
	require.Equal(t, http.StatusOK, simStats(t, base, token+"-from-a-file"))
	require.Equal(t, http.StatusUnauthorized, simStats(t, base, token))
}

// Bad control-token settings stop sim and dev before anything listens,
// naming the setting and never the token.
func TestBadControlTokenSettings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("a-good-enough-token-value"), 0o600))
	short := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(short, []byte("tiny-secret"), 0o600))
	for _, tc := range []struct {
		name         string
		inline, file string
		args         []string
		want         string
	}{
		{"both", "a-good-enough-token-value", file, nil, "set either SWITCHYARD_SIM_CONTROL_TOKEN or -control-token-file (SWITCHYARD_SIM_CONTROL_TOKEN_FILE), not both"},
		{"short inline", "tiny-secret", "", nil, "SWITCHYARD_SIM_CONTROL_TOKEN: the control token has 11 characters; use 16 to 1024"},
		{"with a space", "a token with spaces in it", "", nil, "SWITCHYARD_SIM_CONTROL_TOKEN: the control token may contain only printable ASCII"},
		{"short file", "", "", []string{"-control-token-file", short}, "-control-token-file (SWITCHYARD_SIM_CONTROL_TOKEN_FILE): the control token has 11 characters"},
		{"missing file", "", "", []string{"-control-token-file", filepath.Join(t.TempDir(), "nope")}, "-control-token-file (SWITCHYARD_SIM_CONTROL_TOKEN_FILE): open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(envSimControlToken, tc.inline)
			t.Setenv(envSimControlTokenFile, tc.file)
			err := run(context.Background(), append([]string{"sim", "-addr", "127.0.0.1:0"}, tc.args...), io.Discard, io.Discard)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "tiny-secret")
			require.NotContains(t, err.Error(), "a-good-enough-token-value")
		})
	}
	t.Setenv(envSimControlToken, "")
	t.Setenv(envSimControlTokenFile, "")
	t.Setenv(envKeyring, "")
	err := run(context.Background(), []string{"dev", "-sim-control-token-file", short}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "-sim-control-token-file (SWITCHYARD_SIM_CONTROL_TOKEN_FILE): the control token has 11 characters")
	require.False(t, errors.Is(err, context.Canceled))
	require.False(t, strings.Contains(err.Error(), "tiny-secret"))
}
