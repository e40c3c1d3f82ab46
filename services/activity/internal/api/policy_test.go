package api

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
)

// Every RPC of the service has a rule.
func TestPolicyCoversEveryRPC(t *testing.T) {
	p := Policy()
	var names []string
	for _, m := range activityv1.ActivityService_ServiceDesc.Methods {
		names = append(names, m.MethodName)
	}
	for _, st := range activityv1.ActivityService_ServiceDesc.Streams {
		names = append(names, st.StreamName)
	}
	for _, name := range names {
		_, ok := p["/"+activityv1.ActivityService_ServiceDesc.ServiceName+"/"+name]
		require.True(t, ok, "no rule for %s", name)
	}
	require.Equal(t, p[activityv1.ActivityService_ListActivities_FullMethodName], p[activityv1.ActivityService_WatchActivities_FullMethodName],
		"a watch is read like a list")
}

// Only the orchestrator writes activities; organizations, admins and the
// orchestrator read them. Checked through the interceptor the service
// runs, with a token of each kind.
func TestPolicyLetsOnlyTheOrchestratorTrack(t *testing.T) {
	tokens := map[auth.Kind]string{auth.Organization: "org-token", auth.Orchestrator: "orchestrator-token", auth.Admin: "admin-token"}
	table, err := auth.ParseTokens(auth.HashToken(tokens[auth.Organization]) + " org:acme\n" +
		auth.HashToken(tokens[auth.Orchestrator]) + " orchestrator\n" +
		auth.HashToken(tokens[auth.Admin]) + " admin\n")
	require.NoError(t, err)
	unary, _ := auth.Interceptors(table, Policy())

	const org = "acme"
	id := "0190f5a4-4c1e-7d3a-9b2e-1c2d3e4f5a6b"
	calls := []struct {
		method string
		req    proto.Message
		write  bool
	}{
		{activityv1.ActivityService_TrackStart_FullMethodName, &activityv1.TrackStartRequest{OrganizationId: org, ActivityId: id}, true},
		{activityv1.ActivityService_TrackProgress_FullMethodName, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id, Message: "m"}, true},
		{activityv1.ActivityService_TrackComplete_FullMethodName, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id}, true},
		{activityv1.ActivityService_GetActivity_FullMethodName, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id}, false},
		{activityv1.ActivityService_ListActivities_FullMethodName, &activityv1.ListActivitiesRequest{OrganizationId: org}, false},
	}
	for _, c := range calls {
		for kind, token := range tokens {
			t.Run(c.method+"/"+kind.String(), func(t *testing.T) {
				md := metadata.Pairs("authorization", "Bearer "+token, auth.OrganizationHeader, org)
				ctx := metadata.NewIncomingContext(context.Background(), md)
				handled := false
				_, err := unary(ctx, c.req, &grpc.UnaryServerInfo{FullMethod: c.method}, func(context.Context, any) (any, error) {
					handled = true
					return nil, nil
				})
				if c.write && kind != auth.Orchestrator {
					require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
					require.False(t, handled)
					return
				}
				require.NoError(t, err)
				require.True(t, handled)
			})
		}
	}
}
