package api

import (
	"context"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

func TestStructConversion(t *testing.T) {
	m, err := structToMap("input_data", nil)
	require.NoError(t, err)
	require.Nil(t, m)
	m, err = structToMap("input_data", &structpb.Struct{})
	require.NoError(t, err)
	require.Nil(t, m, "an empty object is no object")

	s, err := structpb.NewStruct(map[string]any{"n": 1, "list": []any{"a", true, nil}, "obj": map[string]any{}})
	require.NoError(t, err)
	m, err = structToMap("input_data", s)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"n": 1.0, "list": []any{"a", true, nil}, "obj": map[string]any{}}, m)

	back, err := mapToStruct(m)
	require.NoError(t, err)
	require.Equal(t, m, back.AsMap())
	empty, err := mapToStruct(map[string]any{})
	require.NoError(t, err)
	require.Nil(t, empty)
}

// deepStruct is depth levels of objects, built without recursion.
func deepStruct(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{"leaf": structpb.NewNumberValue(1)}}
	for i := 1; i < depth; i++ {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(s)}}
	}
	return s
}

// A struct the services cannot store faithfully is refused, never
// converted: no NaN becomes "NaN", no nesting reaches the stores.
func TestStructConversionRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     *structpb.Struct
		field string
	}{
		{"NaN", &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}, "metadata.n"},
		{"+Inf", &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.Inf(1))}}, "metadata.n"},
		{"-Inf", &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.Inf(-1))}}, "metadata.n"},
		{"too deep", deepStruct(validate.MaxStructDepth + 1), "metadata.a.a"},
		{"5,000 levels", deepStruct(5000), "metadata.a.a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := structToMap("metadata", tc.s)
			require.Nil(t, m)
			var ve *tracker.ValidationError
			require.ErrorAs(t, err, &ve)
			require.True(t, strings.HasPrefix(ve.Field, tc.field), "field %q", ve.Field)
			require.Equal(t, codes.InvalidArgument, toStatus(err).Code())
		})
	}
	m, err := structToMap("metadata", deepStruct(validate.MaxStructDepth))
	require.NoError(t, err)
	require.NotNil(t, m, "the limit itself is allowed")
}

// The handlers check every struct they take, before the tracker sees it.
// In process, a caller can send what the gRPC decoder would refuse on the
// wire (5,000 levels): it is InvalidArgument too.
func TestHandlersRefuseBadStructs(t *testing.T) {
	ctx := context.Background()
	srv := New(tracker.New(memstore.New(), tracker.Config{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	const org = "org"
	started, err := srv.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
	require.NoError(t, err)
	id := started.GetActivity().GetId()
	deep := deepStruct(5000)
	nan := &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())}}
	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"start input", func() error {
			_, err := srv.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, InputData: deep})
			return err
		}, "input_data.a"},
		{"start metadata", func() error {
			_, err := srv.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, Metadata: nan})
			return err
		}, "metadata.n"},
		{"progress data", func() error {
			_, err := srv.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id, Message: "m", Data: deep})
			return err
		}, "data.a"},
		{"complete output", func() error {
			_, err := srv.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED, OutputData: nan})
			return err
		}, "output_data.n"},
		{"complete metadata", func() error {
			_, err := srv.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED, Metadata: deep})
			return err
		}, "metadata.a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, ok := status.FromError(tc.call())
			require.True(t, ok)
			require.Equal(t, codes.InvalidArgument, st.Code(), st.Message())
			require.True(t, strings.HasPrefix(st.Message(), tc.field), st.Message())
		})
	}
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
