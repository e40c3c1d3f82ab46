package activity_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/activity"
)

const basicView = activityv1.ActivityView_ACTIVITY_VIEW_BASIC

// watchStream opens a watch that ends with the test. The deadline only
// keeps a broken service from hanging the test.
func watchStream(t *testing.T, c activityv1.ActivityServiceClient, req *activityv1.WatchActivitiesRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[activityv1.WatchActivitiesResponse], context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	stream, err := c.WatchActivities(ctx, req, opts...)
	require.NoError(t, err)
	return stream, cancel
}

func recv(t *testing.T, stream grpc.ServerStreamingClient[activityv1.WatchActivitiesResponse]) *activityv1.WatchActivitiesResponse {
	t.Helper()
	m, err := stream.Recv()
	require.NoError(t, err)
	require.NotEmpty(t, m.GetCursor(), "every message carries a cursor")
	return m
}

// recvActivity receives a message that must carry activity id in status
// st.
func recvActivity(t *testing.T, stream grpc.ServerStreamingClient[activityv1.WatchActivitiesResponse], id string, st activityv1.ActivityStatus) *activityv1.WatchActivitiesResponse {
	t.Helper()
	m := recv(t, stream)
	require.False(t, m.GetCaughtUp())
	require.Equal(t, id, m.GetActivity().GetId())
	require.Equal(t, st, m.GetActivity().GetStatus())
	return m
}

func recvCaughtUp(t *testing.T, stream grpc.ServerStreamingClient[activityv1.WatchActivitiesResponse]) *activityv1.WatchActivitiesResponse {
	t.Helper()
	m := recv(t, stream)
	require.True(t, m.GetCaughtUp(), "want caught_up, got %v", m)
	require.Nil(t, m.GetActivity())
	return m
}

// A watch sends the backlog, then caught_up, then every change as it
// happens; a client that reconnects with the last cursor it processed
// gets everything that changed meanwhile, coalesced.
func TestWatchActivitiesOverGRPC(t *testing.T) {
	forEachStore(t, testWatchActivitiesOverGRPC)
}

func testWatchActivitiesOverGRPC(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	org := "org-" + uuid.NewString()
	start := func(req *activityv1.TrackStartRequest) *activityv1.Activity {
		t.Helper()
		req.OrganizationId = org
		resp, err := c.TrackStart(ctx, req)
		require.NoError(t, err)
		return resp.GetActivity()
	}
	older := start(&activityv1.TrackStartRequest{SessionId: "s1"})
	newer := start(&activityv1.TrackStartRequest{SessionId: "s2", InputData: mustStruct(t, map[string]any{"prompt": "hi"})})

	stream, cancel := watchStream(t, c, &activityv1.WatchActivitiesRequest{OrganizationId: org, Backlog: 1, View: basicView})
	m := recvActivity(t, stream, newer.GetId(), running)
	require.Nil(t, m.GetActivity().GetInputData(), "the basic view")
	require.Equal(t, "s2", m.GetActivity().GetSessionId())
	recvCaughtUp(t, stream)

	live := start(&activityv1.TrackStartRequest{AgentType: "ai_executor", InputData: mustStruct(t, map[string]any{"prompt": "go"})})
	m = recvActivity(t, stream, live.GetId(), running)
	require.Nil(t, m.GetLatestProgress())
	require.Equal(t, "ai_executor", m.GetActivity().GetAgentType())
	h.clock.Advance(time.Second)
	p, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: live.GetId(), Message: "attempt 1", Data: mustStruct(t, map[string]any{"n": 1})})
	require.NoError(t, err)
	m = recvActivity(t, stream, live.GetId(), running)
	require.True(t, proto.Equal(p.GetEvent(), m.GetLatestProgress()), "want %v, got %v", p.GetEvent(), m.GetLatestProgress())
	h.clock.Advance(time.Second)
	done, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: live.GetId(), Status: completed, OutputData: mustStruct(t, map[string]any{"text": "ok"})})
	require.NoError(t, err)
	m = recvActivity(t, stream, live.GetId(), completed)
	require.Nil(t, m.GetActivity().GetOutputData(), "the basic view")
	require.Equal(t, int64(2000), m.GetActivity().GetDurationMs())
	require.True(t, proto.Equal(done.GetActivity().GetCompleteTime(), m.GetActivity().GetCompleteTime()))
	last := m.GetCursor()
	cancel()

	// While the client is away.
	for _, msg := range []string{"one", "two"} {
		_, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: older.GetId(), Message: msg})
		require.NoError(t, err)
	}
	failedNewer, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: newer.GetId(), Status: failed, ErrorMessage: "boom"})
	require.NoError(t, err)
	fresh := start(&activityv1.TrackStartRequest{})

	resumed, _ := watchStream(t, c, &activityv1.WatchActivitiesRequest{Cursor: last, OrganizationId: org})
	m = recvActivity(t, resumed, older.GetId(), running)
	require.Equal(t, int64(2), m.GetLatestProgress().GetSequence(), "two progress events arrive as one change")
	require.Equal(t, "two", m.GetLatestProgress().GetMessage())
	m = recvActivity(t, resumed, newer.GetId(), failed)
	require.True(t, proto.Equal(failedNewer.GetActivity(), m.GetActivity()), "the full view: want %v, got %v", failedNewer.GetActivity(), m.GetActivity())
	recvActivity(t, resumed, fresh.GetId(), running)
	recvCaughtUp(t, resumed)
}

