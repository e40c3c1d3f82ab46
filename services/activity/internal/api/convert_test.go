package api

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

func TestStructConversion(t *testing.T) {
	require.Nil(t, structToMap(nil))
	require.Nil(t, structToMap(&structpb.Struct{}), "an empty object is no object")

	s, err := structpb.NewStruct(map[string]any{"n": 1, "list": []any{"a", true, nil}, "obj": map[string]any{}})
	require.NoError(t, err)
	m := structToMap(s)
	require.Equal(t, map[string]any{"n": 1.0, "list": []any{"a", true, nil}, "obj": map[string]any{}}, m)

	back, err := mapToStruct(m)
	require.NoError(t, err)
	require.Equal(t, m, back.AsMap())
	empty, err := mapToStruct(map[string]any{})
	require.NoError(t, err)
	require.Nil(t, empty)
}

func TestStatusConversion(t *testing.T) {
	for _, st := range []store.Status{store.StatusRunning, store.StatusCompleted, store.StatusFailed, store.StatusAbandoned} {
		got, err := statusFromProto(statusToProto(st))
		require.NoError(t, err)
		require.Equal(t, st, got)
	}
	got, err := statusFromProto(activityv1.ActivityStatus_ACTIVITY_STATUS_UNSPECIFIED)
	require.NoError(t, err)
	require.Equal(t, store.Status(""), got)

	_, err = statusFromProto(activityv1.ActivityStatus(42))
	var ve *tracker.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "status", ve.Field)
}

func TestTimeFromProto(t *testing.T) {
	got, err := timeFromProto("start_time_from", nil)
	require.NoError(t, err)
	require.True(t, got.IsZero(), "an unset bound is no bound")

	_, err = timeFromProto("start_time_to", &timestamppb.Timestamp{Seconds: 1, Nanos: -5})
	var ve *tracker.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "start_time_to", ve.Field)
}
