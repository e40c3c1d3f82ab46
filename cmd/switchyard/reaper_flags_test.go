package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// The reaper settings reach the Activity service from the flags and, by
// default, the environment; the command refuses a negative or zero one
// before the service listens.
func TestActivityReaperSettings(t *testing.T) {
	var out, errOut bytes.Buffer
	base := []string{"activity", "-addr", "127.0.0.1:0", "-store", "memory", "-insecure-no-auth"}

	err := run(context.Background(), append(base, "-abandon-grace", "-1s"), &out, &errOut)
	require.ErrorContains(t, err, `invalid value "-1s" for flag -abandon-grace: not a positive duration`)

	t.Setenv(envReaperInterval, "-3s")
	err = run(context.Background(), base, &out, &errOut)
	require.ErrorContains(t, err, `SWITCHYARD_REAPER_INTERVAL: "-3s" is not a positive duration`)

	err = run(context.Background(), []string{"dev", "-h"}, &out, &errOut)
	require.ErrorContains(t, err, "help requested")
	require.Contains(t, errOut.String(), envAbandonGrace)
	require.Contains(t, errOut.String(), envReaperInterval)
}
