package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

type answer struct {
	resp *orchestratorv1.DelegateTaskResponse
	err  error
}

// startSlowTask starts a task whose answer streams in for about a second
// and returns once the upstream call is under way.
func startSlowTask(t *testing.T, s *stack, requestID string) (<-chan answer, string) {
	t.Helper()
	const key = "sk-ant-sim-scale-drain"
	s.register(t, "acme", "slow", key, "scale")
	s.sim.SetFault(key, anthropicsim.Fault{StreamDelay: 150 * time.Millisecond})
	done := make(chan answer, 1)
	req := quickTask("acme")
	req.RequestId = requestID
	go func() {
		resp, err := s.orchestrator.DelegateTask(testContext(t), req)
		done <- answer{resp, err}
	}()
	require.Eventually(t, func() bool { return s.sim.Stats(key).Requests == 1 }, 10*time.Second, time.Millisecond)
	return done, key
}

func TestShutdownLetsInFlightTasksFinishAndFlushesTheirRecords(t *testing.T) {
	s := startStack(t, stackOptions{})
	done, _ := startSlowTask(t, s, "req-drain")

	require.NoError(t, s.stopOrchestrator())
	a := <-done
	require.NoError(t, a.err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, a.resp.GetStatus(), "the task in flight was allowed to finish")

	// Serve returned only after the outbox had delivered everything: the
	// records are there the moment it is down.
	act, err := s.activity.GetActivity(testContext(t), &activityv1.GetActivityRequest{OrganizationId: "acme", ActivityId: a.resp.GetMetadata().GetActivityId()})
	require.NoError(t, err)
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED, act.GetActivity().GetStatus())
	usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
	require.NoError(t, err)
	require.Len(t, usage.GetRecords(), 1)
}

func TestShutdownCancelsTasksPastTheDrainAndRecordsThem(t *testing.T) {
	s := startStack(t, stackOptions{drainTimeout: 200 * time.Millisecond})
	done, _ := startSlowTask(t, s, "req-cut")

	require.NoError(t, s.stopOrchestrator())
	a := <-done
	require.Error(t, a.err, "the caller's call was cut")

	list, err := s.activity.ListActivities(testContext(t), &activityv1.ListActivitiesRequest{OrganizationId: "acme"})
	require.NoError(t, err)
	require.Len(t, list.GetActivities(), 1)
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED, list.GetActivities()[0].GetStatus(), "completed, not left RUNNING")
	usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
	require.NoError(t, err)
	require.Len(t, usage.GetRecords(), 1)
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_CANCELLED, usage.GetRecords()[0].GetOutcome(), "the cut attempt is recorded as cancelled")
}
