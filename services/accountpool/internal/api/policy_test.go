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
	desc := accountpoolv1.AccountPoolService_ServiceDesc
	var names []string
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	for _, name := range names {
		_, ok := p["/"+desc.ServiceName+"/"+name]
		require.True(t, ok, "no rule for %s", name)
	}
	require.Len(t, p, len(names), "a rule for an RPC the service does not have")
}
