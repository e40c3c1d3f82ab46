package api

import (
	"testing"

	"github.com/stretchr/testify/require"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
)

// Every RPC of the service has a rule.
func TestPolicyCoversEveryRPC(t *testing.T) {
	p := Policy()
	for _, m := range activityv1.ActivityService_ServiceDesc.Methods {
		_, ok := p["/"+activityv1.ActivityService_ServiceDesc.ServiceName+"/"+m.MethodName]
		require.True(t, ok, "no rule for %s", m.MethodName)
	}
}
