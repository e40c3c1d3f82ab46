package main

import (
	"bytes"
	"context"
	"flag"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every service command has -metrics-addr, defaulting to
// SWITCHYARD_METRICS_ADDR.
func TestMetricsAddrFlag(t *testing.T) {
	t.Setenv(envMetricsAddr, "127.0.0.1:19464")
	for _, cmd := range []string{"orchestrator", "accountpool", "activity", "dev"} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{cmd, "-h"}, &out, &errOut)
		require.ErrorIs(t, err, flag.ErrHelp, cmd)
		require.Contains(t, errOut.String(), "-metrics-addr", cmd)
		require.Contains(t, errOut.String(), `(default "127.0.0.1:19464")`, cmd)
	}
}

// A metrics address that cannot be listened on stops the service before
// it starts.
func TestMetricsAddrInUse(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lis.Close()
	t.Setenv("SWITCHYARD_INSECURE_NO_AUTH", "true")
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"activity", "-addr", "127.0.0.1:0", "-metrics-addr", lis.Addr().String()}, &out, &errOut)
	require.ErrorContains(t, err, "metrics endpoint")
}
