package activity_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// nested is depth levels of objects, {"a": {"a": ... {"leaf": 1}}}.
func nested(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{"leaf": structpb.NewNumberValue(1)}}
	for i := 1; i < depth; i++ {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(s)}}
	}
	return s
}

// Structured fields hold only what JSON can: no NaN or infinity (which
// used to become strings), and nesting up to validate.MaxStructDepth, the
// same on every store.
func TestStructuredFieldsAreChecked(t *testing.T) {
	forEachStore(t, testStructuredFieldsAreChecked)
}

func testStructuredFieldsAreChecked(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	org := "org-" + uuid.NewString()
	number := func(f float64) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"list": structpb.NewListValue(&structpb.ListValue{
			Values: []*structpb.Value{structpb.NewNumberValue(f)},
		})}}
	}
	deepest, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, InputData: nested(validate.MaxStructDepth)})
	require.NoError(t, err, "the limit itself is allowed")
	id := deepest.GetActivity().GetId()
	got, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id})
	require.NoError(t, err)
	require.True(t, structEqual(nested(validate.MaxStructDepth), got.GetActivity().GetInputData()), "stored and read back whole")

	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"NaN input", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, InputData: number(math.NaN())})
			return err
		}, "input_data.list[0]: is NaN"},
		{"+Inf metadata", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, Metadata: number(math.Inf(1))})
			return err
		}, "metadata.list[0]: is +Inf"},
		{"-Inf progress data", func() error {
			_, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id, Message: "m", Data: number(math.Inf(-1))})
			return err
		}, "data.list[0]: is -Inf"},
		{"input one level too deep", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, InputData: nested(validate.MaxStructDepth + 1)})
			return err
		}, "input_data.a.a"},
		{"output 3,000 levels deep", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: completed, OutputData: nested(3000)})
			return err
		}, "output_data.a.a"},
		{"NaN completion metadata", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: completed, Metadata: number(math.NaN())})
			return err
		}, "metadata.list[0]: is NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, tc.call(), codes.InvalidArgument, tc.field)
		})
	}
	got, err = c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id})
	require.NoError(t, err)
	require.Equal(t, running, got.GetActivity().GetStatus(), "rejected calls changed nothing")
	require.Empty(t, got.GetProgressEvents())
}

func structEqual(a, b *structpb.Struct) bool {
	ja, _ := json.Marshal(a.AsMap())
	jb, _ := json.Marshal(b.AsMap())
	return string(ja) == string(jb)
}

// A page token ListActivities did not issue for this very query is
// InvalidArgument on every store.
func TestListPageTokensAreChecked(t *testing.T) {
	forEachStore(t, testListPageTokensAreChecked)
}

func testListPageTokensAreChecked(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	org := "org-" + uuid.NewString()
	for range 3 {
		_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, SessionId: "s"})
		require.NoError(t, err)
	}
	first, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, PageSize: 1})
	require.NoError(t, err)
	token := first.GetNextPageToken()
	require.NotEmpty(t, token)
	_, err = c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, PageSize: 1, PageToken: token})
	require.NoError(t, err, "the issued token works")

	b, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	var tok map[string]any
	require.NoError(t, json.Unmarshal(b, &tok))
	forge := func(key string, v any) string {
		f := map[string]any{}
		for k, e := range tok {
			f[k] = e
		}
		f[key] = v
		b, err := json.Marshal(f)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, tc := range []struct {
		name string
		req  *activityv1.ListActivitiesRequest
		want string
	}{
		{"garbage", &activityv1.ListActivitiesRequest{OrganizationId: org, PageToken: "garbage"}, "not a token"},
		{"truncated", &activityv1.ListActivitiesRequest{OrganizationId: org, PageToken: token[:len(token)-5]}, "not a token"},
		{"id not a UUID", &activityv1.ListActivitiesRequest{OrganizationId: org, PageToken: forge("id", "{"+uuid.NewString()+"}")}, "not a token"},
		{"unknown version", &activityv1.ListActivitiesRequest{OrganizationId: org, PageToken: forge("v", 9)}, "not a token"},
		{"another organization", &activityv1.ListActivitiesRequest{OrganizationId: "org-" + uuid.NewString(), PageToken: token}, "different organization_id"},
		{"another filter", &activityv1.ListActivitiesRequest{OrganizationId: org, SessionId: "s", PageToken: token}, "different organization_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ListActivities(ctx, tc.req)
			requireCode(t, err, codes.InvalidArgument, "page_token: ")
			requireCode(t, err, codes.InvalidArgument, tc.want)
		})
	}
}