func TestWatchActivitiesRejectsAMalformedCursor(t *testing.T) {
	h := startService(t)
	org := "org-" + uuid.NewString()
	stream, _ := watchStream(t, h.client, &activityv1.WatchActivitiesRequest{OrganizationId: org, Cursor: "not a cursor"})
	_, err := stream.Recv()
	requireCode(t, err, codes.InvalidArgument, "cursor: is not a cursor this service issued")

	stream, _ = watchStream(t, h.client, &activityv1.WatchActivitiesRequest{OrganizationId: org, Backlog: 501})
	_, err = stream.Recv()
	requireCode(t, err, codes.InvalidArgument, "backlog: must be between 0 and 500")
}

// An organization's token watches its own organization only; an empty
// organization_id is its own. An admin watches any organization.
func TestWatchActivitiesIsScopedByTheToken(t *testing.T) {
	ctx := context.Background()
	const orgToken, orchestratorToken, adminToken = "org-token", "orchestrator-token", "admin-token"
	tokens, err := auth.ParseTokens(auth.HashToken(orgToken) + " org:acme\n" +
		auth.HashToken(orchestratorToken) + " orchestrator\n" +
		auth.HashToken(adminToken) + " admin\n")
	require.NoError(t, err)
	h := startServiceWith(t, activity.Config{Tokens: tokens})
	as := func(token string) grpc.CallOption {
		return grpc.PerRPCCredentials(auth.ClientCredentials(secret.New(token), false))
	}

	stream, _ := watchStream(t, h.client, &activityv1.WatchActivitiesRequest{OrganizationId: "other"}, as(orgToken))
	_, err = stream.Recv()
	requireCode(t, err, codes.PermissionDenied, "cannot act for")

	own, _ := watchStream(t, h.client, &activityv1.WatchActivitiesRequest{}, as(orgToken))
	recvCaughtUp(t, own)
	other, _ := watchStream(t, h.client, &activityv1.WatchActivitiesRequest{OrganizationId: "other"}, as(adminToken))
	recvCaughtUp(t, other)

	forward := metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, "acme")
	started, err := h.client.TrackStart(forward, &activityv1.TrackStartRequest{}, as(orchestratorToken))
	require.NoError(t, err)
	m := recvActivity(t, own, started.GetActivity().GetId(), running)
	require.Equal(t, "acme", m.GetActivity().GetOrganizationId())
}

// A shutdown ends an open watch at once with Unavailable, for the client
// to resume elsewhere with its cursor.
func TestShutdownEndsWatchesWithUnavailable(t *testing.T) {
	h := startService(t)
	stream, _ := watchStream(t, h.client, &activityv1.WatchActivitiesRequest{OrganizationId: "org-" + uuid.NewString()})
	recvCaughtUp(t, stream)
	require.NoError(t, h.stop())
	_, err := stream.Recv()
	requireCode(t, err, codes.Unavailable, "shutting down")
}

// Two replicas on one database: a watch on one sees what the other
// writes, by its poll.
func TestWatchSeesAnotherReplicasWrites(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	watched := startServiceWith(t, activity.Config{DatabaseURL: schema.AppURL, WatchPollInterval: 10 * time.Millisecond})
	writer := startServiceWith(t, activity.Config{DatabaseURL: schema.AppURL})
	org := "org-" + uuid.NewString()

	stream, _ := watchStream(t, watched.client, &activityv1.WatchActivitiesRequest{OrganizationId: org})
	recvCaughtUp(t, stream)
	started, err := writer.client.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
	require.NoError(t, err)
	recvActivity(t, stream, started.GetActivity().GetId(), running)
	_, err = writer.client.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: started.GetActivity().GetId(), Status: completed})
	require.NoError(t, err)
	recvActivity(t, stream, started.GetActivity().GetId(), completed)
}
