package activity_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/tcpproxy"
	"github.com/switchyard-dev/switchyard/services/activity"
)

// TestPostgresKeepsEverythingAcrossRestarts: what a service on PostgreSQL
// acknowledged, a new service on the same database returns, and carries on
// from.
func TestPostgresKeepsEverythingAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	clock := fakeclock.New(time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC))
	// The test server trusts local connections, so the password only
	// shows whether it leaks into the logs.
	dbURL, err := url.Parse(schema.AppURL)
	require.NoError(t, err)
	dbURL.User = url.UserPassword(dbURL.User.Username(), "hunter2-secret")
	cfg := activity.Config{DatabaseURL: dbURL.String(), Now: clock.Now}
	org := "org-" + uuid.NewString()

	first := startServiceWith(t, cfg)
	require.Contains(t, first.logs.String(), "activity uses PostgreSQL")
	require.NotContains(t, first.logs.String(), "keeps nothing across restarts")
	require.NotContains(t, first.logs.String(), "hunter2-secret")
	c := first.client
	started, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{
		OrganizationId: org, ActivityId: uuid.NewString(), SessionId: "session-1", AgentType: "ai_executor",
		InputData: mustStruct(t, map[string]any{"prompt": "hello"}),
		Metadata:  mustStruct(t, map[string]any{"account_id": "acc-1"}),
	})
	require.NoError(t, err)
	id := started.GetActivity().GetId()
	var events []*activityv1.ProgressEvent
	for i := 1; i <= 2; i++ {
		clock.Advance(time.Second)
		resp, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id, Message: fmt.Sprintf("attempt %d", i)})
		require.NoError(t, err)
		events = append(events, resp.GetEvent())
	}
	clock.Advance(1500 * time.Millisecond)
	complete := &activityv1.TrackCompleteRequest{
		OrganizationId: org, ActivityId: id, Status: completed,
		OutputData: mustStruct(t, map[string]any{"text": "hi"}),
		Metadata:   mustStruct(t, map[string]any{"cost_usd": 0.002}),
	}
	done, err := c.TrackComplete(ctx, complete)
	require.NoError(t, err)
	stillRunning, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, SessionId: "session-2"})
	require.NoError(t, err)
	_, err = c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: stillRunning.GetActivity().GetId(), Message: "before the restart"})
	require.NoError(t, err)
	require.NoError(t, first.stop())

	second := startServiceWith(t, cfg)
	c = second.client
	got, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id})
	require.NoError(t, err)
	require.True(t, proto.Equal(done.GetActivity(), got.GetActivity()), "want %v\ngot  %v", done.GetActivity(), got.GetActivity())
	require.Equal(t, int64(3500), got.GetActivity().GetDurationMs())
	require.Len(t, got.GetProgressEvents(), len(events))
	for i := range events {
		require.True(t, proto.Equal(events[i], got.GetProgressEvents()[i]))
	}
	list, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org})
	require.NoError(t, err)
	require.Len(t, list.GetActivities(), 2)
	require.Equal(t, stillRunning.GetActivity().GetId(), list.GetActivities()[0].GetId())

	// The new service carries on: the repeat is recognised, the running
	// activity's events continue their numbering.
	repeat, err := c.TrackComplete(ctx, complete)
	require.NoError(t, err)
	require.True(t, proto.Equal(done.GetActivity(), repeat.GetActivity()))
	next, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: stillRunning.GetActivity().GetId(), Message: "after the restart"})
	require.NoError(t, err)
	require.Equal(t, int64(2), next.GetEvent().GetSequence())
	again, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, ActivityId: id})
	require.NoError(t, err)
	require.False(t, again.GetCreated())
}

// TestPostgresNotMigratedIsNotServing: a service whose schema was never
// migrated does not migrate it; it reports NOT_SERVING and answers every
// call Unavailable, saying what to run, and serves once someone has run it.
func TestPostgresNotMigratedIsNotServing(t *testing.T) {
	ctx := context.Background()
	pgtest.NewSchema(t, migrations.Activity) // so that the service role exists
	empty := pgtest.NewSchema(t)             // no migrations applied

	h := launch(t, activity.Config{DatabaseURL: empty.AppURL})
	org := "org-" + uuid.NewString()
	var err error
	require.Eventually(t, func() bool {
		_, err = h.client.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
		return strings.Contains(status.Convert(err).Message(), "switchyard migrate up")
	}, 20*time.Second, 10*time.Millisecond, "last error: %v", err)
	requireCode(t, err, codes.Unavailable, "switchyard migrate up")
	_, err = h.client.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org})
	requireCode(t, err, codes.Unavailable, "switchyard migrate up")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, h.healthStatus())
	require.Contains(t, h.logs.String(), "switchyard migrate up")

	owner, err := pgx.Connect(ctx, empty.OwnerURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = owner.Close(ctx) })
	var tables int
	require.NoError(t, owner.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = $1", empty.Name).Scan(&tables))
	require.Zero(t, tables, "serving never migrates")

	pgtest.Migrate(t, empty.OwnerURL, migrations.Activity)
	h.waitServing(t)
	resp, err := h.client.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
	require.NoError(t, err)
	require.True(t, resp.GetCreated())
}

// TestPostgresUnreachableAtStart: a service whose database is down when it
// starts stays up, NOT_SERVING, says why, and serves once the database
// answers, without a restart.
func TestPostgresUnreachableAtStart(t *testing.T) {
	ctx := context.Background()
	schema := pgtest.NewSchema(t, migrations.Activity)
	proxy, err := tcpproxy.New(pgtest.HostPort(t, schema.AppURL))
	require.NoError(t, err)
	t.Cleanup(proxy.Close)
	proxy.Down()

	h := launch(t, activity.Config{DatabaseURL: pgtest.WithHostPort(t, schema.AppURL, proxy.Addr())})
	org := "org-" + uuid.NewString()
	require.Eventually(t, func() bool {
		_, err = h.client.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org})
		return strings.Contains(status.Convert(err).Message(), "does not answer")
	}, 20*time.Second, 10*time.Millisecond, "last error: %v", err)
	requireCode(t, err, codes.Unavailable, "does not answer")
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, h.healthStatus())

	proxy.Up()
	h.waitServing(t)
	_, err = h.client.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org})
	require.NoError(t, err)
}
