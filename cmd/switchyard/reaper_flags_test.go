package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// The reaper settings reach the Activity service from the flags and, by
// default, the environment; the service refuses negative ones before it
// listens.
func TestActivityReaperSettings(t *testing.T) {
	var out, errOut bytes.Buffer
	base := []string{"activity", "-addr", "127.0.0.1:0", "-store", "memory", "-insecure-no-auth"}

	err := run(context.Background(), append(base, "-abandon-grace", "-1s"), &out, &errOut)
	require.ErrorContains(t, err, "abandon grace (-1s)")

	t.Setenv(envReaperInterval, "-3s")
	err = run(context.Background(), base, &out, &errOut)
	require.ErrorContains(t, err, "reaper interval (-3s)")

	err = run(context.Background(), []string{"dev", "-h"}, &out, &errOut)
	require.ErrorContains(t, err, "help requested")
	require.Contains(t, errOut.String(), envAbandonGrace)
	require.Contains(t, errOut.String(), envReaperInterval)
}
