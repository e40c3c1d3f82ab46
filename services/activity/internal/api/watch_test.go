package api

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

func TestWatchResponseCarriesTheActivityInItsView(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := &store.Change{
		Seq: 7,
		Activity: store.Activity{
			ID: "0190f5a4-4c1e-7d3a-9b2e-1c2d3e4f5a6b", OrganizationID: "org", Status: store.StatusRunning, StartTime: at,
			Input: map[string]any{"prompt": "hi"}, Metadata: map[string]any{"k": "v"},
		},
		LatestProgress: &store.ProgressEvent{ActivityID: "0190f5a4-4c1e-7d3a-9b2e-1c2d3e4f5a6b", Sequence: 2, Message: "step 2", CreateTime: at},
	}
	full, err := watchResponse(tracker.WatchEvent{Change: c, Cursor: "c7"}, activityv1.ActivityView_ACTIVITY_VIEW_FULL)
	require.NoError(t, err)
	require.Equal(t, "c7", full.GetCursor())
	require.False(t, full.GetCaughtUp())
	require.Equal(t, "hi", full.GetActivity().GetInputData().GetFields()["prompt"].GetStringValue())
	require.Equal(t, "v", full.GetActivity().GetMetadata().GetFields()["k"].GetStringValue())
	require.Equal(t, int64(2), full.GetLatestProgress().GetSequence())
	require.Equal(t, "step 2", full.GetLatestProgress().GetMessage())

	basic, err := watchResponse(tracker.WatchEvent{Change: c, Cursor: "c7"}, activityv1.ActivityView_ACTIVITY_VIEW_BASIC)
	require.NoError(t, err)
	require.Nil(t, basic.GetActivity().GetInputData())
	require.Nil(t, basic.GetActivity().GetMetadata())
	require.Equal(t, c.Activity.ID, basic.GetActivity().GetId())
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING, basic.GetActivity().GetStatus())
	require.NotNil(t, basic.GetLatestProgress(), "the latest progress event comes in every view")

	c.LatestProgress = nil
	none, err := watchResponse(tracker.WatchEvent{Change: c, Cursor: "c7"}, activityv1.ActivityView_ACTIVITY_VIEW_FULL)
	require.NoError(t, err)
	require.Nil(t, none.GetLatestProgress())

	caughtUp, err := watchResponse(tracker.WatchEvent{Cursor: "c8", CaughtUp: true}, activityv1.ActivityView_ACTIVITY_VIEW_FULL)
	require.NoError(t, err)
	require.Nil(t, caughtUp.GetActivity())
	require.True(t, caughtUp.GetCaughtUp())
	require.Equal(t, "c8", caughtUp.GetCursor())
}

// What a watch can refuse reaches the caller as InvalidArgument, naming
// the field and what to do.
func TestWatchErrorsSayWhatToFix(t *testing.T) {
	tr := tracker.New(memstore.New(), tracker.Config{})
	send := func(tracker.WatchEvent) error { return nil }
	for _, tc := range []struct {
		in          tracker.WatchInput
		field, hint string
	}{
		{tracker.WatchInput{OrganizationID: "org", Cursor: "garbage"}, "cursor", "omit it to start from the backlog"},
		{tracker.WatchInput{OrganizationID: "org", Backlog: 501}, "backlog", "between 0 and 500"},
		{tracker.WatchInput{OrganizationID: "org", Backlog: -1}, "backlog", "got -1"},
	} {
		st := toStatus(tr.Watch(context.Background(), tc.in, send))
		require.Equal(t, codes.InvalidArgument, st.Code())
		require.Contains(t, st.Message(), tc.field+": ")
		require.Contains(t, st.Message(), tc.hint)
		require.Len(t, st.Details(), 1)
	}
}
