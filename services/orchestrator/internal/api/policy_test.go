package api

import (
	"testing"

	"github.com/stretchr/testify/require"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// Every RPC of the service has a rule.
func TestPolicyCoversEveryRPC(t *testing.T) {
	p := Policy()
	for _, m := range orchestratorv1.OrchestratorService_ServiceDesc.Methods {
		_, ok := p["/"+orchestratorv1.OrchestratorService_ServiceDesc.ServiceName+"/"+m.MethodName]
		require.True(t, ok, "no rule for %s", m.MethodName)
	}
}
