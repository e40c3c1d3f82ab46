package api

import (
	"testing"

	"github.com/stretchr/testify/require"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
)

// Every RPC of the service has a rule: one added to the proto without a
// rule would be denied to everyone, which this test catches first.
func TestPolicyCoversEveryRPC(t *testing.T) {
	p := Policy()
	for _, m := range accountpoolv1.AccountPoolService_ServiceDesc.Methods {
		_, ok := p["/"+accountpoolv1.AccountPoolService_ServiceDesc.ServiceName+"/"+m.MethodName]
		require.True(t, ok, "no rule for %s", m.MethodName)
	}
}
