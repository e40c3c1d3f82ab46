package delegate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
)

func TestAnAbandonedRunIsRunAgainAsANewRun(t *testing.T) {
	tk := task()
	tk.RequestID = "req-died"
	h2 := newHarness(t, delegate.Config{}, threeAccounts...)
	resp, err := h2.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	// As if its orchestrator had died before completing it: the reaper
	// abandons the activity.
	h2.activity.reopen(resp.GetMetadata().GetActivityId())
	h2.activity.abandon(resp.GetMetadata().GetActivityId())
	again, err := h2.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.False(t, again.GetMetadata().GetReplayed(), "an abandoned run has no outcome to replay")
	require.Equal(t, "req-died", again.GetMetadata().GetRequestId(), "the caller's id")
	require.NotEqual(t, resp.GetMetadata().GetActivityId(), again.GetMetadata().GetActivityId(), "a new activity for the new run")
	require.Len(t, h2.exec.keysCalled(), 2)
	require.Equal(t, "req-died", h2.pool.records[0].GetRequestId())
	require.Equal(t, "req-died~run2", h2.pool.records[1].GetRequestId(), "the ledger tells the runs apart")

	third, err := h2.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.True(t, third.GetMetadata().GetReplayed(), "the second run's outcome is replayed")
	require.Equal(t, again.GetMetadata().GetActivityId(), third.GetMetadata().GetActivityId())
	require.Len(t, h2.exec.keysCalled(), 2)
}

func TestAnOutageBeforeAnyModelCallIsNotAFinalAnswer(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key"), FailWhenPoolUnavailable: true}, threeAccounts...)
	h.pool.selectErr = status.Error(codes.Unavailable, "connection refused")
	tk := task()
	tk.RequestID = "req-outage"
	_, err := h.runner.Run(context.Background(), tk)
	require.ErrorIs(t, err, delegate.ErrPoolUnavailable)
	require.Empty(t, h.exec.keysCalled())

	h.pool.mu.Lock()
	h.pool.selectErr = nil
	h.pool.mu.Unlock()
	resp, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), "the retry runs the task")
	require.False(t, resp.GetMetadata().GetReplayed())
	require.Len(t, h.exec.keysCalled(), 1)

	// A real attempt's outcome, even a failure, is final.
	h.exec.scripts["key-a"] = nil
	replayed, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.True(t, replayed.GetMetadata().GetReplayed())
}

func TestTheActivityCarriesTheTasksDeadline(t *testing.T) {
	h := newHarness(t, delegate.Config{MaxWait: 5 * time.Second, AttemptTimeout: time.Minute, SelectTimeout: time.Second}, threeAccounts...)
	before := time.Now()
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	dl := h.activity.get(resp.GetMetadata().GetActivityId()).GetDeadline().AsTime()
	// 5s of waiting and three attempts of (1m + 1s + 2s of backoff).
	require.WithinDuration(t, before.Add(5*time.Second+3*63*time.Second), dl, 2*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	resp, err = h.runner.Run(ctx, task())
	require.NoError(t, err)
	require.WithinDuration(t, want, h.activity.get(resp.GetMetadata().GetActivityId()).GetDeadline().AsTime(), time.Millisecond,
		"the caller's earlier deadline")
}

// A TrackStart that committed but whose answer was lost is retried and
// finds the activity it created: the task runs, instead of taking its own
// activity for another run's and answering Aborted.
func TestALostTrackStartAnswerIsRecognisedOnItsRetry(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.activity.loseStartAnswers = 1
	tk := task()
	tk.RequestID = "req-lost-answer"
	resp, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.False(t, resp.GetMetadata().GetReplayed())
	require.Len(t, h.exec.keysCalled(), 1)

	// Another Run of the same request_id (a new start token) while it is
	// RUNNING is another run's.
	h.activity.reopen(resp.GetMetadata().GetActivityId())
	_, err = h.runner.Run(context.Background(), tk)
	require.ErrorIs(t, err, delegate.ErrInProgress)
}

// A pool that is connected but answers Unavailable (its database is down)
// is not an absent pool: the task fails instead of running on the
// operator's key.
func TestAConnectedPoolsUnavailableIsNotAFallback(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key"), PoolConnected: func() bool { return true }}, threeAccounts...)
	h.pool.selectErr = status.Error(codes.Unavailable, "not ready: PostgreSQL at 127.0.0.1:5432 does not answer")
	_, err := h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrPoolUnavailable)
	require.Empty(t, h.exec.keysCalled())
}

// A full outbox refuses new tasks before they run, rather than running
// them and losing their records.
func TestAFullOutboxRefusesNewTasksBeforeTheyRun(t *testing.T) {
	h := newHarness(t, delegate.Config{OutboxMaxRecords: 1}, threeAccounts...)
	h.pool.recordErr = status.Error(codes.Unavailable, "pool down")
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, []string{"recording attempt 1"}, resp.GetMetadata().GetBookkeepingPending())

	_, err = h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrBookkeepingUnavailable)
	require.Len(t, h.exec.keysCalled(), 1, "the refused task made no model call")
}

// A TrackStart that committed and then failed (Activity died before it
// answered) leaves a RUNNING activity for a task that did not run. The
// caller's retry through the same process recognises the run as its own
// dead one: it ends it as rerunnable and runs the task as the next run,
// instead of answering Aborted until Activity abandons the first at its
// deadline.
func TestARetryEndsItsOwnDeadStartAndRuns(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.activity.failCommittedStarts = 1
	tk := task()
	tk.RequestID = "req-dead-start"
	_, err := h.runner.Run(context.Background(), tk)
	require.ErrorIs(t, err, delegate.ErrActivityUnavailable)
	require.Empty(t, h.exec.keysCalled(), "nothing ran")

	resp, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Len(t, h.exec.keysCalled(), 1, "the task ran once")
	first := h.activity.get(delegate.ActivityID(tk.OrganizationID, tk.RequestID))
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED, first.GetStatus(), "the dead run is ended, not left to be abandoned")
	require.True(t, first.GetMetadata().GetFields()["rerunnable"].GetBoolValue())
	require.NotEqual(t, first.GetId(), resp.GetMetadata().GetActivityId(), "the task ran as the next run")
}
