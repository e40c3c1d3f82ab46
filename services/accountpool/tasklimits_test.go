package accountpool_test

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
)

// Task limits are settable with UpdateOrganizationSettings, read back by
// GetOrganizationSettings, replaced as a whole when set and kept when
// unset, and out-of-range values are InvalidArgument naming the field.
func TestTaskLimitsOverTheWire(t *testing.T) {
	client, _ := start(t)
	ctx := context.Background()
	org := newOrg()

	got, err := client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
	require.NoError(t, err)
	require.NotNil(t, got.GetSettings().GetTaskLimits(), "always set in a response")
	require.True(t, proto.Equal(&accountpoolv1.TaskLimits{}, got.GetSettings().GetTaskLimits()), "never saved: all defaults")

	want := &accountpoolv1.TaskLimits{MaxConcurrentTasks: 8, TasksPerSecond: 0.5, Burst: 4}
	upd, err := client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: org, TaskLimits: want})
	require.NoError(t, err)
	require.True(t, proto.Equal(want, upd.GetSettings().GetTaskLimits()), upd.GetSettings().GetTaskLimits().String())
	require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED, upd.GetSettings().GetSelectionStrategy(), "the strategy is unchanged")

	// Changing only the strategy keeps the limits.
	upd, err = client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
	})
	require.NoError(t, err)
	require.True(t, proto.Equal(want, upd.GetSettings().GetTaskLimits()))
	got, err = client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
	require.NoError(t, err)
	require.True(t, proto.Equal(want, got.GetSettings().GetTaskLimits()))
	require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, got.GetSettings().GetSelectionStrategy())

	bad := []struct {
		name   string
		limits *accountpoolv1.TaskLimits
		field  string
	}{
		{"negative concurrency", &accountpoolv1.TaskLimits{MaxConcurrentTasks: -1}, "task_limits.max_concurrent_tasks"},
		{"concurrency too high", &accountpoolv1.TaskLimits{MaxConcurrentTasks: 100001}, "task_limits.max_concurrent_tasks"},
		{"negative rate", &accountpoolv1.TaskLimits{TasksPerSecond: -0.5}, "task_limits.tasks_per_second"},
		{"rate too high", &accountpoolv1.TaskLimits{TasksPerSecond: 100000.5}, "task_limits.tasks_per_second"},
		{"NaN rate", &accountpoolv1.TaskLimits{TasksPerSecond: math.NaN()}, "task_limits.tasks_per_second"},
		{"infinite rate", &accountpoolv1.TaskLimits{TasksPerSecond: math.Inf(1)}, "task_limits.tasks_per_second"},
		{"negative burst", &accountpoolv1.TaskLimits{Burst: -3}, "task_limits.burst"},
		{"burst too high", &accountpoolv1.TaskLimits{Burst: math.MaxInt32}, "task_limits.burst"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
				OrganizationId: org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY, TaskLimits: tc.limits,
			})
			st := requireCode(t, err, codes.InvalidArgument, tc.field, "out of range")
			var fields []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						fields = append(fields, v.GetField())
					}
				}
			}
			if len(fields) > 0 {
				require.Contains(t, fields, tc.field)
			}
		})
	}
	got, err = client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
	require.NoError(t, err)
	require.True(t, proto.Equal(want, got.GetSettings().GetTaskLimits()), "a refused update changes nothing")
	require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, got.GetSettings().GetSelectionStrategy(), "not even the strategy sent with it")

	// An empty message returns every limit to the default.
	upd, err = client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: org, TaskLimits: &accountpoolv1.TaskLimits{}})
	require.NoError(t, err)
	require.True(t, proto.Equal(&accountpoolv1.TaskLimits{}, upd.GetSettings().GetTaskLimits()))
}

// The orchestrator reads an organization's settings (for its task limits)
// but may not change them; the organization and an admin may.
func TestOrchestratorReadsTaskLimits(t *testing.T) {
	s := startSecured(t)
	ctx := context.Background()
	want := &accountpoolv1.TaskLimits{MaxConcurrentTasks: 3}
	_, err := s.owner.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: s.org, TaskLimits: want})
	require.NoError(t, err)

	actingFor := metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, s.org)
	got, err := s.orchestrator.GetOrganizationSettings(actingFor, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: s.org})
	require.NoError(t, err)
	require.True(t, proto.Equal(want, got.GetSettings().GetTaskLimits()))

	_, err = s.orchestrator.GetOrganizationSettings(metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, "someone-else"),
		&accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: s.org})
	requireCode(t, err, codes.PermissionDenied)
	_, err = s.orchestrator.UpdateOrganizationSettings(actingFor, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: s.org, TaskLimits: &accountpoolv1.TaskLimits{}})
	requireCode(t, err, codes.PermissionDenied)
}
