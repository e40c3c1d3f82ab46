package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/switchyard-dev/switchyard/pkg/buildinfo"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Error(t, run(context.Background(), nil, &out, &errOut))
	require.Contains(t, errOut.String(), "usage: switchyard")

	err := run(context.Background(), []string{"frobnicate"}, &out, &errOut)
	require.ErrorContains(t, err, `unknown command "frobnicate"`)

	err = run(context.Background(), []string{"dev", "-h"}, &out, &errOut)
	require.ErrorIs(t, err, flag.ErrHelp)
	require.Contains(t, errOut.String(), "SWITCHYARD_ORCHESTRATOR_ADDR")

	err = run(context.Background(), []string{"sim", "-default-tier", "tier9"}, &out, &errOut)
	require.ErrorContains(t, err, "tier9")

	t.Setenv(envKeyring, "")
	t.Setenv(envKeyringFile, "")
	err = run(context.Background(), []string{"accountpool", "-addr", "127.0.0.1:0"}, &out, &errOut)
	require.ErrorContains(t, err, "keyring")
}

func TestDevStartsEverythingAndStopsCleanly(t *testing.T) {
	t.Setenv(envKeyring, "")
	t.Setenv(envAnthropicAPIKey, "")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncbuf.Buffer
	done := make(chan error, 1)
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	go func() {
		done <- run(ctx, []string{"dev",
			"-orchestrator-addr", "127.0.0.1:0", "-accountpool-addr", "127.0.0.1:0",
			"-activity-addr", "127.0.0.1:0", "-sim-addr", "127.0.0.1:0", "-dashboard-addr", "127.0.0.1:0",
			"-ready-file", readyFile, "-skills-dir", "../../skills"}, &out, &errOut)
	}()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "Press Ctrl-C") }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { _, err := os.Stat(readyFile); return err == nil }, 10*time.Second, 10*time.Millisecond)
	var ready devAddresses
	b, err := os.ReadFile(readyFile)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &ready))
	fi, err := os.Stat(readyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the ready file holds tokens")
	require.Contains(t, out.String(), "dashboard     "+ready.Dashboard)
	require.NotEmpty(t, ready.AcmeToken)

	// The simulator's control endpoints need the token the ready file and
	// the walkthrough hold; the log never has it.
	require.Regexp(t, `^sy_sim_`, ready.SimControlToken)
	require.Contains(t, out.String(), "export SIM_TOKEN="+ready.SimControlToken+"\n")
	require.Equal(t, http.StatusUnauthorized, simStats(t, ready.Simulator, ""))
	require.Equal(t, http.StatusOK, simStats(t, ready.Simulator, ready.SimControlToken))
	require.NotContains(t, errOut.String(), ready.SimControlToken)

	// The dashboard's API reaches AccountPool with the caller's token.
	listAccounts := func(token string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, ready.Dashboard+"api/accountpool/ListAccounts", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return listAccounts(ready.AcmeToken) == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, http.StatusUnauthorized, listAccounts("not-a-token"))

	addr := ""
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "orchestrator" {
			addr = f[1]
		}
	}
	require.Equal(t, ready.Orchestrator, addr, out.String())
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, errOut.String(), "ephemeral key-encryption keyring")

	cancel()
	select {
	case err := <-done:
		require.True(t, err == nil || errors.Is(err, context.Canceled), "dev stopped with %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("dev did not stop after cancellation")
	}
	require.NoFileExists(t, readyFile, "the tokens it holds end with the run")
}

// A ready file dev cannot write ends dev, with everything it started
// stopped, rather than leave a waiting script hanging.
func TestDevStopsWhenItCannotWriteTheReadyFile(t *testing.T) {
	t.Setenv(envKeyring, "")
	t.Setenv(envAnthropicAPIKey, "")
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"dev",
			"-orchestrator-addr", "127.0.0.1:0", "-accountpool-addr", "127.0.0.1:0",
			"-activity-addr", "127.0.0.1:0", "-sim-addr", "127.0.0.1:0", "-dashboard-addr", "127.0.0.1:0",
			"-ready-file", filepath.Join(t.TempDir(), "no-such-dir", "ready.json"), "-skills-dir", "../../skills"}, io.Discard, io.Discard)
	}()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "writing the ready file")
	case <-time.After(30 * time.Second):
		t.Fatal("dev kept running without its ready file")
	}
}

// -h answers what was asked: main exits 0 for it, for every command.
func TestHelpExitsZero(t *testing.T) {
	require.Zero(t, exitCode(nil))
	require.Zero(t, exitCode(flag.ErrHelp))
	require.Zero(t, exitCode(fmt.Errorf("dev: %w", flag.ErrHelp)))
	require.Equal(t, 1, exitCode(errors.New("no command given")))
	for _, cmd := range commands(t) {
		err := run(context.Background(), []string{cmd, "-h"}, io.Discard, io.Discard)
		require.Zero(t, exitCode(err), "%s -h: %v", cmd, err)
	}
	require.Equal(t, 1, exitCode(run(context.Background(), []string{"dev", "-no-such-flag"}, io.Discard, io.Discard)))
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "-version", "--version"} {
		var out bytes.Buffer
		require.NoError(t, run(context.Background(), []string{arg}, &out, io.Discard))
		require.True(t, strings.HasPrefix(out.String(), "switchyard "), out.String())
		require.Contains(t, out.String(), runtime.Version(), arg)
	}

	b := buildinfo.From(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "378cb5da5c16"}, {Key: "vcs.time", Value: "2026-12-01T22:46:22Z"}, {Key: "vcs.modified", Value: "true"},
	}})
	require.Equal(t, "switchyard v1.4.0, revision 378cb5da5c16+dirty, committed 2026-12-01T22:46:22Z, go1.26.8 "+runtime.GOOS+"/"+runtime.GOARCH, b.String())
	b = buildinfo.From(&debug.BuildInfo{})
	require.Equal(t, "switchyard (devel), "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH, b.String(), "a build without VCS information")
}

// A service's first log line says which build runs it.
func TestServicesLogTheirVersion(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the simulator stops as soon as it has started
	var errOut bytes.Buffer
	require.NoError(t, run(ctx, []string{"sim", "-addr", "127.0.0.1:0", "-log-format", "json"}, io.Discard, &errOut))
	first, _, _ := strings.Cut(errOut.String(), "\n")
	var line map[string]any
	require.NoError(t, json.Unmarshal([]byte(first), &line), errOut.String())
	require.Equal(t, "switchyard starting", line["msg"])
	require.Equal(t, "sim", line["command"])
	require.Equal(t, runtime.Version(), line["go"])
	require.NotEmpty(t, line["version"])
}

func TestTuneGCRaisesTheTargetUnlessGOGCIsSet(t *testing.T) {
	restore := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(restore) })

	t.Setenv("GOGC", "150")
	tuneGC()
	require.Equal(t, 100, debug.SetGCPercent(100), "GOGC set: left as the runtime has it")

	require.NoError(t, os.Unsetenv("GOGC"))
	tuneGC()
	require.Equal(t, defaultGCPercent, debug.SetGCPercent(100))
}
