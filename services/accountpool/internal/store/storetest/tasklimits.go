package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// testSettingsTaskLimits: an organization that never saved settings has no
// task limits (all zero: the orchestrator's defaults); limits round-trip
// exactly (a fractional rate included), are replaced as a whole by the next
// PutSettings, are kept apart from the strategy and from other
// organizations, and go back to zero when saved as zero.
func testSettingsTaskLimits(t *testing.T, s store.Store) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	got, err := s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, store.TaskLimits{}, got.TaskLimits, "no saved settings: every limit is the orchestrator's default")

	limits := store.TaskLimits{MaxConcurrentTasks: 7, TasksPerSecond: 2.5, Burst: 11}
	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: store.StrategyRoundRobin, TaskLimits: limits, UpdateTime: base}))
	got, err = s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, limits, got.TaskLimits)
	require.Equal(t, store.StrategyRoundRobin, got.SelectionStrategy, "the strategy is stored beside the limits")

	// The largest values the API accepts, and a rate below one per second.
	limits = store.TaskLimits{MaxConcurrentTasks: 100000, TasksPerSecond: 0.125, Burst: 100000}
	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: store.StrategyRoundRobin, TaskLimits: limits, UpdateTime: base.Add(time.Second)}))
	got, err = s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, limits, got.TaskLimits, "a later PutSettings replaces every limit")

	// One limit set, the others left to the defaults.
	limits = store.TaskLimits{TasksPerSecond: 3}
	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: store.StrategyLeastLoaded, TaskLimits: limits, UpdateTime: base.Add(2 * time.Second)}))
	got, err = s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, limits, got.TaskLimits)
	require.Equal(t, store.StrategyLeastLoaded, got.SelectionStrategy)

	otherGot, err := s.GetSettings(ctx, other)
	require.NoError(t, err)
	require.Equal(t, store.TaskLimits{}, otherGot.TaskLimits, "limits of one organization never leak into another")

	require.NoError(t, s.PutSettings(ctx, store.Settings{OrganizationID: org, SelectionStrategy: store.StrategyLeastLoaded, UpdateTime: base.Add(3 * time.Second)}))
	got, err = s.GetSettings(ctx, org)
	require.NoError(t, err)
	require.Equal(t, store.TaskLimits{}, got.TaskLimits, "saved as zero: back to the defaults")
}
