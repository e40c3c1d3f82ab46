package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOrchestratorTargetsAreCheckedAtStartUp(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"orchestrator", "-accountpool-addr", "10.0.0.1:50052,,10.0.0.2:50052"}, &out, &errOut)
	require.ErrorContains(t, err, `-accountpool-addr (SWITCHYARD_ACCOUNTPOOL_ADDR): entry 2 of "10.0.0.1:50052,,10.0.0.2:50052" is empty`)

	t.Setenv(envActivityAddr, "10.0.0.1:50053,activity")
	err = run(context.Background(), []string{"orchestrator"}, &out, &errOut)
	require.ErrorContains(t, err, `-activity-addr (SWITCHYARD_ACTIVITY_ADDR): entry 2: "activity" is not host:port: missing port in address`)

	require.NoError(t, checkTargets("10.0.0.1:50052, 10.0.0.2:50052", "dns:///activity.internal:50053"))
}
