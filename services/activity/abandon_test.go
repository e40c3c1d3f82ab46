package activity_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/activity"
)

const abandonedStatus = activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED

// The service runs its reaper while it serves: an activity still running
// after its deadline plus the grace becomes ABANDONED, and a late
// TrackComplete then records the real outcome. The clock is fake; the
// reaper sweeps every millisecond of real time, and the test waits for
// the sweep that follows the clock's advance.
func TestReaperAbandonsOverdueActivities(t *testing.T) {
	for name, cfg := range map[string]func(t *testing.T) activity.Config{
		"memory": func(*testing.T) activity.Config { return activity.Config{} },
		"postgres": func(t *testing.T) activity.Config {
			return activity.Config{DatabaseURL: pgtest.NewSchema(t, migrations.Activity).AppURL}
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := cfg(t)
			c.ReaperInterval = 10 * time.Millisecond
			c.AbandonGrace = 5 * time.Second
			testReaper(t, startServiceWith(t, c))
		})
	}
}

func testReaper(t *testing.T, h *harness) {
	ctx := context.Background()
	org := "org-" + uuid.NewString()
	deadline := h.clock.Now().Add(time.Minute)
	started, err := h.client.TrackStart(ctx, &activityv1.TrackStartRequest{
		OrganizationId: org, ActivityId: uuid.NewString(), AgentType: "ai_executor", Deadline: timestamppb.New(deadline),
	})
	require.NoError(t, err)
	require.True(t, deadline.Equal(started.GetActivity().GetDeadline().AsTime()))
	id := started.GetActivity().GetId()
	forever, err := h.client.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
	require.NoError(t, err)
	require.Nil(t, forever.GetActivity().GetDeadline())

	h.clock.Advance(time.Minute + 5*time.Second + time.Microsecond)
	var got *activityv1.GetActivityResponse
	require.Eventually(t, func() bool {
		got, err = h.client.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id})
		require.NoError(t, err)
		return got.GetActivity().GetStatus() == abandonedStatus
	}, 20*time.Second, 10*time.Millisecond)
	a := got.GetActivity()
	require.Equal(t, "abandoned: no completion by the deadline "+deadline.UTC().Format("2006-01-02T15:04:05.000000Z")+" plus grace 5s", a.GetErrorMessage())
	require.True(t, h.clock.Now().Equal(a.GetCompleteTime().AsTime()))
	require.Equal(t, (time.Minute + 5*time.Second).Milliseconds(), a.GetDurationMs())

	_, err = h.client.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id, Message: "still going"})
	requireCode(t, err, codes.FailedPrecondition, "ABANDONED")
	again, err := h.client.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, ActivityId: id})
	require.NoError(t, err)
	require.False(t, again.GetCreated())
	require.Equal(t, abandonedStatus, again.GetActivity().GetStatus())
	list, err := h.client.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, Status: abandonedStatus})
	require.NoError(t, err)
	require.Len(t, list.GetActivities(), 1)
	require.Equal(t, id, list.GetActivities()[0].GetId())

	h.clock.Advance(time.Second)
	late, err := h.client.TrackComplete(ctx, &activityv1.TrackCompleteRequest{
		OrganizationId: org, ActivityId: id, Status: completed, OutputData: mustStruct(t, map[string]any{"text": "late but real"}),
	})
	require.NoError(t, err)
	require.Equal(t, completed, late.GetActivity().GetStatus())
	require.Empty(t, late.GetActivity().GetErrorMessage())
	require.Equal(t, "late but real", late.GetActivity().GetOutputData().GetFields()["text"].GetStringValue())
	require.Equal(t, (time.Minute + 6*time.Second).Milliseconds(), late.GetActivity().GetDurationMs())
	_, err = h.client.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: failed, ErrorMessage: "other"})
	requireCode(t, err, codes.FailedPrecondition, "different completion")

	still, err := h.client.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: forever.GetActivity().GetId()})
	require.NoError(t, err)
	require.Equal(t, running, still.GetActivity().GetStatus(), "no deadline, never abandoned")
}

func TestNewRejectsNegativeReaperSettings(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	for _, cfg := range []activity.Config{
		{AbandonGrace: -time.Second},
		{ReaperInterval: -time.Second},
	} {
		cfg.Addr, cfg.Logger, cfg.InsecureNoAuth = "127.0.0.1:0", logger, true
		_, err := activity.New(context.Background(), cfg)
		require.ErrorContains(t, err, "must not be negative")
	}
}
